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

// SetSAEventHandler sets (or replaces) the receiver of SA lifetime events.
func (e *Engine) SetSAEventHandler(f func(*SAPair, esp.Event)) { e.onSAEvent.Store(&f) }

// SetIKEHandler sets (or replaces) the receiver of IKE messages, for a
// control plane created after the engine.
func (e *Engine) SetIKEHandler(f func(msg []byte, from netip.AddrPort, to netip.Addr, natt bool)) {
	e.onIKE.Store(&f)
}

// SetUnknownSPIHandler sets the receiver of ESP packets whose SPI is not
// allocated (not an SA being negotiated either): the SPI and the sender. It
// is called on the datapath for each such packet and must neither block
// nor allocate (ike.Daemon.UnknownESP rate-limits first).
func (e *Engine) SetUnknownSPIHandler(f func(spi uint32, from netip.AddrPort)) {
	e.onUnknownSPI.Store(&f)
}

// SetProbeHandler sets the receiver of AutoVPN probe datagrams that reach
// the NAT-T port (preamble included; msg is valid during the call only):
// the sender and the local address they were sent to.
func (e *Engine) SetProbeHandler(f func(msg []byte, from netip.AddrPort, to netip.Addr)) {
	e.onProbe.Store(&f)
}

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
