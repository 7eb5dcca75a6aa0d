package hsm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/signerd/signerd/internal/safedir"
)

// localLock serialises object-store work among the processes of one machine that use the same token:
// reads share it, writes (creating or destroying objects) take it alone. SoftHSM's file store needs
// this: a process that lists the token directory while another creates or deletes an object file can
// see a partial listing, or mark the whole token invalid until it is re-initialised (its OSToken::index
// gives up on a failed directory refresh). Network HSMs do not need it, and it costs them nothing.
// Signing never takes it.
//
// It also guards against a second SoftHSM flaw: a process's own write (Generation::commit) adopts the
// token generation that other processes' writes produced, so that process stops noticing those writes
// and its object list goes stale for good. Every write here therefore lists the token first, under the
// exclusive lock, so that the list is current when the write absorbs the generation (see reindex).
type localLock struct {
	f       *os.File
	rw      sync.RWMutex // orders this process's readers and writers; held for writing to close f
	closed  bool         // f is closed; guarded by rw
	mu      sync.Mutex   // guards readers
	readers int
	// held is set while this process holds the lock for a whole change (Token.Exclusive): the calls
	// the change makes then run without locking again. Such changes are serialised by the key ring.
	// Any other call of this process made meanwhile runs inside the change's lock too, so the change's
	// release waits for them (inside counts them): the file lock must not go while one still works.
	hmu    sync.Mutex // guards held and inside
	held   bool
	inside int
	left   *sync.Cond // on hmu; signalled when inside drops to zero
}

// enterHeld reports whether a change holds the lock, counting the caller in if so: it then runs inside
// the change's lock, and calls leaveHeld when done.
func (l *localLock) enterHeld() bool {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if l.held {
		l.inside++
	}
	return l.held
}

func (l *localLock) leaveHeld() {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if l.inside--; l.inside == 0 {
		l.left.Broadcast()
	}
}

// lockFile returns the lock file of the token cfg selects: cfg.LockFile, or when it is empty one per
// module and token in this user's private lock directory (lockDir).
func lockFile(cfg Config) (string, error) {
	if cfg.LockFile != "" {
		return cfg.LockFile, nil
	}
	dir, err := lockDir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(cfg.Module + "\x00" + selector(cfg)))
	return filepath.Join(dir, "token-"+hex.EncodeToString(sum[:8])+".lock"), nil
}

// lockDir returns, creating it if needed, the directory of default lock files: $XDG_RUNTIME_DIR/signerd,
// else signerd-UID in the temporary directory. It must be one of this user's that safedir.CheckOwn
// accepts: in a shared directory such as /tmp, another user could create the lock file first and hold
// it, and every token operation here would wait on them for ever.
func lockDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("signerd-%d", os.Geteuid()))
	if rt := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(rt) {
		dir = filepath.Join(rt, "signerd")
	}
	// A relative TMPDIR would give processes started in different directories different locks.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("hsm: lock directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("hsm: lock directory: %w", err)
	}
	if err := safedir.CheckOwn(dir); err != nil {
		return "", fmt.Errorf("hsm: lock directory: %w; set hsm.lock_file", err)
	}
	return dir, nil
}

// openLocalLock opens (creating it if needed) the lock file at path, which must be a regular file: a
// symbolic link there is refused rather than followed.
func openLocalLock(path string) (*localLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hsm: lock file: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("hsm: lock file %s: not a regular file", path)
	}
	l := &localLock{f: f}
	l.left = sync.NewCond(&l.hmu)
	return l, nil
}

// flockWait takes the lock as how says (LOCK_SH or LOCK_EX), waiting at most wait for another process
// to release it; the caller holds rw. Like flock, it does nothing once the file is closed.
func (l *localLock) flockWait(how int, wait time.Duration) error {
	if l.closed {
		return nil
	}
	deadline, pause := time.Now().Add(wait), time.Millisecond
	for {
		err := syscall.Flock(int(l.f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == syscall.EINTR:
			continue
		case err != syscall.EWOULDBLOCK:
			return &Error{Op: "local lock", Kind: ErrUnavailable, Err: err}
		case time.Now().After(deadline):
			return &Error{Op: "local lock", Kind: ErrBusy,
				Err: fmt.Errorf("another process on this machine has held the token's lock for over %v (a key change under way?)", wait)}
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// flock applies how to the lock file; the caller holds rw. Once the file is closed (the token was
// closed) it does nothing: calls after Close fail on the token anyway.
func (l *localLock) flock(how int) {
	if l.closed {
		return
	}
	for {
		if err := syscall.Flock(int(l.f.Fd()), how); err != syscall.EINTR {
			return
		}
	}
}

// readWait bounds how long a read waits for the lock another local process holds: a key change there
// (an administrator's `signerd keys rotate --due` generating RSA keys, say) can hold it for minutes,
// and a key refresh waiting that long would pass for a token that does not answer.
var readWait = 5 * time.Second

// read runs f holding the lock shared, or gives up with ErrBusy after readWait. A nil lock (the process
// holds an ExclusiveLock) just runs f.
func (l *localLock) read(f func() error) error {
	if l == nil {
		return f()
	}
	if l.enterHeld() {
		defer l.leaveHeld()
		return f()
	}
	l.rw.RLock()
	defer l.rw.RUnlock()
	l.mu.Lock()
	if l.readers == 0 {
		if err := l.flockWait(syscall.LOCK_SH, readWait); err != nil {
			l.mu.Unlock()
			return err
		}
	}
	l.readers++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		if l.readers--; l.readers == 0 {
			l.flock(syscall.LOCK_UN)
		}
		l.mu.Unlock()
	}()
	return f()
}

// write runs f holding the lock exclusively.
func (l *localLock) write(f func() error) error {
	if l == nil {
		return f()
	}
	if l.enterHeld() {
		defer l.leaveHeld()
		return f()
	}
	var err error
	l.exclusive(func() { err = f() })
	return err
}

// exclusive runs f holding the lock exclusively, like write, but it also waits for a change under
// Exclusive to end instead of running inside it: Reconnect and Close use it, and must never run
// between two calls of a change. A nil lock just runs f.
func (l *localLock) exclusive(f func()) {
	if l == nil {
		f()
		return
	}
	l.rw.Lock()
	defer l.rw.Unlock()
	l.flock(syscall.LOCK_EX)
	defer l.flock(syscall.LOCK_UN)
	f()
}

// Exclusive takes the token's local lock until the returned function is called, for one change made of
// several object-store calls (read a record, generate, write). Calls made meanwhile do not lock again;
// the caller serialises such changes (the key ring does). With an ExclusiveLock held for the whole
// process, it does nothing.
func (t *Token) Exclusive() func() {
	l := t.local
	if l == nil {
		return func() {}
	}
	l.rw.Lock()
	l.flock(syscall.LOCK_EX)
	l.hmu.Lock()
	l.held = true
	l.hmu.Unlock()
	return func() {
		l.hmu.Lock()
		l.held = false
		for l.inside > 0 {
			l.left.Wait()
		}
		l.hmu.Unlock()
		l.flock(syscall.LOCK_UN)
		l.rw.Unlock()
	}
}

// close closes the lock file once no caller in this process is using it.
func (l *localLock) close() {
	if l == nil {
		return
	}
	l.rw.Lock()
	defer l.rw.Unlock()
	if !l.closed {
		l.closed = true
		_ = l.f.Close()
	}
}

// ExclusiveLock is the token's local lock held by this process for as long as it likes, shutting out
// every other local process's object-store work, even reads. A command that changes keys takes it
// before it opens the token (Config.Exclusive), so that the token's object list it loads is complete
// and stays true while it works: SoftHSM's incremental view of other processes' changes is not
// dependable under concurrent writers, but its first, full listing is.
type ExclusiveLock struct{ l *localLock }

// AcquireExclusive waits for and takes the local lock of the token cfg selects.
func AcquireExclusive(cfg Config) (*ExclusiveLock, error) {
	path, err := lockFile(cfg)
	if err != nil {
		return nil, err
	}
	l, err := openLocalLock(path)
	if err != nil {
		return nil, err
	}
	l.flock(syscall.LOCK_EX)
	return &ExclusiveLock{l: l}, nil
}

// Release gives the lock up.
func (e *ExclusiveLock) Release() {
	e.l.flock(syscall.LOCK_UN)
	e.l.close()
}
