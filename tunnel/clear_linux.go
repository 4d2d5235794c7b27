package tunnel

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/oevpn/oevpn/internal/ipview"
)

// rawClearPath sends packets through raw IP sockets (IPPROTO_RAW: the
// packet carries its own header) marked so that policy routing sends them
// out of the physical interface instead of back into the TUN.
type rawClearPath struct {
	fd4, fd6 int
}

// NewClearPath opens the raw sockets of the clear path, which leave by o.
// It needs CAP_NET_RAW.
func NewClearPath(o Outside) (ClearPath, error) {
	c := &rawClearPath{fd4: -1, fd6: -1}
	for _, f := range []struct {
		fd      *int
		family  int
		network string
	}{{&c.fd4, unix.AF_INET, "ip4"}, {&c.fd6, unix.AF_INET6, "ip6"}} {
		fd, err := unix.Socket(f.family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			if f.family == unix.AF_INET6 && err == unix.EAFNOSUPPORT {
				continue // no IPv6 on this host
			}
			c.Close()
			return nil, fmt.Errorf("tunnel: clear path: raw socket: %w", err)
		}
		*f.fd = fd
		if err := o.apply(f.network, uintptr(fd)); err != nil {
			c.Close()
			return nil, fmt.Errorf("tunnel: clear path: %w", err)
		}
	}
	return c, nil
}

func (c *rawClearPath) Send(pkt []byte) error {
	if len(pkt) == 0 {
		return ipview.ErrTruncated
	}
	switch ipview.Version(pkt) {
	case 4:
		if len(pkt) < 20 {
			return ipview.ErrTruncated
		}
		sa := &unix.SockaddrInet4{Addr: [4]byte(pkt[16:20])}
		return unix.Sendto(c.fd4, pkt, 0, sa)
	case 6:
		if len(pkt) < 40 {
			return ipview.ErrTruncated
		}
		if c.fd6 < 0 {
			return ErrNoClearPath
		}
		return unix.Sendto(c.fd6, pkt, 0, &unix.SockaddrInet6{Addr: [16]byte(pkt[24:40])})
	}
	return ipview.ErrVersion
}

func (c *rawClearPath) Close() error {
	for _, fd := range []int{c.fd4, c.fd6} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	c.fd4, c.fd6 = -1, -1
	return nil
}
