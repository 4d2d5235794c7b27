package main

import (
	"fmt"
	"os"
)

// instanceLock is held by the running oevpn of a control socket for as
// long as the process lives: a second one with the same socket (the same
// configuration) stops before it touches anything.
type instanceLock struct{ f *os.File }

// lockInstance takes the instance lock of the control socket at path, the
// file path+".lock" in a directory prepareControlDir checked, and writes
// our pid into it. If another process holds it, the error names the device
// and that process.
func lockInstance(path, device string) (*instanceLock, error) {
	l, err := lockFile(path + ".lock")
	if holder, ok := err.(errLocked); ok {
		return nil, fmt.Errorf("oevpn is already running for %s (pid %s); its control socket is %s", device, holder.pid, path)
	}
	return l, err
}

// errLocked says which process holds a lock file.
type errLocked struct{ pid string }

func (e errLocked) Error() string { return "locked by pid " + e.pid }
