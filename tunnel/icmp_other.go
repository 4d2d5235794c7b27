//go:build !linux

package tunnel

import (
	"errors"
	"net/netip"
)

type icmpSocket struct{}

func newICMPSocket(Outside) (*icmpSocket, error) {
	return nil, errors.New("tunnel: AutoVPN needs raw ICMP sockets, which only the Linux build has")
}

func (s *icmpSocket) send(dst netip.Addr, icmp []byte) error { return errors.New("unsupported") }
func (s *icmpSocket) receive(buf []byte) (src, dst netip.Addr, icmp []byte, err error) {
	return src, dst, nil, errors.New("unsupported")
}
func (s *icmpSocket) close() error { return nil }
