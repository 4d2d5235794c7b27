package tunnel

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/oevpn/oevpn/internal/ipview"
)

// icmpSocket is a raw ICMPv4 socket: it sends ICMP messages (the kernel
// adds the IP header) marked to bypass the TUN, and receives a copy of
// every ICMP message addressed to this host.
type icmpSocket struct{ fd int }

func newICMPSocket(o Outside) (*icmpSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return nil, fmt.Errorf("tunnel: raw ICMP socket (needs CAP_NET_RAW): %w", err)
	}
	if err := o.apply("ip4", uintptr(fd)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tunnel: raw ICMP socket: %w", err)
	}
	// A receive timeout, so that the reader notices the socket closing.
	tv := unix.Timeval{Usec: 200000}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &icmpSocket{fd: fd}, nil
}

func (s *icmpSocket) send(dst netip.Addr, icmp []byte) error {
	return unix.Sendto(s.fd, icmp, 0, &unix.SockaddrInet4{Addr: dst.Unmap().As4()})
}

// receive reads one ICMP message: its sender, its destination and the
// ICMP part.
func (s *icmpSocket) receive(buf []byte) (src, dst netip.Addr, icmp []byte, err error) {
	n, _, err := unix.Recvfrom(s.fd, buf, 0)
	if err != nil {
		return src, dst, nil, err
	}
	h := ipview.IPv4(buf[:n])
	if n < ipview.IPv4MinimumSize || ipview.Version(h) != 4 || h.HeaderLength() > n {
		return src, dst, nil, fmt.Errorf("tunnel: short ICMP packet")
	}
	return h.Src(), h.Dst(), h.Payload(), nil
}

func (s *icmpSocket) close() error { return unix.Close(s.fd) }
