package tunnel

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/windows"
)

// The unicast-interface socket options of ws2ipdef.h.
const (
	sockoptIPUnicastIF   = 31
	sockoptIPv6UnicastIF = 31
)

func (o Outside) setMark(uintptr) error { return nil }

// bindToInterface makes the socket's unicast packets leave by ifi
// (IP_UNICAST_IF, IPV6_UNICAST_IF). For IPv4 Windows wants the index in
// network byte order.
func bindToInterface(fd uintptr, ifi *net.Interface, v6 bool) error {
	if v6 {
		return windows.SetsockoptInt(windows.Handle(fd), windows.IPPROTO_IPV6, sockoptIPv6UnicastIF, ifi.Index)
	}
	var be [4]byte
	binary.BigEndian.PutUint32(be[:], uint32(ifi.Index))
	return windows.SetsockoptInt(windows.Handle(fd), windows.IPPROTO_IP, sockoptIPUnicastIF, int(binary.NativeEndian.Uint32(be[:])))
}
