// Package unseal carries the token PIN from an administrator to a signerd started sealed (hsm.unseal_socket):
// the daemon listens on a Unix socket that only its own user and root may use, an administrator's
// `signerd unseal` writes the PIN to it, and the daemon answers with the outcome of logging in and
// starting. The PIN is never written to a file, a config or an environment variable.
//
// The exchange is one line each way: the client writes the PIN and a newline; the daemon answers
// "ok MESSAGE" or "error MESSAGE" and a newline, and closes the connection.
package unseal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/signerd/signerd/internal/safedir"
)

// MaxPIN bounds a PIN on the wire; PKCS#11 PINs are far shorter.
const MaxPIN = 256

// maxPath bounds the socket's path: a Unix socket address holds 107 bytes and a terminating NUL.
const maxPath = 107

// readTimeout bounds how long a client may take to send its PIN once connected.
const readTimeout = 10 * time.Second

// maxAnswer bounds an answer line (a start failure can join many problems).
const maxAnswer = 4000

// unknownUID stands for a peer whose credentials could not be read ((uid_t)-1).
const unknownUID = ^uint32(0)

// Listener is the daemon's end: a Unix socket accepting PINs from its own user and root.
type Listener struct {
	l    *net.UnixListener
	path string
	// allowed decides, from the peer's uid (SO_PEERCRED), who may unseal.
	allowed func(uid uint32) bool
	// refused reports connections turned away before they sent a PIN (who, and why).
	refused func(uid uint32, err error)
}

// Listen creates the socket at path, mode 0600, in a directory as checkPath wants that belongs to root
// or to this process's user. A socket left there by a process that is gone is replaced; one that a
// process still listens on is an error (another daemon is waiting), and so is any other file.
func Listen(path string, refused func(uid uint32, err error)) (*Listener, error) {
	dirOwner, err := checkPath(path)
	if err != nil {
		return nil, err
	}
	self := uint32(os.Getuid())
	if dirOwner != 0 && dirOwner != self {
		return nil, fmt.Errorf("unseal socket: directory %s belongs to uid %d: want one of root's or this user's (uid %d)", filepath.Dir(path), dirOwner, self)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("unseal socket: %w", err)
	}
	// Until this chmod the socket has the umask's mode; the directory (no one else may write to it, and
	// systemd's RuntimeDirectory is 0700) and the peer uid check keep others out meanwhile.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("unseal socket: %w", err)
	}
	if refused == nil {
		refused = func(uint32, error) {}
	}
	return &Listener{l: l, path: path, allowed: func(uid uint32) bool { return uid == 0 || uid == self }, refused: refused}, nil
}

// ValidPath reports whether path has the form of an unseal socket's: absolute, and short enough for a
// socket address. (Its directory is checkPath's, when the socket is made or used.)
func ValidPath(path string) error {
	switch {
	case !filepath.IsAbs(path):
		return fmt.Errorf("%q: want an absolute path", path)
	case len(path) > maxPath:
		return fmt.Errorf("%s: longer than the %d bytes a socket address holds", path, maxPath)
	}
	return nil
}

// checkPath reports whether path can be an unseal socket: absolute, short enough for a socket address,
// in a directory safedir.Check accepts (in a shared directory such as /tmp another user could bind the
// path first and collect the PIN). It returns the directory's owner, for the caller to check against
// whom it trusts.
func checkPath(path string) (dirOwner uint32, err error) {
	if err := ValidPath(path); err != nil {
		return 0, fmt.Errorf("unseal socket: %w", err)
	}
	dirOwner, err = safedir.Check(filepath.Dir(path))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("unseal socket: %w", err)
	case err != nil:
		return 0, fmt.Errorf("unseal socket: %w: use a directory only signerd's user can write, such as systemd's RuntimeDirectory", err)
	}
	return dirOwner, nil
}

// removeStale removes a socket at path that nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unseal socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("unseal socket: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("unseal socket: %s: another process is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("unseal socket: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("unseal socket: remove stale %s: %w", path, err)
	}
	return nil
}

// Request is a PIN an administrator sent. Exactly one Reply answers it.
type Request struct {
	PIN  string
	UID  uint32
	conn *net.UnixConn
}

// Reply tells the administrator the outcome (err nil: ok with msg) and closes the connection. Neither
// msg nor err may contain the PIN.
func (r *Request) Reply(msg string, err error) {
	line := "ok " + msg
	if err != nil {
		line = "error " + err.Error()
	}
	line = strings.NewReplacer("\n", " ", "\r", " ").Replace(line)
	if len(line) > maxAnswer {
		line = strings.ToValidUTF8(line[:maxAnswer-3], "") + "..."
	}
	_ = r.conn.SetWriteDeadline(time.Now().Add(readTimeout))
	_, _ = io.WriteString(r.conn, line+"\n")
	_ = r.conn.Close()
}

// Next waits for the next PIN from an allowed peer, until ctx ends. Connections from other users, and
// ones that send no well-formed PIN in time, are answered with an error and closed.
func (l *Listener) Next(ctx context.Context) (*Request, error) {
	_ = l.l.SetDeadline(time.Time{}) // an earlier Next's context may have set one
	stop := context.AfterFunc(ctx, func() { _ = l.l.SetDeadline(time.Now()) })
	defer stop()
	for {
		c, err := l.l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("unseal socket: %w", err)
		}
		r, err := l.read(ctx, c)
		if ctx.Err() != nil {
			// Stopping: a PIN that arrived meanwhile is not used.
			r.Reply("", errors.New("signerd is stopping"))
			return nil, ctx.Err()
		}
		if err != nil {
			r.Reply("", err)
			l.refused(r.UID, err)
			continue
		}
		return r, nil
	}
}

// read checks the peer and reads its PIN, until the read timeout or the end of ctx. The Request it
// returns can always be replied to.
func (l *Listener) read(ctx context.Context, c *net.UnixConn) (*Request, error) {
	r := &Request{conn: c, UID: unknownUID}
	uid, err := peerUID(c)
	if err != nil {
		return r, err
	}
	r.UID = uid
	if !l.allowed(uid) {
		return r, fmt.Errorf("uid %d may not unseal this signerd (its own user and root may)", uid)
	}
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	// A PIN of MaxPIN bytes, "\r\n" and one byte more: enough to tell a PIN that is too long.
	line, err := bufio.NewReader(io.LimitReader(c, MaxPIN+3)).ReadString('\n')
	if err != nil {
		return r, errors.New("no PIN received (want the PIN and a newline, at most 256 bytes)")
	}
	pin := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if err := CheckPIN(pin); err != nil {
		return r, err
	}
	r.PIN = pin
	return r, nil
}

// peerUID returns the uid of the process at the other end of c.
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("peer credentials: %w", credErr)
	}
	return cred.Uid, nil
}

// Close stops listening and removes the socket. Clients already connected and waiting to be taken (a
// second administrator unsealing at the same time) are answered that signerd no longer waits for a
// PIN, rather than reset without a word.
func (l *Listener) Close() error {
	// A deadline already past would fail Accept before it looks at the backlog.
	_ = l.l.SetDeadline(time.Now().Add(20 * time.Millisecond))
	for {
		c, err := l.l.AcceptUnix()
		if err != nil {
			break
		}
		(&Request{conn: c}).Reply("", errors.New("signerd no longer waits for a PIN: unsealed by another request, or stopping"))
	}
	return l.l.Close() // a listening Unix socket removes its file on Close
}

// ErrRefused is in the error of a daemon's "error" answer (wrong PIN, start failure), whose text is
// the daemon's reason alone.
var ErrRefused = errors.New("refused by signerd")

// answerError is a daemon's "error" answer.
type answerError string

func (e answerError) Error() string      { return string(e) }
func (answerError) Is(target error) bool { return target == ErrRefused }

// CheckSocket reports whether path is a socket a PIN may be sent to: a socket, in a directory as
// checkPath wants that belongs to root or to the socket's owner. It returns the socket's owner. An
// administrator's client checks it before asking for the PIN. (The directories above must be root's or
// this user's, not the socket owner's: whoever bound a socket owns it, the daemon or someone posing as
// it, so its owner is no one to trust for the path.)
func CheckSocket(path string) (owner uint32, err error) {
	dirOwner, err := checkPath(path)
	if err != nil {
		return 0, err
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("unseal socket: no %s: is signerd running, and still sealed?", path)
	case err != nil:
		return 0, fmt.Errorf("unseal socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return 0, fmt.Errorf("unseal socket: %s is not a socket", path)
	}
	if owner, err = safedir.Owner(fi); err != nil {
		return 0, fmt.Errorf("unseal socket: %w", err)
	}
	if dirOwner != 0 && dirOwner != owner {
		return 0, fmt.Errorf("unseal socket: directory %s belongs neither to root nor to the socket's owner (uid %d)", filepath.Dir(path), owner)
	}
	return owner, nil
}

// CheckPIN reports whether pin can travel to a daemon: not empty, at most MaxPIN bytes, one line.
func CheckPIN(pin string) error {
	switch {
	case pin == "":
		return errors.New("empty PIN")
	case len(pin) > MaxPIN:
		return fmt.Errorf("PIN longer than %d bytes", MaxPIN)
	case strings.ContainsAny(pin, "\r\n"):
		return errors.New("the PIN contains a line break")
	}
	return nil
}

// Send gives pin to the daemon listening at path (which must pass CheckSocket) and returns its answer:
// the message of an "ok", or the daemon's reason as an error that is ErrRefused. The daemon answers
// once it has logged in and started, or failed to, so ctx should allow for loading the keys.
func Send(ctx context.Context, path, pin string) (string, error) {
	if err := CheckPIN(pin); err != nil {
		return "", err
	}
	owner, err := CheckSocket(path)
	if err != nil {
		return "", err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("unseal socket: %w", err)
	}
	c := conn.(*net.UnixConn)
	defer c.Close()
	// The process listening is the socket's owner (or root), not one that took its place.
	if peer, err := peerUID(c); err != nil || (peer != 0 && peer != owner) {
		return "", fmt.Errorf("unseal socket: the process listening on %s is not the socket's owner (uid %d); not sending the PIN", path, owner)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	// A daemon that turns this peer away answers and closes without reading: the write may fail, and
	// the answer, already here, says why.
	_, werr := io.WriteString(c, pin+"\n")
	answer, err := bufio.NewReader(io.LimitReader(c, maxAnswer+2)).ReadString('\n')
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return "", fmt.Errorf("unseal socket: no answer: %w", ctx.Err())
		case werr != nil:
			return "", fmt.Errorf("unseal socket: send: %w", werr)
		}
		return "", fmt.Errorf("unseal socket: no answer: %w", err)
	}
	answer = strings.TrimRight(answer, "\n")
	if msg, ok := strings.CutPrefix(answer, "ok "); ok {
		return msg, nil
	}
	if msg, ok := strings.CutPrefix(answer, "error "); ok {
		return "", answerError(msg)
	}
	return "", fmt.Errorf("unseal socket: unexpected answer %q", answer)
}
