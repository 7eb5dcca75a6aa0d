package hsm

import (
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
)

// TestClassify: a token out of sessions or memory is busy (retry), a gone session or token unavailable
// (reconnect), and other return values keep no kind.
func TestClassify(t *testing.T) {
	for code, want := range map[pkcs11.Error]error{
		pkcs11.CKR_SESSION_COUNT: ErrBusy, pkcs11.CKR_DEVICE_MEMORY: ErrBusy, pkcs11.CKR_HOST_MEMORY: ErrBusy,
		pkcs11.CKR_SESSION_HANDLE_INVALID: ErrUnavailable, pkcs11.CKR_DEVICE_REMOVED: ErrUnavailable,
		pkcs11.CKR_GENERAL_ERROR: nil, pkcs11.CKR_DATA_LEN_RANGE: nil,
	} {
		var e *Error
		if err := classify("sign", fmt.Errorf("sign: %w", code)); !errors.As(err, &e) || e.Kind != want {
			t.Errorf("classify(%v) = %v, want kind %v", code, err, want)
		}
	}
}
