package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signerd/signerd/internal/cli"
)

// signerd dev refuses a directory another user could change, before it writes anything there: it
// would hold the token's PIN and keys.
func TestDevRefusesUnsafeDirectory(t *testing.T) {
	base := t.TempDir()
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o770); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{
		shared:                           "is writable by its group or others (mode -rwxrwx---); signerd dev keeps a PIN and keys there",
		filepath.Join(shared, "new-dev"): "which its group or others may write to",
		link:                             "a symbolic link is refused",
	} {
		code, stdout, stderr := runArgs(t, "dev", "--dir", dir, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
		if code != cli.ExitFailure || stdout != "" || !strings.HasPrefix(stderr, "signerd: dev: ") || !strings.Contains(stderr, want) {
			t.Errorf("signerd dev --dir %s = exit %d, stdout %q, stderr %q; want exit 1 and %q", dir, code, stdout, stderr, want)
		}
	}
	// The one trace: new-dev, made empty before it was checked.
	var found []string
	err := filepath.WalkDir(shared, func(path string, _ os.DirEntry, err error) error {
		found = append(found, strings.TrimPrefix(path, shared))
		return err
	})
	if err != nil || strings.Join(found, " ") != " /new-dev" {
		t.Errorf("signerd dev left %q in the directories it refused (%v), want only the empty new-dev", found, err)
	}
}
