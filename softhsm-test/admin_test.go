package softhsmtest_test

import (
	"strings"
	"testing"

	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

// TestTokenInitAndList: the signerd binary initialises a token with PINs from the environment, and
// token list shows it beside the one that was there. (Its usage errors, refused before any token is
// opened, are cmd/signerd's TestUsageErrors and TestForeignFlagsRefused.)
func TestTokenInitAndList(t *testing.T) {
	tok := softhsmtest.NewToken(t, "e2e")
	out, err := signerd(t, []string{"SO_PIN=" + tok.SOPIN, "USER_PIN=" + tok.PIN}, "token", "init", "--module", tok.Module,
		"--label", "second", "--so-pin-env", "SO_PIN", "--pin-env", "USER_PIN")
	if err != nil || !strings.Contains(out, `initialised token "second"`) {
		t.Fatalf("signerd token init = %v\n%s", err, out)
	}
	out, err = signerd(t, nil, "token", "list", "--module", tok.Module)
	if err != nil || !strings.Contains(out, "second") || !strings.Contains(out, "e2e") {
		t.Errorf("signerd token list = %v\n%s; want tokens e2e and second", err, out)
	}
}
