package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/unseal"
)

// cmdUnseal sends the token PIN to a signerd waiting sealed, and prints how its start ended.
func cmdUnseal(ctx context.Context, args []string, stdin *os.File, stdout, stderr io.Writer) error {
	fs := newFlags("unseal")
	socket := fs.String("socket", "", "the daemon's unseal socket (hsm.unseal_socket)")
	cfgPath := fs.String("config", "", "the daemon's configuration file, to read hsm.unseal_socket from")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the daemon to log in and start")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case (*socket == "") == (*cfgPath == ""):
		return fmt.Errorf("%w: unseal: give --socket or --config", errUsage)
	case *cfgPath != "":
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		if !cfg.Sealed() {
			return fmt.Errorf("%s: hsm.unseal_socket is not set: this signerd reads its PIN itself", *cfgPath)
		}
		*socket = cfg.HSM.UnsealSocket
	}
	pin, err := readPIN(stdin, stderr, "PIN for the token of the signerd at "+*socket+": ")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	msg, err := unseal.Send(ctx, *socket, pin)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, msg)
	return nil
}

// readPIN reads a PIN from an administrator: from the terminal without echo (after prompt on stderr)
// when stdin is one, else the first line of stdin (a pipe from a secret store).
func readPIN(stdin *os.File, stderr io.Writer, prompt string) (string, error) {
	if fd := int(stdin.Fd()); term.IsTerminal(fd) {
		fmt.Fprint(stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read the PIN: %w", err)
		}
		return nonEmptyPIN(string(b))
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, unseal.MaxPIN+2)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the PIN from standard input: %w", err)
	}
	return nonEmptyPIN(strings.TrimRight(line, "\r\n"))
}

func nonEmptyPIN(pin string) (string, error) {
	if pin == "" {
		return "", errors.New("no PIN given (type it at the prompt, or give it as the first line of standard input)")
	}
	return pin, nil
}
