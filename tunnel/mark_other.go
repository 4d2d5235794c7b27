//go:build !linux

package tunnel

import (
	"net"
	"net/netip"
)

// MarkedDialer returns a plain dialer: only Linux marks sockets.
func MarkedDialer(mark uint32) *net.Dialer { return &net.Dialer{} }

// SourceFor returns an invalid address: the OS picks the source.
func SourceFor(dst netip.Addr, mark uint32) netip.Addr { return netip.Addr{} }
