package hsm

import (
	"errors"
	"fmt"
	"slices"

	"github.com/miekg/pkcs11"
	"github.com/thales-e-security/pool"
)

// Sentinel errors. Callers test them with errors.Is; consumers that must not import this package test the
// methods of *Error instead (InvalidInput, Busy, Unavailable, Missing).
var (
	// ErrInvalidInput means the request could never be signed with this key (wrong digest length,
	// hash not allowed, wrong options). It is detected before the token is called.
	ErrInvalidInput = errors.New("hsm: invalid input")
	// ErrBusy means no session became free within the pool wait timeout, the token is out of
	// sessions or memory for now, or another process on this machine held the token's local lock too
	// long for a read (a key change under way).
	ErrBusy = errors.New("hsm: token busy")
	// ErrUnavailable means the token, its sessions or its login are gone.
	ErrUnavailable = errors.New("hsm: token unavailable")
	// ErrNotFound means no object with the given ID exists.
	ErrNotFound = errors.New("hsm: not found")
	// ErrKeyCheck means a key failed its load-time check (attributes, public key, self test).
	ErrKeyCheck = errors.New("hsm: key check failed")
	// ErrClosed means the Token was closed.
	ErrClosed = errors.New("hsm: token closed")
)

// Error is an error from an HSM operation. Its kind is one of the sentinels above (or nil for another
// token failure); it carries the operation for logs. It never holds a PIN.
type Error struct {
	Op   string
	Kind error
	Err  error
}

func (e *Error) Error() string {
	switch {
	case e.Kind != nil && e.Err != nil:
		return fmt.Sprintf("%s: %v: %v", e.Op, e.Kind, e.Err)
	case e.Kind != nil:
		return fmt.Sprintf("%s: %v", e.Op, e.Kind)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Err)
}

// Unwrap lets errors.Is find both the kind and the underlying error.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// InvalidInput reports whether the error was caused by the caller's input.
func (e *Error) InvalidInput() bool { return e.Kind == ErrInvalidInput }

// Busy reports whether the operation gave up waiting for a session.
func (e *Error) Busy() bool { return e.Kind == ErrBusy }

// Unavailable reports whether the token could not be used at all.
func (e *Error) Unavailable() bool { return e.Kind == ErrUnavailable || e.Kind == ErrClosed }

// Missing reports whether the object is not in the token: for a signer, that its key pair was destroyed
// there after the key was found.
func (e *Error) Missing() bool { return e.Kind == ErrNotFound }

func invalidInput(op, format string, args ...any) error {
	return &Error{Op: op, Kind: ErrInvalidInput, Err: fmt.Errorf(format, args...)}
}

// classify turns an error from crypto11 or miekg/pkcs11 into an *Error of the right kind.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	kind := error(nil)
	switch {
	case hasCode(err, fatalCodes...):
		kind = ErrUnavailable
	case isPoolTimeout(err), hasCode(err, exhaustedCodes...):
		kind = ErrBusy
	}
	return &Error{Op: op, Kind: kind, Err: err}
}

// hasCode reports whether err carries one of the PKCS#11 return values codes.
func hasCode(err error, codes ...pkcs11.Error) bool {
	var code pkcs11.Error
	return errors.As(err, &code) && slices.Contains(codes, code)
}

// The return values that decide what signerd does next, by what they mean.
var (
	// fatalCodes: the session, the login or the token is gone (pkcs11-notes §4.2). CKR_GENERAL_ERROR
	// is deliberately absent: SoftHSM also returns it for bad PSS input.
	fatalCodes = []pkcs11.Error{pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED}
	// exhaustedCodes: the token (or the host) is out of sessions or memory for now, a real HSM's session
	// limit reached by crypto11's pool, the raw pool and the keeper together, say: busy, not broken.
	exhaustedCodes = []pkcs11.Error{pkcs11.CKR_SESSION_COUNT, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_HOST_MEMORY}
	// deadSessionCodes: the session handle must be dropped.
	deadSessionCodes = []pkcs11.Error{pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED}
	// goneObjectCodes: a handle names no object (any more).
	goneObjectCodes = []pkcs11.Error{pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID}
	// unsupportedAttributeCodes: the token refuses CKA_ALLOWED_MECHANISMS in a template.
	unsupportedAttributeCodes = []pkcs11.Error{pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_TEMPLATE_INCONSISTENT}
	// copyRefusedCodes: the token will not copy this key (CKA_COPYABLE false) or make session copies at
	// all; other errors of C_CopyObject are the session's or the token's trouble.
	copyRefusedCodes = []pkcs11.Error{pkcs11.CKR_ACTION_PROHIBITED, pkcs11.CKR_FUNCTION_NOT_SUPPORTED,
		pkcs11.CKR_ATTRIBUTE_READ_ONLY, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID,
		pkcs11.CKR_TEMPLATE_INCONSISTENT}
)

// isPoolTimeout recognises a session pool timeout, crypto11's or ours.
func isPoolTimeout(err error) bool {
	return errors.Is(err, pool.ErrTimeout)
}
