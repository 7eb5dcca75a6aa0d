package hsm

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDefaultLockFileIsPrivate: without a configured lock file, the token's lock file is in a directory
// of this user's that no one else may write to ($XDG_RUNTIME_DIR/signerd, else signerd-UID in the
// temporary directory), so that another user cannot create it first and hold it. A directory there
// that is another user's, writable by others or not a directory is refused with an error saying to set
// hsm.lock_file, rather than used; a lock file that is a symbolic link is refused, not followed.
func TestDefaultLockFileIsPrivate(t *testing.T) {
	cfg := Config{Module: DefaultModule, TokenLabel: "t"}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_RUNTIME_DIR", "")
	path, err := lockFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "signerd-"+strconv.Itoa(os.Geteuid()))
	if filepath.Dir(path) != dir {
		t.Errorf("lockFile = %s, want a file in %s", path, dir)
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("lock directory %s: %v, %v; want a directory of mode 0700", dir, fi, err)
	}
	l, err := openLocalLock(path)
	if err != nil {
		t.Fatal(err)
	}
	l.close()

	// A relative TMPDIR is made absolute: processes started in different directories share one lock.
	t.Chdir(tmp)
	t.Setenv("TMPDIR", ".")
	if rel, err := lockFile(cfg); err != nil || rel != path {
		t.Errorf("lockFile with TMPDIR=. in %s = %s, %v; want %s", tmp, rel, err, path)
	}
	t.Setenv("TMPDIR", tmp)

	runtime := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	if path, err := lockFile(cfg); err != nil || filepath.Dir(path) != filepath.Join(runtime, "signerd") {
		t.Errorf("lockFile with XDG_RUNTIME_DIR = %s, %v; want a file in %s/signerd", path, err, runtime)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")

	if err := os.Chmod(dir, 0o775); err != nil {
		t.Fatal(err)
	}
	if _, err := lockFile(cfg); err == nil || !strings.Contains(err.Error(), "writable by its group or others") || !strings.Contains(err.Error(), "hsm.lock_file") {
		t.Errorf("lockFile (directory mode 0775) = %v, want an error: writable by its group or others; set hsm.lock_file", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := lockFile(cfg); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("lockFile (directory of uid 65534) = %v, want an error: belongs to uid 65534", err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), dir); err != nil {
		t.Fatal(err)
	}
	if _, err := lockFile(cfg); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("lockFile (a symbolic link in place of the directory) = %v, want an error: not a directory", err)
	}

	target, link := filepath.Join(tmp, "target"), filepath.Join(tmp, "link.lock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if l, err := openLocalLock(link); err == nil {
		l.close()
		t.Errorf("openLocalLock(symbolic link) = nil error, want it refused")
	}
	if _, err := os.Lstat(target); err == nil {
		t.Errorf("openLocalLock(symbolic link) created the link's target %s", target)
	}
	if l, err := openLocalLock(tmp); err == nil || !strings.Contains(err.Error(), "not a regular file") && !strings.Contains(err.Error(), syscall.EISDIR.Error()) {
		if l != nil {
			l.close()
		}
		t.Errorf("openLocalLock(a directory) = %v, want it refused", err)
	}
}

// TestCallDuringChangeKeepsLock: a call of this process that starts while a change holds the local
// lock (a signer finding its key again after a reconnect, say) runs inside the change's lock, and the
// change's release waits for it: another process cannot take the lock while it still works.
func TestCallDuringChangeKeepsLock(t *testing.T) {
	tk := newTestToken(t, "held-race")
	release := tk.Exclusive()
	started, proceed, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_ = tk.local.read(func() error {
			close(started)
			<-proceed
			return nil
		})
	}()
	<-started
	released := make(chan struct{})
	go func() {
		release() // the change ends while the read still runs
		close(released)
	}()
	path, err := lockFile(tk.cfg)
	if err != nil {
		t.Fatal(err)
	}
	other, err := openLocalLock(path) // another process's open file description
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	select {
	case <-released:
		t.Error("the change's release returned while a read it let run without locking was still running")
	case <-time.After(100 * time.Millisecond):
	}
	if err := syscall.Flock(int(other.f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		t.Error("another process took the token's lock while a read of this process was still running on the token")
	}
	close(proceed)
	<-done
	<-released
	if err := syscall.Flock(int(other.f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("after the read and the change ended, another process cannot take the lock: %v", err)
	}
}

// TestReadGivesUpOnHeldLock: a read waits for another local process's hold on the lock at most
// readWait, then fails with ErrBusy (a key refresh then fails fast instead of looking like a token that
// does not answer), and reads again once the hold ends.
func TestReadGivesUpOnHeldLock(t *testing.T) {
	tk := newTestToken(t, "held-elsewhere")
	defer func(w time.Duration) { readWait = w }(readWait)
	readWait = 300 * time.Millisecond
	other, err := os.OpenFile(tk.local.f.Name(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX); err != nil { // another process's change
		t.Fatal(err)
	}
	start := time.Now()
	err = tk.local.read(func() error { return nil })
	if took := time.Since(start); !errors.Is(err, ErrBusy) || took < readWait || took > 5*time.Second {
		t.Errorf("read while another holds the lock = %v after %v, want ErrBusy after about %v", err, took, readWait)
	}
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := tk.local.read(func() error { return nil }); err != nil {
		t.Errorf("read once the hold ended = %v", err)
	}
}
