//go:build !windows

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// prepareControlDir makes sure dir, where the control socket and the
// instance lock live, is ours alone: it creates it mode 0700 if it is not
// there, and refuses one that is a symbolic link, not owned by our user,
// or writable by group or others (whoever can write there can replace the
// socket or the lock). With a control group (gid >= 0) the directory is
// made that group's, mode 0750, so that its members reach the socket.
func prepareControlDir(dir string, gid int) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("control directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("control directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control directory: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("control directory %s is a symbolic link: refusing it (use a directory of its own)", dir)
	case !fi.IsDir():
		return fmt.Errorf("control directory %s is not a directory", dir)
	case st == nil || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("control directory %s is not owned by uid %d: refusing it", dir, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("control directory %s is writable by group or others (mode %04o): refusing it (chmod go-w, or remove it and let oevpn create it)", dir, fi.Mode().Perm())
	}
	if gid < 0 {
		return nil
	}
	// Through a descriptor of the directory itself, never a path that
	// could be swapped for a link meanwhile.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("control directory: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, -1, gid); err != nil {
		return fmt.Errorf("control directory: giving it to group %d: %w", gid, err)
	}
	if err := unix.Fchmod(fd, 0o750); err != nil {
		return fmt.Errorf("control directory: %w", err)
	}
	return nil
}

// lockFile takes an exclusive lock on the file at path (flock), creating
// it, and writes our pid into it; errLocked if another process holds it.
func lockFile(path string) (*instanceLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(b[:n]))
			if _, err := strconv.Atoi(pid); err != nil {
				pid = "unknown"
			}
			return nil, errLocked{pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &instanceLock{f: f}, nil
}

// Close releases the lock.
func (l *instanceLock) Close() error { return l.f.Close() }

// listenControl creates the control socket mode 0600 from the start (the
// umask is 0177 while it is bound; the directory is ours and 0700 anyway),
// or 0660 and the control group's with one (gid >= 0). We hold the
// instance lock, so a socket there is a dead run's.
func listenControl(path string, gid int) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		os.Remove(path)
	}
	mask := 0o177
	if gid >= 0 {
		mask = 0o117
	}
	old := unix.Umask(mask)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // we remove it ourselves
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("control socket: giving it to group %d: %w", gid, err)
		}
	}
	return ln, nil
}

// peerCredentials is true where peerUID works.
const peerCredentials = true
