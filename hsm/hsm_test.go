package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/signerd/signerd/hsm"
	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

func openToken(t *testing.T) (*hsm.Token, *softhsmtest.Token) {
	t.Helper()
	tok := softhsmtest.NewToken(t, "hsm-test")
	tk, err := hsm.Open(hsm.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN,
		MaxSessions: 4, PoolWaitTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = tk.Close() })
	return tk, tok
}

var specs = []struct {
	name string
	spec hsm.KeySpec
	opts crypto.SignerOpts
}{
	{"rsa-pkcs1", hsm.KeySpec{Type: hsm.RSA, Bits: 2048}, crypto.SHA256},
	{"rsa-pss", hsm.KeySpec{Type: hsm.RSA, Bits: 2048, PSS: true}, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}},
	{"p256", hsm.KeySpec{Type: hsm.ECDSA, Curve: elliptic.P256()}, crypto.SHA256},
	{"p384", hsm.KeySpec{Type: hsm.ECDSA, Curve: elliptic.P384()}, crypto.SHA384},
	{"p521", hsm.KeySpec{Type: hsm.ECDSA, Curve: elliptic.P521()}, crypto.SHA512},
	{"ed25519", hsm.KeySpec{Type: hsm.Ed25519}, crypto.Hash(0)},
}

func input(opts crypto.SignerOpts) []byte {
	msg := []byte("hello, token")
	switch opts.HashFunc() {
	case crypto.SHA256:
		d := sha256.Sum256(msg)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(msg)
		return d[:]
	}
	return msg
}

func verify(t *testing.T, pub crypto.PublicKey, opts crypto.SignerOpts, in, sig []byte) {
	t.Helper()
	var err error
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(k, pss.Hash, in, sig, &rsa.PSSOptions{SaltLength: pss.Hash.Size()})
		} else {
			err = rsa.VerifyPKCS1v15(k, opts.HashFunc(), in, sig)
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, in, sig) {
			err = errors.New("ecdsa: bad signature")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, in, sig) {
			err = errors.New("ed25519: bad signature")
		}
	}
	if err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
}

func TestGenerateFindSign(t *testing.T) {
	tk, _ := openToken(t)
	for _, tc := range specs {
		t.Run(tc.name, func(t *testing.T) {
			id, s, err := tk.Generate(tc.spec, "test-"+tc.name)
			if err != nil {
				t.Fatalf("Generate(%v) = %v", tc.spec, err)
			}
			if len(id) != hsm.IDLen {
				t.Errorf("len(id) = %d, want %d", len(id), hsm.IDLen)
			}
			in := input(tc.opts)
			sig, err := s.Sign(nil, in, tc.opts)
			if err != nil {
				t.Fatalf("Sign = %v", err)
			}
			verify(t, s.Public(), tc.opts, in, sig)

			again, err := tk.Find(tc.spec, id)
			if err != nil {
				t.Fatalf("Find(%x) = %v", id, err)
			}
			sig, err = again.Sign(nil, in, tc.opts)
			if err != nil {
				t.Fatalf("Sign after Find = %v", err)
			}
			verify(t, s.Public(), tc.opts, in, sig)

			// A spec that does not match the key is refused at load.
			wrong := hsm.KeySpec{Type: hsm.ECDSA, Curve: elliptic.P256()}
			if tc.spec.Type == hsm.ECDSA {
				wrong = hsm.KeySpec{Type: hsm.RSA, Bits: 2048}
			}
			if _, err := tk.Find(wrong, id); !errors.Is(err, hsm.ErrKeyCheck) {
				t.Errorf("Find(wrong spec) = %v, want ErrKeyCheck", err)
			}

			if err := tk.Destroy(id); err != nil {
				t.Fatalf("Destroy = %v", err)
			}
			if _, err := tk.Find(tc.spec, id); !errors.Is(err, hsm.ErrNotFound) {
				t.Errorf("Find after Destroy = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestSignRejectsBadInput(t *testing.T) {
	tk, _ := openToken(t)
	keys := map[string]crypto.Signer{}
	for _, tc := range specs {
		if tc.name == "p384" || tc.name == "p521" {
			continue
		}
		_, s, err := tk.Generate(tc.spec, tc.name)
		if err != nil {
			t.Fatalf("Generate(%v) = %v", tc.spec, err)
		}
		keys[tc.name] = s
	}
	d256 := sha256.Sum256([]byte("x"))
	tests := []struct {
		name   string
		key    string
		digest []byte
		opts   crypto.SignerOpts
	}{
		{"short digest", "p256", d256[:20], crypto.SHA256},
		{"long digest", "rsa-pkcs1", append(d256[:], 0), crypto.SHA256},
		{"sha1 not allowed", "rsa-pkcs1", d256[:20], crypto.SHA1},
		{"sha3 not allowed", "p256", d256[:], crypto.SHA3_256},
		{"no hash for rsa", "rsa-pkcs1", d256[:], crypto.Hash(0)},
		{"pss on pkcs1 key", "rsa-pkcs1", d256[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}},
		{"pkcs1 on pss key", "rsa-pss", d256[:], crypto.SHA256},
		{"pss auto salt", "rsa-pss", d256[:], &rsa.PSSOptions{Hash: crypto.SHA256}},
		{"pss salt 20", "rsa-pss", d256[:], &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256}},
		{"ed25519 prehash", "ed25519", d256[:], crypto.SHA256},
		{"ed25519 context", "ed25519", []byte("m"), &ed25519.Options{Context: "ctx"}},
		{"nil opts", "p256", d256[:], nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := keys[tc.key].Sign(nil, tc.digest, tc.opts)
			if !errors.Is(err, hsm.ErrInvalidInput) {
				t.Fatalf("Sign(%s) = %v, want ErrInvalidInput", tc.name, err)
			}
			var he interface{ InvalidInput() bool }
			if !errors.As(err, &he) || !he.InvalidInput() {
				t.Errorf("Sign(%s) error %v does not report InvalidInput()", tc.name, err)
			}
		})
	}
	// The PSS salt given as the hash length is the same as PSSSaltLengthEqualsHash.
	sig, err := keys["rsa-pss"].Sign(nil, d256[:], &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256})
	if err != nil {
		t.Fatalf("Sign(PSS salt 32) = %v", err)
	}
	verify(t, keys["rsa-pss"].Public(), &rsa.PSSOptions{Hash: crypto.SHA256}, d256[:], sig)
}

func TestRecords(t *testing.T) {
	tk, _ := openToken(t)
	if err := tk.PutRecord("a", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := tk.PutRecord("b", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := tk.PutRecord("a", []byte("uno")); err != nil {
		t.Fatal(err)
	}
	recs, err := tk.Records("")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range recs {
		got[r.Name] = string(r.Value)
	}
	if len(got) != 2 || got["a"] != "uno" || got["b"] != "two" {
		t.Errorf("Records() = %v, want a=uno b=two", got)
	}
}

func TestOpenErrors(t *testing.T) {
	tok := softhsmtest.NewToken(t, "open-errors")
	base := hsm.Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, MaxSessions: 4, PoolWaitTimeout: time.Second}
	tests := []struct {
		name string
		edit func(*hsm.Config)
		want string
	}{
		{"wrong pin", func(c *hsm.Config) { c.PIN = "wrong-pin-123456" }, "wrong PIN"},
		{"unknown token", func(c *hsm.Config) { c.TokenLabel = "nope" }, `label "nope"`},
		{"no selector", func(c *hsm.Config) { c.TokenLabel = "" }, "exactly one of"},
		{"missing module", func(c *hsm.Config) { c.Module = "/nonexistent/lib.so" }, "/nonexistent/lib.so"},
		{"one session", func(c *hsm.Config) { c.MaxSessions = 1 }, "max sessions"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			tk, err := hsm.Open(cfg)
			if err == nil {
				_ = tk.Close()
				t.Fatalf("Open(%s) = nil error, want one containing %q", tc.name, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%s) = %q, want it to contain %q", tc.name, err, tc.want)
			}
			// A sealed daemon waits for another PIN after a wrong one, and only then.
			if wrong := errors.Is(err, hsm.ErrWrongPIN); wrong != (tc.name == "wrong pin") {
				t.Errorf("Open(%s): errors.Is(err, ErrWrongPIN) = %v", tc.name, wrong)
			}
			if strings.Contains(err.Error(), cfg.PIN) {
				t.Errorf("Open(%s) error contains the PIN: %q", tc.name, err)
			}
		})
	}
	// The right configuration still opens after all those failures.
	tk, err := hsm.Open(base)
	if err != nil {
		t.Fatalf("Open(good) after failures = %v", err)
	}
	if err := tk.Ping(); err != nil {
		t.Errorf("Ping = %v", err)
	}
	if err := tk.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := tk.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := tk.Ping(); !errors.Is(err, hsm.ErrClosed) {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
}

func TestListAndInitToken(t *testing.T) {
	tok := softhsmtest.NewToken(t, "listed")
	serial, err := hsm.InitToken(tok.Module, "second", "so-pin-1234", "user-pin-1234")
	if err != nil {
		t.Fatalf("InitToken = %v", err)
	}
	if _, err := hsm.InitToken(tok.Module, "second", "so-pin-1234", "user-pin-1234"); err == nil {
		t.Error("InitToken(duplicate label) = nil, want error")
	}
	slots, err := hsm.ListSlots(tok.Module)
	if err != nil {
		t.Fatalf("ListSlots = %v", err)
	}
	found := map[string]hsm.SlotInfo{}
	for _, s := range slots {
		if s.Initialized {
			found[s.Label] = s
		}
	}
	if len(found) != 2 || found["second"].Serial != serial {
		t.Fatalf("ListSlots initialised tokens = %v, want listed and second (serial %s)", found, serial)
	}
	for _, tc := range specs {
		if !found["listed"].Supports(tc.spec) {
			t.Errorf("Supports(%v) = false, want true on SoftHSM2", tc.spec)
		}
	}
	if found["listed"].Supports(hsm.KeySpec{Type: hsm.RSA, Bits: 1024}) {
		t.Error("Supports(RSA-1024) = true, want false")
	}
	tk, err := hsm.Open(hsm.Config{Module: tok.Module, TokenSerial: serial, PIN: "user-pin-1234", MaxSessions: 2, PoolWaitTimeout: time.Second})
	if err != nil {
		t.Fatalf("Open(new token by serial) = %v", err)
	}
	if tk.Label() != "second" {
		t.Errorf("Label() = %q, want second", tk.Label())
	}
	_ = tk.Close()
}
