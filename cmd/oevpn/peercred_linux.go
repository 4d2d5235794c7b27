package main

import "golang.org/x/sys/unix"

// peerCred returns the credentials of the process at the other end of the
// unix socket fd (SO_PEERCRED: its user and primary group as it
// connected).
func peerCred(fd uintptr) (uid int, gids []int, err error) {
	c, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, nil, err
	}
	return int(c.Uid), []int{int(c.Gid)}, nil
}
