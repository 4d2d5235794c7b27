package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/windows"
)

// prepareControlDir creates dir. On Windows the default is the user's own
// temporary directory, whose ACL keeps other users out; there is no
// control group (up refuses one).
func prepareControlDir(dir string, _ int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("control directory: %w", err)
	}
	return nil
}

// lockFile takes an exclusive lock on the first byte of the file at path
// (LockFileEx), creating it, and writes our pid after that byte, where
// others may read it; errLocked if another process holds it.
func lockFile(path string) (*instanceLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 1)
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			pid := strings.TrimSpace(string(b[:n]))
			if _, err := strconv.Atoi(pid); err != nil {
				pid = "unknown"
			}
			return nil, errLocked{pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f.Truncate(1)
	f.Seek(1, io.SeekStart)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return &instanceLock{f: f}, nil
}

// Close releases the lock.
func (l *instanceLock) Close() error { return l.f.Close() }

// listenControl creates the control socket.
func listenControl(path string, _ int) (net.Listener, error) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}

// peerCredentials is false: Windows has no peer credentials on AF_UNIX
// sockets; the directory's ACL decides who connects.
const peerCredentials = false

func peerCred(uintptr) (int, []int, error) { return -1, nil, errors.ErrUnsupported }
