package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/unseal"
)

// unsealFlags defines the flags of signerd unseal, which runs runUnseal.
func unsealFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	socket := fs.String("socket", "", "the daemon's unseal socket `path` (hsm.unseal_socket)")
	cfgPath := fs.String("config", "", "the daemon's configuration `file`, to read hsm.unseal_socket from")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the daemon to log in and start")
	return func(ctx context.Context, s *streams, _ []string) error {
		return runUnseal(ctx, s, *socket, *cfgPath, *timeout)
	}
}

// runUnseal sends the token PIN to a signerd waiting sealed, and prints how its start ended.
func runUnseal(ctx context.Context, s *streams, socket, cfgPath string, timeout time.Duration) error {
	switch {
	case socket == "" && cfgPath == "":
		return cli.Usagef("give --socket or --config")
	case socket != "" && cfgPath != "":
		return cli.Usagef("give --socket or --config, not both")
	case cfgPath != "":
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return err
		}
		if !cfg.Sealed() {
			return fmt.Errorf("%s: hsm.unseal_socket is not set: this signerd reads its PIN itself", cfgPath)
		}
		socket = cfg.HSM.UnsealSocket
	}
	// Nothing is asked of the administrator before the socket is known to be there and safe.
	if _, err := unseal.CheckSocket(socket); err != nil {
		return err
	}
	pin, err := readPIN(ctx, s.stdin, s.stderr, "PIN for the token of the signerd at "+socket+": ")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := unseal.Send(ctx, socket, pin)
	if err != nil {
		return err
	}
	fmt.Fprintln(s.stdout, msg)
	return nil
}

// readPIN reads a PIN from an administrator: from the terminal without echo (after prompt on stderr)
// when stdin is one, else the first line of stdin (a pipe from a secret store). It gives up when ctx
// ends (Ctrl-C), with the terminal as it found it.
func readPIN(ctx context.Context, stdin *os.File, stderr io.Writer, prompt string) (string, error) {
	type result struct {
		pin string
		err error
	}
	done := make(chan result, 1)
	fd := int(stdin.Fd())
	if term.IsTerminal(fd) {
		state, err := term.GetState(fd)
		if err != nil {
			return "", fmt.Errorf("read the PIN: %w", err)
		}
		// ReadPassword restores the terminal when it returns; an interrupt does so itself.
		defer func() { _ = term.Restore(fd, state) }()
		fmt.Fprint(stderr, prompt)
		defer fmt.Fprintln(stderr)
		go func() {
			b, err := term.ReadPassword(fd)
			done <- result{string(b), err}
		}()
	} else {
		go func() {
			line, err := bufio.NewReader(io.LimitReader(stdin, unseal.MaxPIN+3)).ReadString('\n')
			if errors.Is(err, io.EOF) {
				err = nil // a last line without a newline
			}
			done <- result{strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), err}
		}()
	}
	select {
	case <-ctx.Done():
		return "", fmt.Errorf("interrupted before a PIN was given: %w", ctx.Err())
	case r := <-done:
		switch {
		case r.err != nil:
			return "", fmt.Errorf("read the PIN: %w", r.err)
		case r.pin == "":
			return "", errors.New("no PIN given (type it at the prompt, or give it as the first line of standard input)")
		}
		return r.pin, unseal.CheckPIN(r.pin)
	}
}

// unsealToken opens the token with a PIN an administrator sends to the unseal socket at path. A wrong
// PIN is answered and another awaited; any other failure to open the token is answered and ends the
// start. It returns the answer to the request that opened the token, for startDaemon to give once it
// has started or failed to. The PIN stays in memory only (the token keeps it to log in again after a
// reset).
func (d *daemon) unsealToken(ctx context.Context, path string, hcfg hsm.Config) (*hsm.Token, func(string, error), error) {
	l, err := unseal.Listen(path, func(uid uint32, err error) {
		d.log.Warn("unseal attempt refused", "uid", uid, "err", err)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("hsm.unseal_socket: %w", err)
	}
	defer l.Close()
	d.log.Info("sealed: waiting for an administrator to send the token PIN", "socket", path,
		"command", "signerd unseal --socket "+path)
	for {
		r, err := l.Next(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("sealed: %w", err)
		}
		hcfg.PIN = r.PIN
		tok, err := hsm.Open(hcfg)
		if err == nil {
			d.log.Info("unsealed: logged in to the token", "uid", r.UID)
			return tok, r.Reply, nil
		}
		if !errors.Is(err, hsm.ErrWrongPIN) {
			r.Reply("", err)
			return nil, nil, err
		}
		d.log.Warn("unseal: wrong PIN; still sealed", "uid", r.UID, "err", err)
		// Guesses wait, and so does the token's count of wrong PINs towards its lockout.
		select {
		case <-time.After(wrongPINDelay):
		case <-ctx.Done():
		}
		r.Reply("", err)
	}
}

// wrongPINDelay is how long a sealed daemon waits before it answers a wrong PIN and takes another.
const wrongPINDelay = time.Second
