package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
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
		{"CRLF line ends", strings.ReplaceAll(buf.String(), "\n", "\r\n")},
		{"last newline cut off", strings.TrimSuffix(buf.String(), "\n")},
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

type failingWriter struct{ writes int }

func (w *failingWriter) Write([]byte) (int, error) {
	w.writes++
	return 0, io.ErrShortWrite
}

// TestRecordNow: RecordNow's line is written out when it returns; after a write error it reports the
// error and records nothing more.
func TestRecordNow(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	l.Record(Event{Identity: "svc", Op: "verify", Outcome: OutcomeOK})
	if err := l.RecordNow(Event{Identity: "svc", Op: "sign", Outcome: OutcomeStarted}); err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(bytes.NewReader(buf.Bytes())); err != nil || n != 2 {
		t.Errorf("before Flush: Verify = %d, %v; want both lines written out", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	w := &failingWriter{}
	l = New(w)
	defer l.Close()
	if err := l.RecordNow(Event{Op: "sign"}); err == nil {
		t.Fatal("RecordNow to a failing writer = nil, want its error")
	}
	if err := l.RecordNow(Event{Op: "sign"}); err == nil || w.writes != 1 {
		t.Errorf("RecordNow after a write error = %v with %d writes, want the error and no new write", err, w.writes)
	}
}

// gatedWriter holds its first write until release is closed, and counts writes and lines.
type gatedWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	entered chan struct{}
	release chan struct{}
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	first := w.writes == 0
	w.writes++
	w.mu.Unlock()
	if first {
		close(w.entered)
		<-w.release
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestRecordNowSharesWrites: lines recorded with RecordNow while another line is being written out go
// out together in the next write, each caller returning only once its own line is written; the trail
// verifies with every line in order.
func TestRecordNowSharesWrites(t *testing.T) {
	w := &gatedWriter{entered: make(chan struct{}), release: make(chan struct{})}
	l := New(w)
	defer l.Close()
	first := make(chan error, 1)
	go func() { first <- l.RecordNow(Event{Identity: "a", Op: "sign", Outcome: OutcomeStarted}) }()
	<-w.entered // the first line is being written out, and the writer is held

	const waiting = 8
	var wg sync.WaitGroup
	errs := make(chan error, waiting)
	for i := range waiting {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.RecordNow(Event{Identity: fmt.Sprint("b", i), Op: "sign", Outcome: OutcomeStarted})
		}()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		l.mu.Lock()
		seq := l.seq
		l.mu.Unlock()
		if seq == waiting+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d lines recorded", seq)
		}
	}
	select {
	case err := <-errs:
		t.Fatalf("a RecordNow returned (%v) before its line was written out", err)
	default:
	}
	close(w.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if w.writes != 2 {
		t.Errorf("%d writes for %d lines recorded during the first, want 2", w.writes, waiting)
	}
	if n, err := Verify(bytes.NewReader(w.buf.Bytes())); err != nil || n != waiting+1 {
		t.Errorf("Verify = %d, %v; want %d lines", n, err, waiting+1)
	}
}

// TestOpenContinuesChain: a trail reopened after a restart continues its chain and sequence, so the
// whole file verifies; a trail whose last line cannot be continued is refused.
func TestOpenContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for run := range 3 {
		l, err := Open(path)
		if err != nil {
			t.Fatalf("run %d: Open = %v", run, err)
		}
		l.Record(Event{Identity: "svc", Op: "verify", Outcome: OutcomeOK})
		if err := l.RecordNow(Event{Identity: "svc", Op: "sign", Outcome: OutcomeStarted}); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(bytes.NewReader(b)); err != nil || n != 6 {
		t.Fatalf("Verify(three runs) = %d, %v; want 6 events in one chain", n, err)
	}
	if !strings.Contains(string(b), `"seq":6,`) {
		t.Errorf("trail %s: want sequence numbers continued to 6", b)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("trail mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	for name, tail := range map[string]string{
		"incomplete": `{"time":"2026-11-22T00:00:00Z","seq":7`,
		"not event":  "hello\n",
		"no hash":    `{"seq":7}` + "\n",
	} {
		p := filepath.Join(t.TempDir(), "audit.log")
		if err := os.WriteFile(p, append(bytes.Clone(b), tail...), 0o600); err != nil {
			t.Fatal(err)
		}
		if l, err := Open(p); err == nil {
			_ = l.Close()
			t.Errorf("Open(trail with a last line %s) = nil, want an error", name)
		}
	}
}

// TestInvalidUTF8Verifies: a trail whose events held invalid UTF-8 (written as U+FFFD) verifies as
// written, and the caller's event is left as it was.
func TestInvalidUTF8Verifies(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	claims := &Claims{Sub: "s\xff", Aud: []string{"a", "\xfe"}}
	l.Record(Event{Identity: "svc\xc3", Op: "sign_jwt", Outcome: OutcomeError, Reason: "bad input \xff", Claims: claims})
	l.Record(Event{Identity: "svc", Op: "sign", Outcome: OutcomeOK})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(bytes.NewReader(buf.Bytes())); n != 2 || err != nil {
		t.Errorf("Verify(trail with invalid UTF-8 in its events) = %d, %v; want 2, nil", n, err)
	}
	if !strings.Contains(buf.String(), "\"identity\":\"svc\uFFFD\"") {
		t.Errorf("trail = %s, want the invalid byte written as U+FFFD", buf.String())
	}
	if claims.Sub != "s\xff" || claims.Aud[1] != "\xfe" {
		t.Errorf("Record changed the caller's claims to %+v", claims)
	}
}

// appendJSONEvents are events of every shape: members empty and set, claims absent, empty and full,
// strings that need escaping.
func appendJSONEvents() []Event {
	at := time.Date(2026, 12, 2, 13, 4, 5, 600, time.UTC)
	return []Event{
		{},
		{Time: at, Seq: 7, Identity: "spiffe://x/svc", Op: "sign", Key: "k", Kid: "abc", Alg: "ES256", Input: "ff", Outcome: OutcomeOK, Prev: "p", Hash: "h"},
		{Time: at, Identity: "a\"b\\c<d>&e\n\t\x01\u2028é", Op: "sign_jwt", Claims: &Claims{}, Outcome: OutcomeError, Code: "InvalidArgument", Reason: "claims_json: <bad> & \"worse\""},
		{Time: at.Add(-time.Hour), Claims: &Claims{Aud: []string{"a", "<b>"}}},
		{Time: at, Claims: &Claims{Iss: "https://i", Sub: "u-1", Aud: []string{"x"}, Exp: -5, Jti: "j"}, Outcome: OutcomeDenied},
		{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("X", 3600)), Claims: &Claims{Exp: 1 << 40}},
		{Time: at, Identity: "a\xffb", Reason: "\xc3", Claims: &Claims{Aud: []string{"\xfe<"}}},
	}
}

// TestAppendJSONIsMarshal: the encoder record uses writes each event as json.Marshal does (invalid UTF-8
// aside), the form Verify rebuilds.
func TestAppendJSONIsMarshal(t *testing.T) {
	for _, e := range appendJSONEvents() {
		checkAppendJSON(t, e)
	}
}

func checkAppendJSON(t *testing.T, e Event) {
	t.Helper()
	got, gotErr := e.appendJSON(nil)
	want, err := json.Marshal(e)
	if err != nil {
		if gotErr == nil { // a time past year 9999, which json.Marshal refuses
			t.Errorf("appendJSON(%+v) = %s, nil error; json.Marshal refuses it: %v", e, got, err)
		}
		return
	}
	if gotErr != nil {
		t.Fatalf("appendJSON(%+v) = %v", e, gotErr)
	}
	// What Verify does: decode the line and marshal it again; it must come back as written.
	var back Event
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("appendJSON(%+v) = %s, not JSON: %v", e, got, err)
	}
	if again, _ := json.Marshal(back); string(again) != string(got) {
		t.Errorf("appendJSON(%+v) =\n%s\nwhich Verify rebuilds as\n%s", e, got, again)
	}
	// With valid UTF-8 throughout, it is json.Marshal's output itself.
	if validUTF8Event(e) && string(got) != string(want) {
		t.Errorf("appendJSON(%+v) =\n%s\nwant\n%s", e, got, want)
	}
}

// validUTF8Event reports whether every string of e is valid UTF-8.
func validUTF8Event(e Event) bool {
	strs := []string{e.Identity, e.Op, e.Key, e.Kid, e.Alg, e.Input, e.Outcome, e.Code, e.Reason, e.Prev, e.Hash}
	if c := e.Claims; c != nil {
		strs = append(append(strs, c.Iss, c.Sub, c.Jti), c.Aud...)
	}
	for _, s := range strs {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// FuzzAppendJSON: on arbitrary strings and numbers, appendJSON writes lines Verify rebuilds as they are,
// and json.Marshal's own bytes where the strings are valid UTF-8.
func FuzzAppendJSON(f *testing.F) {
	for _, e := range appendJSONEvents() {
		var iss, aud string
		var exp int64
		if e.Claims != nil {
			iss, exp = e.Claims.Iss, e.Claims.Exp
			if len(e.Claims.Aud) > 0 {
				aud = e.Claims.Aud[0]
			}
		}
		f.Add(e.Identity, e.Reason, iss, aud, e.Seq, exp, e.Claims != nil, e.Time.UnixNano())
	}
	f.Fuzz(func(t *testing.T, identity, reason, iss, aud string, seq uint64, exp int64, claims bool, at int64) {
		e := Event{Time: time.Unix(0, at).UTC(), Seq: seq, Identity: identity, Op: "sign", Reason: reason, Outcome: OutcomeOK}
		if claims {
			e.Claims = &Claims{Iss: iss, Exp: exp}
			if aud != "" {
				e.Claims.Aud = []string{aud, iss}
			}
		}
		checkAppendJSON(t, e)
	})
}

// Close may be called from several goroutines at once (a stop and a failed start, say).
func TestConcurrentClose(t *testing.T) {
	for range 1000 {
		l := New(io.Discard)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { _ = l.Close() })
		}
		wg.Wait()
	}
}

// An event recorded after Close is not lost in silence: Err and RecordNow report it.
func TestRecordAfterClose(t *testing.T) {
	l := New(io.Discard)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Op: "late"})
	if err := l.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err after a Record after Close = %v, want %v", err, ErrClosed)
	}
	if err := l.RecordNow(Event{Op: "late"}); !errors.Is(err, ErrClosed) {
		t.Errorf("RecordNow after Close = %v, want %v", err, ErrClosed)
	}
}
