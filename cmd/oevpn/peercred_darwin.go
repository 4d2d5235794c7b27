package main

import "golang.org/x/sys/unix"

// peerUID returns the effective user id of the process at the other end of
// the unix socket fd (LOCAL_PEERCRED, getpeereid(3)).
func peerUID(fd uintptr) (int, error) {
	c, err := unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(c.Uid), nil
}
