// Package unseal carries the token PIN from an administrator to a signerd started sealed (hsm.unseal_socket):
// the daemon listens on a Unix socket that only its own user and root may use, an administrator's
// `signerd unseal` writes the PIN to it, and the daemon answers with the outcome of logging in and
// starting. The PIN never touches a disk, a config file or an environment variable.
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
	"strings"
	"syscall"
	"time"
)

// MaxPIN bounds a PIN on the wire; PKCS#11 PINs are far shorter.
const MaxPIN = 256

// readTimeout bounds how long a client may take to send its PIN once connected.
const readTimeout = 10 * time.Second

// Listener is the daemon's end: a Unix socket accepting PINs from its own user and root.
type Listener struct {
	l    *net.UnixListener
	path string
	// allowed decides, from the peer's uid (SO_PEERCRED), who may unseal.
	allowed func(uid uint32) bool
	// refused reports connections turned away before they sent a PIN (who, and why).
	refused func(uid uint32, err error)
}

// Listen creates the socket at path, mode 0600. A socket left there by a process that is gone is
// replaced; one that a process still listens on is an error (another daemon is waiting), and so is any
// other file.
func Listen(path string, refused func(uid uint32, err error)) (*Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("unseal socket: %w", err)
	}
	// The peer's uid is checked on every connection; the mode keeps other users from connecting at all.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("unseal socket: %w", err)
	}
	self := uint32(os.Getuid())
	if refused == nil {
		refused = func(uint32, error) {}
	}
	return &Listener{l: l, path: path, allowed: func(uid uint32) bool { return uid == 0 || uid == self }, refused: refused}, nil
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

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

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
	line = strings.ReplaceAll(line, "\n", " ")
	_ = r.conn.SetWriteDeadline(time.Now().Add(readTimeout))
	_, _ = io.WriteString(r.conn, line+"\n")
	_ = r.conn.Close()
}

// Next waits for the next PIN from an allowed peer, until ctx ends. Connections from other users, and
// ones that send no well-formed PIN in time, are answered with an error and closed.
func (l *Listener) Next(ctx context.Context) (*Request, error) {
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
		r, err := l.read(c)
		if err != nil {
			r.Reply("", err)
			l.refused(r.UID, err)
			continue
		}
		return r, nil
	}
}

// read checks the peer and reads its PIN. The Request it returns can always be replied to.
func (l *Listener) read(c *net.UnixConn) (*Request, error) {
	r := &Request{conn: c}
	uid, err := peerUID(c)
	if err != nil {
		return r, err
	}
	r.UID = uid
	if !l.allowed(uid) {
		return r, fmt.Errorf("uid %d may not unseal this signerd (its own user and root may)", uid)
	}
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, MaxPIN+2), MaxPIN+2).ReadString('\n')
	if err != nil {
		return r, errors.New("no PIN received (want the PIN and a newline)")
	}
	pin := strings.TrimRight(line, "\r\n")
	if pin == "" {
		return r, errors.New("empty PIN")
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

// Close stops listening and removes the socket.
func (l *Listener) Close() error {
	return l.l.Close() // a listening Unix socket removes its file on Close
}

// ErrRefused is a daemon's refusal (wrong PIN, start failure); its text is the daemon's.
var ErrRefused = errors.New("refused")

// Send gives pin to the daemon listening at path and returns its answer: the message of an "ok", or an
// error wrapping ErrRefused with the daemon's reason. The daemon answers once it has logged in and
// started, or failed to, so ctx should allow for loading the keys.
func Send(ctx context.Context, path, pin string) (string, error) {
	switch {
	case pin == "":
		return "", errors.New("empty PIN")
	case len(pin) > MaxPIN:
		return "", fmt.Errorf("PIN longer than %d bytes", MaxPIN)
	case strings.ContainsAny(pin, "\r\n"):
		return "", errors.New("the PIN contains a line break")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("unseal socket: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(c, pin+"\n"); err != nil {
		return "", fmt.Errorf("unseal socket: send: %w", err)
	}
	answer, err := bufio.NewReader(io.LimitReader(c, 4096)).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("unseal socket: no answer: %w", ctx.Err())
		}
		return "", fmt.Errorf("unseal socket: no answer: %w", err)
	}
	answer = strings.TrimRight(answer, "\n")
	if msg, ok := strings.CutPrefix(answer, "ok "); ok {
		return msg, nil
	}
	if msg, ok := strings.CutPrefix(answer, "error "); ok {
		return "", fmt.Errorf("%w: %s", ErrRefused, msg)
	}
	return "", fmt.Errorf("unseal socket: unexpected answer %q", answer)
}
