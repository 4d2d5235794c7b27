package tunnel

import (
	"errors"
	"log/slog"
	"net/netip"
)

// DefaultMaxBypass is the number of bypass routes an OS device holds at
// most when OSConfig.MaxBypass is 0.
const DefaultMaxBypass = 1024

// ErrBypassFull is returned by AddBypass when MaxBypass routes exist: the
// destination's packets keep passing through oevpn's clear path.
var ErrBypassFull = errors.New("tunnel: bypass route table full")

// OSConfig configures an OS TUN device and the routing that sends traffic
// into it.
type OSConfig struct {
	Name string
	MTU  int
	// Addresses are assigned to the device (optional in host mode, where
	// the traffic selectors are the host's own addresses).
	Addresses []netip.Prefix
	// Routes are sent into the device, each with its preferred source
	// address (invalid: let the kernel choose).
	Routes []Route
	// Mark is the SO_MARK of oevpn's own sockets. When not 0, routes go
	// into Table and a policy-routing rule sends every packet without
	// the mark there, so oevpn's own packets to a peer whose address is
	// routed into the TUN still leave by the physical interface.
	Mark  uint32
	Table int
	// Protected are the prefixes of the hosts an AutoVPN gateway stands in
	// front of: all traffic from and to them (except oevpn's own, marked,
	// and what leaves the TUN) is routed into the device, through table
	// Table+1. Needs Mark.
	Protected []netip.Prefix
	// ProtectedHost is set in host mode: the protected addresses are
	// this host's own, and its own traffic goes through the device too.
	// In gateway mode only forwarded traffic does.
	ProtectedHost bool
	// MaxBypass bounds the bypass routes (destinations sent around the
	// device while they are in the clear): destinations come from
	// traffic, so from anyone. 0 means DefaultMaxBypass.
	MaxBypass int
	// Logger receives what is set up and removed; nil discards.
	Logger *slog.Logger
}

// Route is one prefix routed into the device.
type Route struct {
	Prefix netip.Prefix
	Src    netip.Addr
}

func (c *OSConfig) maxBypass() int {
	if c.MaxBypass > 0 {
		return c.MaxBypass
	}
	return DefaultMaxBypass
}
