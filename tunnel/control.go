package tunnel

import (
	"net/netip"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/policy"
)

// SetClasses sets the connection classes for traffic no SA or trap covers
// (and bars the unauthenticated pairs of addresses now private).
func (e *Engine) SetClasses(c *policy.Classes) {
	e.classes.Store(c)
	e.mu.Lock()
	e.reviewAllUnauthLocked()
	e.mu.Unlock()
}

// Classes returns the connection classes, or nil.
func (e *Engine) Classes() *policy.Classes { return e.classes.Load() }

// Control is the control plane as the datapath sees it: what the engine
// hands over instead of handling itself. It is given once, in
// Config.Control or with SetControl (by the Node, which routes it to the
// IKE daemon, opportunism and AutoVPN); an engine without one drops what
// it would hand over. The methods marked "datapath" run on the packet
// routines: they must neither block nor allocate.
type Control interface {
	// IKE receives an IKE message (without the non-ESP marker), the
	// address it came from and the local address it was sent to (invalid
	// if the transport does not tell); natt tells whether it came on the
	// NAT-T port. msg is valid during the call only. It reports whether
	// anything took the message (datapath).
	IKE(msg []byte, from netip.AddrPort, to netip.Addr, natt bool) bool
	// Probe receives an AutoVPN probe datagram that reached the NAT-T
	// port (preamble included; valid during the call only), the sender
	// and the local address it was sent to. It reports whether anything
	// took it (datapath).
	Probe(msg []byte, from netip.AddrPort, to netip.Addr) bool
	// UnknownSPI is told of an ESP packet whose SPI was never allocated
	// (not an SA being negotiated either): the peer may have lost our SA
	// (datapath; the receiver rate-limits).
	UnknownSPI(spi uint32, from netip.AddrPort)
	// Acquire is told that the trap name holds a packet and no
	// negotiation is under way (datapath).
	Acquire(name string)
	// Opportunistic is told that dst, of an opportunistic class (private,
	// private-or-clear), has traffic and no SA (datapath). It answers
	// later with Engine.Decide, or by installing an SA pair that covers
	// dst (which sends the held packets through it).
	Opportunistic(src, dst netip.Addr, class policy.Class)
	// Keyed reports whether a is known to publish a key: such an address
	// is never carried by an unauthenticated SA. Call Engine.Reconsider
	// when the answer for an address changes.
	Keyed(a netip.Addr) bool
	// SAEvent is told of a lifetime event of pair p, on the engine's
	// timer goroutine. After a hard expiry the engine removes the pair
	// itself.
	SAEvent(p *SAPair, ev esp.Event)
}

// NopControl is a Control that takes nothing: an engine on its own.
// Embed it to implement only some of the methods.
type NopControl struct{}

// IKE implements Control; it takes nothing.
func (NopControl) IKE([]byte, netip.AddrPort, netip.Addr, bool) bool { return false }

// Probe implements Control; it takes nothing.
func (NopControl) Probe([]byte, netip.AddrPort, netip.Addr) bool { return false }

// UnknownSPI implements Control.
func (NopControl) UnknownSPI(uint32, netip.AddrPort) {}

// Acquire implements Control.
func (NopControl) Acquire(string) {}

// Opportunistic implements Control.
func (NopControl) Opportunistic(netip.Addr, netip.Addr, policy.Class) {}

// Keyed implements Control; it knows no key.
func (NopControl) Keyed(netip.Addr) bool { return false }

// SAEvent implements Control.
func (NopControl) SAEvent(*SAPair, esp.Event) {}

// controlRef holds the Control behind one atomic pointer.
type controlRef struct{ Control }

// SetControl sets the control plane, for one created after the engine
// (the Node's); nil means none.
func (e *Engine) SetControl(c Control) {
	if c == nil {
		c = NopControl{}
	}
	e.ctl.Store(&controlRef{c})
}

// control returns the control plane: one atomic load.
func (e *Engine) control() Control { return e.ctl.Load().Control }

// sendNATT sends one datagram from the NAT-T port.
func (e *Engine) sendNATT(msg []byte, to netip.AddrPort) error {
	ep, err := e.natt.ParseEndpoint(netip.AddrPortFrom(to.Addr().Unmap(), to.Port()).String())
	if err != nil {
		return err
	}
	return e.natt.Send([][]byte{msg}, ep)
}

// SendIKE sends an IKE message to a peer from the IKE port, or from the
// NAT-T port behind the non-ESP marker when natt is set (RFC 3948 §2.2).
func (e *Engine) SendIKE(msg []byte, to netip.AddrPort, natt bool) error {
	bind := e.ike
	if natt {
		bind = e.natt
		msg = append(make([]byte, esp.NonESPMarkerLen, esp.NonESPMarkerLen+len(msg)), msg...)
	}
	ep, err := bind.ParseEndpoint(netip.AddrPortFrom(to.Addr().Unmap(), to.Port()).String())
	if err != nil {
		return err
	}
	return bind.Send([][]byte{msg}, ep)
}
