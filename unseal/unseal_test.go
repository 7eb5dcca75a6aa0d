package unseal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// mustFail fails the test unless err is an error that says want.
func mustFail(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s = %v, want an error saying %q", what, err, want)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// serveOnce answers the next request with reply and returns the PIN it carried.
func serveOnce(t *testing.T, l *Listener, msg string, err error) <-chan string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		r, nerr := l.Next(ctxT(t))
		if nerr != nil {
			got <- "next: " + nerr.Error()
			return
		}
		r.Reply(msg, err)
		got <- r.PIN
	}()
	return got
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unseal.sock")
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("socket file: %v %v", fi.Mode(), err)
	}

	got := serveOnce(t, l, "", errors.New("hsm: login to token label \"x\": wrong PIN"))
	_, err = Send(ctxT(t), path, "1234")
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "wrong PIN") {
		t.Fatalf("refusal: %v", err)
	}
	if pin := <-got; pin != "1234" {
		t.Fatalf("daemon got %q", pin)
	}

	got = serveOnce(t, l, "serving on 127.0.0.1:1, 3 keys", nil)
	msg, err := Send(ctxT(t), path, "s3cret pin")
	if err != nil || msg != "serving on 127.0.0.1:1, 3 keys" {
		t.Fatalf("Send = %q, %v", msg, err)
	}
	if pin := <-got; pin != "s3cret pin" {
		t.Fatalf("daemon got %q", pin)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

// Only the daemon's own user and root may unseal: anyone else is answered with an error, and the
// daemon goes on waiting for a PIN from someone who may.
func TestOtherUsersRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unseal.sock")
	var refusals []error
	l, err := Listen(path, func(_ uint32, err error) { refusals = append(refusals, err) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var allow atomic.Bool
	l.allowed = func(uint32) bool { return allow.Load() }

	got := serveOnce(t, l, "unsealed", nil)
	_, err = Send(ctxT(t), path, "1234")
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "may not unseal") {
		t.Fatalf("refusal: %v", err)
	}
	select {
	case pin := <-got:
		t.Fatalf("the daemon took a PIN from a refused user: %q", pin)
	case <-time.After(100 * time.Millisecond):
	}
	allow.Store(true)
	if _, err := Send(ctxT(t), path, "1234"); err != nil {
		t.Fatal(err)
	}
	if pin := <-got; pin != "1234" || len(refusals) != 1 {
		t.Fatalf("pin %q, refusals %v", pin, refusals)
	}
}

func TestMalformedInput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unseal.sock")
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, pin := range []string{"", "12\n34", strings.Repeat("1", MaxPIN+1)} {
		if _, err := Send(ctxT(t), path, pin); err == nil || errors.Is(err, ErrRefused) {
			t.Errorf("Send(%.10q...) = %v, want a local error", pin, err)
		}
	}

	got := serveOnce(t, l, "unsealed", nil)
	// What Send refuses to write, the daemon refuses to read: an empty line, a PIN over the limit.
	for _, raw := range []string{"\n", "\r\n", strings.Repeat("1", MaxPIN+1) + "\n", strings.Repeat("1", MaxPIN+1) + "\r\n", strings.Repeat("1", MaxPIN+5) + "\n"} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 200)
		n, _ := c.Read(buf)
		c.Close()
		if !strings.HasPrefix(string(buf[:n]), "error ") {
			t.Errorf("%d bytes: answer %q, want an error", len(raw), buf[:n])
		}
	}
	// The longest PIN, with a CRLF line end.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Repeat("7", MaxPIN) + "\r\n")); err != nil {
		t.Fatal(err)
	}
	if pin := <-got; pin != strings.Repeat("7", MaxPIN) {
		t.Fatalf("daemon got %q", pin)
	}
}

// A socket in a directory that others may write to could have been bound by anyone: neither the
// daemon nor the client uses one, and a path too long for a socket address is refused up front.
func TestUnsafePaths(t *testing.T) {
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil { // as /tmp
		t.Fatal(err)
	}
	path := filepath.Join(shared, "unseal.sock")
	_, err := Listen(path, nil)
	mustFail(t, "Listen in a shared directory", err, "writable by its group or others")
	// Someone else's socket there: the client does not send the PIN to it.
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = Send(ctxT(t), path, "1234")
	mustFail(t, "Send to a shared directory", err, "writable by its group or others")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	_, err = Listen(filepath.Join(link, "unseal.sock"), nil)
	mustFail(t, "Listen under a symbolic link", err, "symbolic link")
	for path, want := range map[string]string{"relative.sock": "absolute", "/" + strings.Repeat("d", maxPath): "longer than"} {
		_, err := checkPath(path)
		mustFail(t, fmt.Sprintf("checkPath(%.20q)", path), err, want)
	}
	_, err = CheckSocket(filepath.Join(dir, "none.sock"))
	mustFail(t, "CheckSocket(missing)", err, "still sealed?")
	_, err = Listen(filepath.Join(dir, "missing", "unseal.sock"), nil)
	mustFail(t, "Listen in a missing directory", err, "no such file or directory")
	if strings.Contains(err.Error(), "use a directory") {
		t.Errorf("Listen in a missing directory = %v: advice on choosing a directory, for one that is only missing", err)
	}
}

// A directory that belongs to another user could be that user's to rebind the socket in: the daemon
// wants root's or its own, the client root's or the socket owner's.
func TestOtherUsersDirectory(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	const nobody = 65534
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "unseal.sock")
	_, err := Listen(path, nil)
	mustFail(t, "Listen in another user's directory", err, "belongs to uid 65534")
	// A root-owned socket there (as if bound by a daemon that did not check): the client refuses it.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Send(ctxT(t), path, "1234")
	mustFail(t, "Send into another user's directory", err, "belongs neither to root nor to the socket's owner")
}

// TestSharedAncestors: a private directory is no safer than the directories above it. In a directory
// others may write to (not sticky), any directory could be replaced; in a sticky one such as /tmp, one
// that someone else made first (mallory's /tmp/signerd, 0700, with mallory's socket in it) passes every
// check of its own, so the entry below a sticky directory must be root's or this user's.
func TestSharedAncestors(t *testing.T) {
	base := t.TempDir()
	mkdir := func(path string, mode os.FileMode) string {
		t.Helper()
		if err := os.Mkdir(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask, and the sticky bit
			t.Fatal(err)
		}
		return path
	}
	sticky := mkdir(filepath.Join(base, "tmp"), os.ModeSticky|0o777)
	open := mkdir(filepath.Join(base, "open"), 0o777)
	group := mkdir(filepath.Join(base, "group"), 0o775)

	// This user's directory in a sticky one: nobody else can replace it.
	l, err := Listen(filepath.Join(mkdir(filepath.Join(sticky, "mine"), 0o700), "unseal.sock"), nil)
	if err != nil {
		t.Fatalf("Listen in this user's private directory under a sticky one = %v", err)
	}
	_ = l.Close()
	for _, parent := range []string{open, group} {
		path := filepath.Join(mkdir(filepath.Join(parent, "signerd"), 0o700), "unseal.sock")
		_, err := Listen(path, nil)
		mustFail(t, "Listen below "+parent, err, "which its group or others may write to")
		_, err = CheckSocket(path)
		mustFail(t, "CheckSocket below "+parent, err, "which its group or others may write to")
	}
	// Through a symbolic link to a directory below an open one: checked as resolved too.
	link := filepath.Join(base, "link")
	if err := os.Symlink(filepath.Join(open, "signerd"), link); err != nil {
		t.Fatal(err)
	}
	mkdir(filepath.Join(open, "signerd", "sub"), 0o700)
	_, err = Listen(filepath.Join(link, "sub", "unseal.sock"), nil)
	mustFail(t, "Listen below a link into an open directory", err, "which its group or others may write to")

	if os.Getuid() != 0 {
		t.Skip("the rest needs root, to give a directory and a socket to another user")
	}
	const mallory = 65534
	dir := mkdir(filepath.Join(sticky, "signerd"), 0o700)
	if err := os.Chown(dir, mallory, mallory); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "unseal.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chown(path, mallory, mallory); err != nil {
		t.Fatal(err)
	}
	_, err = CheckSocket(path)
	mustFail(t, "CheckSocket of mallory's socket in mallory's directory in a sticky one", err, "neither root's nor this user's")
	_, err = Send(ctxT(t), path, "s3cret-pin")
	mustFail(t, "Send to mallory's socket", err, "neither root's nor this user's")
}

func TestStaleAndLiveSockets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "unseal.sock")
	// A socket whose listener is gone without removing it (a crash).
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l.Close()

	if _, err := Listen(path, nil); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("second listener: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
}

// Next ends with its context, promptly even while a client that sent nothing is connected (the read
// timeout is 10 s), and a PIN that arrives once it is stopping is not used.
func TestNextEndsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unseal.sock")
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, silent := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := l.Next(ctx); done <- err }()
		var c net.Conn
		if silent {
			if c, err = net.Dial("unix", path); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // accepted, reading
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Next = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Next (silent client %v) did not end with its context", silent)
		}
		if c != nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second)) // fail, not hang, if it was never accepted
			buf := make([]byte, 100)
			n, _ := c.Read(buf)
			if !strings.Contains(string(buf[:n]), "error signerd is stopping") {
				t.Errorf("silent client's answer %q", buf[:n])
			}
			c.Close()
		}
	}
}

// Clients still waiting to be taken when the daemon stops listening (a second administrator unsealing
// at the same time as the first) are told so, not reset.
func TestCloseAnswersWaitingClients(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unseal.sock")
	l, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := Send(ctxT(t), path, "1234")
			errs <- err
		}()
	}
	time.Sleep(300 * time.Millisecond) // both connected, waiting in the backlog
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "no longer waits for a PIN") {
			t.Errorf("Send to a daemon that stopped listening = %v, want ErrRefused saying it no longer waits", err)
		}
	}
}
