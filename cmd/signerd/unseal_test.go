package main

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/signerd/signerd/unseal"
)

// pipeWith returns the read end of a pipe that holds input (closed after it unless keepOpen).
func pipeWith(t *testing.T, input string, keepOpen bool) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := io.WriteString(w, input); err != nil {
		t.Fatal(err)
	}
	if !keepOpen {
		w.Close()
	}
	return r
}

// From a pipe, readPIN takes the first line, with or without its line end.
func TestReadPINFromPipe(t *testing.T) {
	long := strings.Repeat("9", unseal.MaxPIN)
	tests := []struct {
		input, want, err string
	}{
		{"1234\n", "1234", ""},
		{"1234\r\n", "1234", ""},
		{"1234", "1234", ""},
		{"12 34\nsecond line\n", "12 34", ""},
		{long + "\n", long, ""},
		{long + "9\n", "", "longer than"},
		{"", "", "no PIN given"},
		{"\n", "", "no PIN given"},
	}
	for _, tc := range tests {
		pin, err := readPIN(context.Background(), pipeWith(t, tc.input, false), io.Discard, "PIN: ")
		switch {
		case tc.err == "" && (err != nil || pin != tc.want):
			t.Errorf("readPIN(%.12q) = %.12q, %v; want %.12q", tc.input, pin, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("readPIN(%.12q) = %v, want an error with %q", tc.input, err, tc.err)
		}
	}
}

// An interrupt (the context's end) stops a readPIN that waits for input.
func TestReadPINInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := readPIN(ctx, pipeWith(t, "", true), io.Discard, "PIN: ")
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("readPIN = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("readPIN did not stop")
	}
}
