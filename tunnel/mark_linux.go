package tunnel

import (
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkedDialer returns a dialer whose sockets carry SO_MARK mark, so that
// policy routing keeps them out of the TUN (oevpn's own DNS queries).
func MarkedDialer(mark uint32) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// SourceFor returns the source address the host's own routes (those a
// socket marked with mark follows, not the TUN) pick for dst, or an invalid
// address. It sends nothing: a UDP connect only looks the route up.
func SourceFor(dst netip.Addr, mark uint32) netip.Addr {
	c, err := MarkedDialer(mark).Dial("udp", netip.AddrPortFrom(dst, 9).String())
	if err != nil {
		return netip.Addr{}
	}
	defer c.Close()
	ap, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return ap.Addr().Unmap()
}
