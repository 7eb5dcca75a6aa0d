package hsm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	u, err := ParseURI("pkcs11:token=my%20token;slot-id=7?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin")
	if err != nil {
		t.Fatalf("ParseURI = %v", err)
	}
	if u.Token != "my token" || u.Slot == nil || *u.Slot != 7 || u.ModulePath != DefaultModule || u.PINSource != "/run/pin" {
		t.Errorf("ParseURI = %+v", u)
	}
	for _, bad := range []string{
		"token=x",
		"pkcs11:token",
		"pkcs11:slot-id=x",
		"pkcs11:object=key",
		"pkcs11:token=x?pin-value=1234",
		"pkcs11:token=%zz",
		"pkcs11:token=x?foo=bar",
		"pkcs11:token=a;token=b",
		"pkcs11:token=x?pin-source=/a&pin-source=/b",
		"pkcs11:serial=",
		"pkcs11:token=a;pin-value:1234",
		"pkcs11:token=x?pin-value=12%G34",
		"pkcs11:slot-id=1234-5678",
	} {
		if _, err := ParseURI(bad); err == nil {
			t.Errorf("ParseURI(%q) = nil error, want one", bad)
		} else if strings.Contains(err.Error(), "1234") {
			t.Errorf("ParseURI(%q) error repeats the PIN: %v", bad, err)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=a;serial=b;slot-id=1?module-path=/x&pin-source=file:/y")
	f.Add("pkcs11:")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err == nil && !strings.HasPrefix(s, "pkcs11:") {
			t.Fatalf("ParseURI(%q) = %+v, want error", s, u)
		}
	})
}

func TestPINSource(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pin")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SIGNERD_TEST_PIN", "envpin")
	tests := []struct {
		src     PINSource
		want    string
		wantErr bool
	}{
		{PINSource{File: file}, "s3cret", false},
		{PINSource{Env: "SIGNERD_TEST_PIN"}, "envpin", false},
		{PINSource{File: empty}, "", true},
		{PINSource{Env: "SIGNERD_TEST_UNSET"}, "", true},
		{PINSource{}, "", true},
		{PINSource{File: file, Env: "SIGNERD_TEST_PIN"}, "", true},
		{PINSource{File: filepath.Join(dir, "missing")}, "", true},
		// A PIN where its source belongs: not a file here, not a variable name.
		{PINSource{File: "82639174"}, "", true},
		{PINSource{Env: "82639174"}, "", true},
		{PINSource{Env: "s3cret-pin"}, "", true},
	}
	for _, tc := range tests {
		got, err := tc.src.Read()
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%+v.Read() = %q, %v; want %q, error %v", tc.src, got, err, tc.want, tc.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "82639174")) {
			t.Errorf("%+v.Read() = %v: contains the PIN", tc.src, err)
		}
	}
}

// TestPINFileErrors: Read's errors name a PIN file given by an absolute path, which a config checked,
// and never one given by a relative path, which may be the PIN; both keep the os error's cause.
func TestPINFileErrors(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("blank", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file  string
		named bool
		is    error
	}{
		{filepath.Join(dir, "missing"), true, fs.ErrNotExist},
		{"missing", false, fs.ErrNotExist},
		{"82639174", false, fs.ErrNotExist},
		{filepath.Join(dir, "blank"), true, ErrNoPIN},
		{"blank", false, ErrNoPIN},
	} {
		_, err := PINSource{File: tc.file}.Read()
		switch {
		case !errors.Is(err, tc.is):
			t.Errorf("Read(%q) = %v, want %v", tc.file, err, tc.is)
		case strings.Contains(err.Error(), tc.file) != tc.named:
			t.Errorf("Read(%q) = %v, want the path named: %v", tc.file, err, tc.named)
		}
	}
}

func TestValidEnvName(t *testing.T) {
	for name, want := range map[string]bool{"PIN": true, "_": true, "signerd_pin_2": true, "_9": true,
		"": false, "9PIN": false, "82639174": false, "PIN-2": false, "PIN 2": false, "PÍN": false, "$PIN": false} {
		if got := ValidEnvName(name); got != want {
			t.Errorf("ValidEnvName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestConfigPrintsNoPIN: however a Config is printed, the PIN is not in it.
func TestConfigPrintsNoPIN(t *testing.T) {
	c := Config{Module: "/lib/p11.so", TokenLabel: "signerd", PIN: "s3cret-pin-4711", MaxSessions: 4}
	for _, format := range []string{"%v", "%+v", "%s", "%#v"} {
		out := fmt.Sprintf(format, c)
		if strings.Contains(out, c.PIN) || !strings.Contains(out, "signerd") {
			t.Errorf("Sprintf(%q, config) = %q, want the token and no PIN", format, out)
		}
		if out := fmt.Sprintf(format, &c); strings.Contains(out, c.PIN) {
			t.Errorf("Sprintf(%q, &config) = %q shows the PIN", format, out)
		}
	}
}
