// Package hsm is signerd's only door to PKCS#11. It opens a module and a token, logs in, generates key
// pairs inside the token, finds them by CKA_ID, checks them, and hands them out as crypto.Signer values.
// It also stores signerd's key metadata as CKO_DATA objects in the same token, so that the token is the
// single source of truth for every daemon that uses it.
//
// RSA and ECDSA go through crypto11. Ed25519 (CKM_EDDSA, which crypto11 lacks), data objects, attribute
// checks and token administration use miekg/pkcs11 directly, on a second handle to the module that crypto11
// has already initialised (pkcs11-notes §1.6): it shares crypto11's login and never calls C_Initialize or
// C_Finalize itself.
//
// Keys sign through session copies of their private keys, made inside the token when a key is loaded
// (see Token.sessionCopy): the key material never leaves the token, and SoftHSM signs with a copy in a
// third less CPU than with the token object. Config.NoSessionCopies turns this off.
package hsm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	//lint:ignore SA1019 the project pins github.com/ThalesGroup/crypto11 v1.6.x by decision; its successor module path changes nothing we use.
	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// Token is an open, logged-in PKCS#11 token. It is safe for concurrent use. Close it once done; Close is
// idempotent.
//
// After the token was reset, removed or logged out (an HSM restart), every call fails until Reconnect
// opens the module again and logs in; the signers handed out before keep working after it, since each
// finds its key again on first use.
type Token struct {
	cfg Config // kept for Reconnect, PIN included (crypto11 keeps it too)
	// local serialises object-store work with other processes on this machine.
	local *localLock
	// mechs caches which signing mechanisms the token supports, probed once at Open.
	mechs map[uint]pkcs11.MechanismInfo

	// mu is held for reading while the connection below is in use, for writing while Reconnect or
	// Close replace or release it.
	mu   sync.RWMutex
	c11  *crypto11.Context
	p11  *pkcs11.Ctx
	slot uint
	info pkcs11.TokenInfo
	pool *sessionPool
	// keeper is a read-only session held for the whole connection, created unless
	// Config.NoSessionCopies. It owns the session copies of keys (see sessionCopy), which the token
	// erases when it closes; being read-only, it can create and destroy nothing but session objects.
	// copyMu serialises its use.
	keeper    pkcs11.SessionHandle
	hasKeeper bool
	copyMu    sync.Mutex
	lastSweep time.Time // when dropOrphanCopies last looked, guarded by copyMu
	connected bool
	closed    bool
	closeErr  error
	// gen counts connections; a signer whose key was found under an older one finds it again.
	gen atomic.Uint64
}

// String describes the token for logs with its configuration, PIN left out: fmt cannot call
// Config.String on the unexported field, and would print the PIN for %v or %+v of a Token.
func (t *Token) String() string { return "hsm.Token{" + t.cfg.String() + "}" }

// GoString is String, for %#v.
func (t *Token) GoString() string { return t.String() }

// Open loads the module, selects the token and logs in. The error names what failed (module, token,
// login) and never contains the PIN.
func Open(cfg Config) (*Token, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("hsm: config: %w", err)
	}
	t := &Token{cfg: cfg}
	if cfg.Exclusive == nil {
		path, err := lockFile(cfg)
		if err != nil {
			return nil, err
		}
		if t.local, err = openLocalLock(path); err != nil {
			return nil, err
		}
	}
	if err := t.local.write(t.connectLocked); err != nil {
		t.local.close()
		return nil, err
	}
	mechs, err := probeMechanismInfo(t.p11, t.slot)
	if err != nil {
		_ = t.Close()
		return nil, classify("probe the token's mechanisms", err)
	}
	t.mechs = mechs
	return t, nil
}

// connectLocked opens crypto11 and the raw handle, logs in and selects the slot. The caller holds the
// local lock exclusively and mu for writing (or owns t alone): initialising the module writes the
// token's generation file, and login and slot listing read the token's files, so none of it may overlap
// another local process's object-store work (seen here as a token that "cannot be found" while other
// processes write).
func (t *Token) connectLocked() error {
	cfg := t.cfg
	c11cfg := &crypto11.Config{
		Path:            cfg.Module,
		TokenLabel:      cfg.TokenLabel,
		TokenSerial:     cfg.TokenSerial,
		Pin:             cfg.PIN,
		MaxSessions:     cfg.MaxSessions,
		PoolWaitTimeout: cfg.PoolWaitTimeout,
	}
	if cfg.Slot != nil {
		n := int(*cfg.Slot)
		c11cfg.SlotNumber = &n
	}
	c11, err := crypto11.Configure(c11cfg)
	if err != nil {
		return describeOpenError(cfg, err)
	}
	// The module is initialised now; a second dlopen handle shares its state and its login.
	p11 := pkcs11.New(cfg.Module)
	if p11 == nil {
		_ = c11.Close()
		return fmt.Errorf("hsm: open module %s a second time: failed", cfg.Module)
	}
	t.c11, t.p11 = c11, p11
	if err := t.selectSlot(cfg); err != nil {
		t.disconnectLocked()
		return err
	}
	if !cfg.NoSessionCopies {
		if t.keeper, err = p11.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION); err != nil {
			t.disconnectLocked()
			return fmt.Errorf("hsm: open a session: %w", err)
		}
		t.hasKeeper = true
	}
	t.pool = newSessionPool(p11, t.slot, cfg.MaxSessions, cfg.PoolWaitTimeout)
	t.connected = true
	t.gen.Add(1)
	return nil
}

// disconnectLocked releases the connection. crypto11 finalises the module when its last Context closes,
// so the raw handle goes last and only unloads its dlopen reference. The caller holds the local lock
// exclusively and mu for writing.
func (t *Token) disconnectLocked() {
	if t.pool != nil {
		t.pool.close()
		t.pool = nil
	}
	// crypto11's Close waits for its signs in flight, which may be using the session copies: they go
	// after it, with the keeper session (if finalising the module has not closed it already).
	t.closeErr = t.c11.Close()
	if t.hasKeeper {
		_ = t.p11.CloseSession(t.keeper)
		t.hasKeeper = false
	}
	t.p11.Destroy()
	t.connected = false
}

// replace runs f, which replaces or releases the connection, with every other use of the token shut
// out. Locks are always taken in the same order, the local lock before mu: object-store work takes the
// local lock and then, call by call, mu (a change under Exclusive holds the local lock across many
// calls), while signing takes mu alone. So replace waits for changes and reads in progress, then for
// signs in flight.
func (t *Token) replace(f func()) {
	t.local.exclusive(func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		f()
	})
}

// Reconnect drops the connection (sessions, login, module initialisation) and makes a new one, waiting
// for operations in flight. The daemon calls it when Ping fails; signers re-find their keys on next use.
func (t *Token) Reconnect() error {
	var err error
	t.replace(func() {
		if t.closed {
			err = &Error{Op: "reconnect", Kind: ErrClosed}
			return
		}
		if t.connected {
			t.disconnectLocked()
		}
		if cerr := t.connectLocked(); cerr != nil {
			err = &Error{Op: "reconnect", Kind: ErrUnavailable, Err: cerr}
		}
	})
	return err
}

// with runs f on a raw session of the current connection.
func (t *Token) with(op string, f func(pkcs11.SessionHandle) error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if err := t.usable(op); err != nil {
		return err
	}
	return t.pool.with(op, f)
}

// usable says why the connection cannot be used (closed, or not connected), if it cannot. The caller
// holds mu.
func (t *Token) usable(op string) error {
	switch {
	case t.closed:
		return &Error{Op: op, Kind: ErrClosed}
	case !t.connected:
		return &Error{Op: op, Kind: ErrUnavailable, Err: errors.New("not connected")}
	}
	return nil
}

// context returns the current crypto11 context and connection generation. Since it takes mu, it also
// waits for a Reconnect or Close under way.
func (t *Token) context() (*crypto11.Context, uint64, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if err := t.usable("hsm"); err != nil {
		return nil, 0, err
	}
	return t.c11, t.gen.Load(), nil
}

// describeOpenError turns crypto11's Configure errors into messages that name the failing part.
func describeOpenError(cfg Config, err error) error {
	var code pkcs11.Error
	if errors.As(err, &code) {
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_INVALID:
			return fmt.Errorf("hsm: login to token %s: %w (%v)", selector(cfg), ErrWrongPIN, code)
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("hsm: login to token %s: PIN locked (%v)", selector(cfg), code)
		}
	}
	// crypto11's not-found error is unexported; its message is fixed and contains no secret.
	return fmt.Errorf("hsm: open token %s with module %s: %w", selector(cfg), cfg.Module, err)
}

// Selector names the token c selects, as its errors do: `label "x"`, `serial "y"` or `slot 3`.
func (c Config) Selector() string { return selector(c) }

func selector(cfg Config) string {
	switch {
	case cfg.TokenLabel != "":
		return fmt.Sprintf("label %q", cfg.TokenLabel)
	case cfg.TokenSerial != "":
		return fmt.Sprintf("serial %q", cfg.TokenSerial)
	case cfg.Slot != nil:
		return fmt.Sprintf("slot %d", *cfg.Slot)
	}
	return "(none)"
}

// selectSlot finds the slot crypto11 chose, with the same first-match rule.
func (t *Token) selectSlot(cfg Config) error {
	slots, err := t.p11.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("hsm: list slots: %w", err)
	}
	for _, s := range slots {
		info, err := t.p11.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if (cfg.Slot != nil && *cfg.Slot == s) ||
			(cfg.TokenLabel != "" && info.Label == cfg.TokenLabel) ||
			(cfg.TokenSerial != "" && info.SerialNumber == cfg.TokenSerial) {
			t.slot, t.info = s, info
			return nil
		}
	}
	return fmt.Errorf("hsm: token %s vanished after login", selector(cfg))
}

// Label returns the token's label.
func (t *Token) Label() string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.info.Label
}

// Ping checks that the token is present and the login still holds, with one cheap call. Health checks
// use it.
//
// With session copies it checks the session that holds them as well: if the token dropped it, the copies
// are gone and every sign fails until a Reconnect makes new ones.
func (t *Token) Ping() error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if err := t.usable("ping"); err != nil {
		return err
	}
	if err := t.pool.with("ping", func(s pkcs11.SessionHandle) error { return t.loggedIn("ping", s) }); err != nil {
		return err
	}
	if !t.hasKeeper {
		return nil
	}
	// Outside the pooled session's call: a lost keeper must not have the pool close a healthy session.
	t.copyMu.Lock()
	defer t.copyMu.Unlock()
	return classify("ping", t.loggedIn("ping", t.keeper))
}

// loggedIn checks that session s is open and logged in as the user.
func (t *Token) loggedIn(op string, s pkcs11.SessionHandle) error {
	info, err := t.p11.GetSessionInfo(s)
	if err != nil {
		return err
	}
	if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
		return &Error{Op: op, Kind: ErrUnavailable, Err: errors.New("not logged in")}
	}
	return nil
}

// noPrivateObjects is the outcome of a search for private objects that found none: not found, unless
// the session has lost its login, which hides every private object (pkcs11-notes §11) and is the
// token's trouble, not a missing object.
func (t *Token) noPrivateObjects(op string, s pkcs11.SessionHandle, notFound error) error {
	if err := t.loggedIn(op, s); err != nil {
		return classify(op, err)
	}
	return notFound
}

// Close logs out and releases every session. It waits for operations in flight. Calling it again
// returns the first result (crypto11's own Close corrupts its reference count when called twice).
func (t *Token) Close() error {
	var first bool
	t.replace(func() {
		if t.closed {
			return
		}
		first, t.closed = true, true
		if t.connected {
			t.disconnectLocked()
		}
	})
	if first {
		t.local.close()
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.closeErr
}

// sessionPool is a bounded pool of raw sessions for the operations crypto11 cannot do. Sessions are opened
// on demand and reused; a session that the token reports dead is closed and dropped, so that it is reopened
// on next use instead of failing for ever (crypto11's own pool never evicts one, pkcs11-notes §1.3).
type sessionPool struct {
	p11    *pkcs11.Ctx
	slot   uint
	wait   time.Duration
	slots  chan pkcs11.SessionHandle // 0 marks a slot with no open session
	mu     sync.RWMutex              // held for reading by operations, for writing by close
	closed bool
}

func newSessionPool(p11 *pkcs11.Ctx, slot uint, size int, wait time.Duration) *sessionPool {
	p := &sessionPool{p11: p11, slot: slot, wait: wait, slots: make(chan pkcs11.SessionHandle, size)}
	for range size {
		p.slots <- 0
	}
	return p
}

// with runs f on a session of its own, opening one if needed.
func (p *sessionPool) with(op string, f func(pkcs11.SessionHandle) error) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return &Error{Op: op, Kind: ErrClosed}
	}
	var s pkcs11.SessionHandle
	select {
	case s = <-p.slots:
	default:
		timer := time.NewTimer(p.wait)
		select {
		case s = <-p.slots:
			timer.Stop()
		case <-timer.C:
			return &Error{Op: op, Kind: ErrBusy}
		}
	}
	if s == 0 {
		var err error
		s, err = p.p11.OpenSession(p.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			p.slots <- 0
			return classify(op+": open session", err)
		}
	}
	err := f(s)
	if hasCode(err, deadSessionCodes...) {
		_ = p.p11.CloseSession(s)
		s = 0
	}
	p.slots <- s
	return classify(op, err)
}

// close closes every session, waiting for operations in progress. Calling it again does nothing.
func (p *sessionPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for range cap(p.slots) {
		if s := <-p.slots; s != 0 {
			_ = p.p11.CloseSession(s)
		}
	}
}
