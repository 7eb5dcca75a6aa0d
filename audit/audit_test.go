package audit

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestChainVerifies(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	for i, op := range []string{"sign", "verify", "sign_jwt"} {
		l.Record(Event{Identity: "svc", Op: op, Key: "k", Outcome: OutcomeOK, Input: InputHash([]byte{byte(i)})})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	n, err := Verify(bytes.NewReader(buf.Bytes()))
	if err != nil || n != 3 {
		t.Fatalf("Verify = %d, %v; want 3, nil", n, err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(buf.String(), "\n"), "\n")
	tests := []struct {
		name  string
		trail string
	}{
		{"line removed", lines[0] + lines[2]},
		{"lines swapped", lines[1] + lines[0] + lines[2]},
		{"line edited", lines[0] + strings.Replace(lines[1], `"identity":"svc"`, `"identity":"evil"`, 1) + lines[2]},
		{"garbage", lines[0] + "{not json\n"},
	}
	for _, tc := range tests {
		if _, err := Verify(strings.NewReader(tc.trail)); err == nil {
			t.Errorf("Verify(%s) = nil, want an error", tc.name)
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	l := New(io.Discard)
	defer l.Close()
	e := Event{Identity: "spiffe://example.org/svc", Op: "sign", Key: "k", Kid: "3EThIWAETIS3-K4-d_jtKj-qKSB4Weaio2JXpdONIGo",
		Alg: "ES256", Input: InputHash([]byte("m")), Outcome: OutcomeOK}
	b.ReportAllocs()
	for b.Loop() {
		l.Record(e)
	}
}
