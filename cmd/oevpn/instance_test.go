//go:build !windows

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestListenControlMode binds the control socket with the most permissive
// umask there is: it must be 0600 as listenControl returns it, with nothing
// chmodded afterwards (a plain net.Listen gives 0777 here).
func TestListenControlMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := prepareControlDir(dir, -1); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "oevpn.sock")
	ln, err := listenControl(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	// A file that is not a socket is never removed to make room.
	os.Remove(path)
	os.WriteFile(path, nil, 0o600)
	if _, err := listenControl(path, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listenControl over a regular file: %v", err)
	}
}

// TestPrepareControlDir refuses control directories someone else could
// swap the socket or the lock in.
func TestPrepareControlDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	real := mk("real", 0o700)
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	other := mk("other", 0o700)
	if os.Geteuid() == 0 {
		os.Chown(other, 65534, 65534)
	}
	for _, tc := range []struct {
		dir  string
		want string // "" for accepted
	}{
		{real, ""},
		{filepath.Join(base, "new"), ""},
		{link, "symbolic link"},
		{mk("groupw", 0o770), "writable by group or others"},
		{mk("worldw", 0o1777), "writable by group or others"},
		{other, "not owned by"},
	} {
		if tc.dir == other && os.Geteuid() != 0 {
			continue
		}
		err := prepareControlDir(tc.dir, -1)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.dir, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error saying %q", tc.dir, err, tc.want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(base, "new")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created control directory: %v %v, want mode 0700", fi.Mode(), err)
	}
}

// TestInstanceLock takes the lock twice: the second names the device and
// the holder's pid.
func TestInstanceLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "oevpn.sock")
	l, err := lockInstance(path, "oevpn7")
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockInstance(path, "oevpn7")
	if want := "oevpn is already running for oevpn7 (pid " + strconv.Itoa(os.Getpid()) + ")"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	l.Close()
	l, err = lockInstance(path, "oevpn7")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l.Close()
}
