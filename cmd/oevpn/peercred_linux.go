package main

import "golang.org/x/sys/unix"

// peerUID returns the user id of the process at the other end of the unix
// socket fd (SO_PEERCRED: as it was when it connected).
func peerUID(fd uintptr) (int, error) {
	c, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(c.Uid), nil
}
