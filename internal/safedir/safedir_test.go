package safedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mkdir makes path with exactly mode (past the umask, with the sticky bit).
func mkdir(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheck(t *testing.T) {
	base := t.TempDir()
	sticky := mkdir(t, filepath.Join(base, "tmp"), os.ModeSticky|0o777)
	open := mkdir(t, filepath.Join(base, "open"), 0o777)
	group := mkdir(t, filepath.Join(base, "group"), 0o775)
	mine := mkdir(t, filepath.Join(sticky, "mine"), 0o700)
	readable := mkdir(t, filepath.Join(base, "readable"), 0o755)
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(mine, link); err != nil {
		t.Fatal(err)
	}
	openLink := filepath.Join(base, "open-link")
	if err := os.Symlink(open, openLink); err != nil {
		t.Fatal(err)
	}
	below := mkdir(t, filepath.Join(open, "private"), 0o700)
	mkdir(t, filepath.Join(below, "sub"), 0o700)

	tests := []struct {
		dir  string
		want string // in the error; "" for none
	}{
		{mine, ""},
		{readable, ""},
		{group, "is writable by its group or others (mode -rwxrwxr-x)"},
		{sticky, "is writable by its group or others"},
		{file, "is not a directory"},
		{link, "a symbolic link is refused"},
		{below, "is below " + open + ", which its group or others may write to"},
		{filepath.Join(openLink, "private", "sub"), "which its group or others may write to"},
		{filepath.Join(base, "missing"), "no such file or directory"},
	}
	for _, tc := range tests {
		owner, err := Check(tc.dir)
		switch {
		case tc.want == "" && (err != nil || int(owner) != os.Geteuid()):
			t.Errorf("Check(%s) = %d, %v; want %d, nil", tc.dir, owner, err, os.Geteuid())
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Check(%s) = %v, want an error with %q", tc.dir, err, tc.want)
		}
	}
	if err := CheckOwn(mine); err != nil {
		t.Errorf("CheckOwn(%s) = %v, want nil", mine, err)
	}

	// A relative path is checked from the root: the directories above the working one count too.
	t.Chdir(below)
	if _, err := Check("sub"); err == nil || !strings.Contains(err.Error(), "which its group or others may write to") {
		t.Errorf("Check(relative path below an open directory) = %v, want it refused", err)
	}

	if os.Geteuid() != 0 {
		t.Skip("the rest needs root, to give directories to another user")
	}
	const mallory = 65534
	theirs := mkdir(t, filepath.Join(sticky, "theirs"), 0o700)
	sub := mkdir(t, filepath.Join(theirs, "sub"), 0o700)
	for _, dir := range []string{theirs, sub} {
		if err := os.Chown(dir, mallory, mallory); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckOwn(theirs); err == nil || !strings.Contains(err.Error(), "is neither root's nor this user's: another user may have made it") {
		t.Errorf("CheckOwn(mallory's directory in a sticky one) = %v, want it refused as possibly another user's", err)
	}
	if _, err := Check(sub); err == nil || !strings.Contains(err.Error(), "which belongs to uid 65534: that user could replace it") {
		t.Errorf("Check(a directory in mallory's) = %v, want it refused: mallory could replace it", err)
	}
	if err := os.Chown(theirs, 0, 0); err != nil {
		t.Fatal(err)
	}
	if owner, err := Check(sub); err != nil || owner != mallory {
		t.Errorf("Check(mallory's directory in root's in a sticky one) = %d, %v; want %d, nil", owner, err, mallory)
	}
	if err := CheckOwn(sub); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534, not to this user") {
		t.Errorf("CheckOwn(mallory's directory) = %v, want it refused as another user's", err)
	}
}
