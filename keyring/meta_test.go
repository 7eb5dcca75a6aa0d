package keyring

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeMeta feeds decodeMeta arbitrary records, as a token written by another (or a broken)
// daemon could hold. A record it accepts must survive a write and a read unchanged, and the lifecycle
// derived from it must stay coherent at any instant: at most one active version, a retired version's
// expiry no earlier than its retirement, and the next transition after now.
func FuzzDecodeMeta(f *testing.F) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ts := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339Nano) }
	version := func(n int, id string, activate time.Duration, extra string) string {
		return fmt.Sprintf(`{"n":%d,"id":%q,"kid":"k%d","created":%q,"activate_at":%q%s}`, n, id, n, ts(0), ts(activate), extra)
	}
	for _, vs := range []string{
		``,
		version(1, "01", 0, ""),
		version(1, "01", 0, "") + "," + version(2, "02", time.Hour, ""),
		version(1, "01", 0, "") + "," + version(2, "02", time.Hour, fmt.Sprintf(`,"revoked_at":%q`, ts(30*time.Minute))),
		version(1, "01", 0, fmt.Sprintf(`,"destroyed_at":%q`, ts(time.Hour))) + "," + version(2, "02", -time.Hour, ""),
		version(1, "01", 0, "") + "," + version(2, "01", 0, ""),
		version(2, "01", 0, ""),
	} {
		for _, settings := range []string{
			`"prepublish":"10m0s","grace":"24h0m0s"`,
			`"prepublish":"0s","grace":"0s","rotation_period":"720h0m0s","keep_retired":true`,
			`"prepublish":"-1s","grace":"1h"`,
		} {
			f.Add("k", fmt.Sprintf(`{"format":1,"name":"k","alg":"ES256","revision":3,%s,"versions":[%s]}`, settings, vs))
		}
	}
	f.Add("r", `{"format":1,"name":"r","alg":"RS256","bits":1024,"revision":1,"prepublish":"1m","grace":"1m","versions":[]}`)
	f.Add("k", `{"format":2,"name":"k","alg":"ES256"}`)
	f.Add("K", `{"format":1,"name":"K","alg":"none"}`)
	f.Add("k", `{"format":1,"name":"k","alg":"ES256","grace":"9223372036854775807ns","versions":[{"n":1,"id":"zz"}]}`)
	f.Add("", `null`)
	f.Fuzz(func(t *testing.T, label, record string) {
		m, err := decodeMeta(label, []byte(record))
		if err != nil {
			return
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("decodeMeta(%s) accepted a record it cannot write: %v", record, err)
		}
		again, err := decodeMeta(m.Name, b)
		if err != nil {
			t.Fatalf("decodeMeta(%s) accepted a record whose rewrite %s it refuses: %v", record, b, err)
		}
		if b2, _ := json.Marshal(again); string(b2) != string(b) {
			t.Fatalf("record %s changed on a write and a read: %s then %s", record, b, b2)
		}
		instants := []time.Time{{}, t0, t0.Add(time.Hour), time.Unix(1<<40, 0)}
		for _, v := range m.Versions {
			instants = append(instants, v.ActivateAt, v.ActivateAt.Add(-time.Nanosecond), v.ActivateAt.Add(m.Grace.D()))
		}
		for _, now := range instants {
			active := 0
			for i := range m.Versions {
				tl := m.StateAt(i, now)
				if tl.State == Active {
					active++
				}
				if tl.State == Retired && tl.ExpiresAt.Before(tl.RetiredAt) {
					t.Fatalf("record %s: version %d at %v retired at %v expires earlier, at %v", record, i+1, now, tl.RetiredAt, tl.ExpiresAt)
				}
			}
			if active > 1 {
				t.Fatalf("record %s: %d active versions at %v", record, active, now)
			}
			if next := m.nextTransition(now); !next.IsZero() && !next.After(now) {
				t.Fatalf("record %s: next transition %v is not after %v", record, next, now)
			}
		}
	})
}

// TestDecodeMetaLabel: a record is its key's only under the key's name; one that another name's object
// holds is refused, naming that object, rather than taken for the key it says.
func TestDecodeMetaLabel(t *testing.T) {
	rec := []byte(`{"format":1,"name":"k","alg":"ES256","revision":1,"prepublish":"1m","grace":"1m","versions":[]}`)
	if _, err := decodeMeta("k", rec); err != nil {
		t.Fatalf("decodeMeta(k) = %v", err)
	}
	if _, err := decodeMeta("j", rec); err == nil || !strings.Contains(err.Error(), `record "j" holds key "k"`) {
		t.Errorf("decodeMeta(j) of key k's record = %v, want a refusal naming record j", err)
	}
}
