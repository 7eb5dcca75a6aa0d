// Package safedir checks that a directory is one no other user can change: where signerd keeps a file
// or a socket that another user must not be able to make first, replace or bind in its place (a lock
// file, a token PIN, the unseal socket). signerd's token lock directory, the unseal socket's directory
// and `signerd dev`'s directory are held to the same rule.
package safedir

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Check reports whether dir is safe: a directory, not a symbolic link, that neither its group nor
// others may write to, below directories none of which lets another user replace it. A directory above
// must be root's or this process's user's (its owner can always change it), and neither its group nor
// others may write to it, unless it is sticky, as /tmp is, and the entry below it on the path is root's
// or this user's: others can neither remove nor rename that. The
// directories above dir are checked as written and with symbolic links resolved. Check returns dir's
// owner, for the caller to hold against whom it trusts.
func Check(dir string) (owner uint32, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	if err := checkAncestors(dir); err != nil {
		return 0, err
	}
	fi, err := os.Lstat(dir)
	switch {
	case err != nil:
		return 0, err
	case !fi.IsDir():
		return 0, fmt.Errorf("%s is not a directory (a symbolic link is refused)", dir)
	case fi.Mode().Perm()&0o022 != 0:
		return 0, fmt.Errorf("directory %s is writable by its group or others (mode %v)", dir, fi.Mode().Perm())
	}
	return Owner(fi)
}

// CheckOwn is Check for a directory that must be this process's effective user's.
func CheckOwn(dir string) error {
	owner, err := Check(dir)
	if err != nil {
		return err
	}
	if self := os.Geteuid(); int(owner) != self {
		return fmt.Errorf("directory %s belongs to uid %d, not to this user (uid %d)", dir, owner, self)
	}
	return nil
}

// checkAncestors checks the directories above dir: none may let another user put a directory of their
// own in dir's place. (/tmp/signerd, made first by someone else, 0700, passes every check of its own.)
func checkAncestors(dir string) error {
	chains := [][]string{ancestors(dir)}
	if real, err := filepath.EvalSymlinks(dir); err == nil && real != dir {
		chains = append(chains, ancestors(real))
	}
	for _, chain := range chains {
		for i, a := range chain[1:] {
			fi, err := os.Stat(a)
			if err != nil {
				return err
			}
			if owner, err := Owner(fi); err != nil || !trusted(owner) {
				return fmt.Errorf("%s is below %s, which belongs to uid %d: that user could replace it", dir, a, owner)
			}
			if fi.Mode().Perm()&0o022 == 0 {
				continue
			}
			below := chain[i] // chain runs from dir upwards
			if fi.Mode()&fs.ModeSticky == 0 {
				return fmt.Errorf("%s is below %s, which its group or others may write to (mode %v)", dir, a, fi.Mode().Perm())
			}
			if bi, err := os.Lstat(below); err == nil {
				if owner, err := Owner(bi); err == nil && trusted(owner) {
					continue
				}
			}
			return fmt.Errorf("%s is in %s, which others may write to (mode %v), and is neither root's nor this user's: another user may have made it", below, a, fi.Mode().Perm()|fi.Mode()&fs.ModeSticky)
		}
	}
	return nil
}

// trusted reports whether uid is root's or this process's effective user's.
func trusted(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// ancestors returns dir and the directories above it, up to the root, in that order.
func ancestors(dir string) []string {
	out := []string{filepath.Clean(dir)}
	for d := out[0]; d != filepath.Dir(d); {
		d = filepath.Dir(d)
		out = append(out, d)
	}
	return out
}

// Owner returns the uid owning the file fi describes.
func Owner(fi fs.FileInfo) (uint32, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no owner", fi.Name())
	}
	return st.Uid, nil
}
