package tunnel

import (
	"net"

	"golang.org/x/sys/unix"
)

func (o Outside) setMark(uintptr) error { return nil }

// bindToInterface scopes the socket to ifi: its packets leave by ifi
// whatever the routing table says (IP_BOUND_IF, IPV6_BOUND_IF).
func bindToInterface(fd uintptr, ifi *net.Interface, v6 bool) error {
	if v6 {
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_BOUND_IF, ifi.Index)
	}
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BOUND_IF, ifi.Index)
}
