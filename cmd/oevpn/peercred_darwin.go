package main

import "golang.org/x/sys/unix"

// peerCred returns the credentials of the process at the other end of the
// unix socket fd (LOCAL_PEERCRED, as getpeereid(3)): its effective user and
// its groups.
func peerCred(fd uintptr) (uid int, gids []int, err error) {
	c, err := unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, nil, err
	}
	for _, g := range c.Groups[:min(int(c.Ngroups), len(c.Groups))] {
		gids = append(gids, int(g))
	}
	return int(c.Uid), gids, nil
}
