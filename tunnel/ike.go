package tunnel

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/oevpn/oevpn/ike"
)

// The engine is the IKE daemon's datapath.
var _ ike.Datapath = (*Engine)(nil)

// ReserveSPI allocates an unused inbound SPI for a Child SA being
// negotiated; packets for it are dropped until InstallChild.
func (e *Engine) ReserveSPI() (uint32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.spis.Allocate(nil)
}

// ReleaseSPI frees a reserved SPI that was never installed.
func (e *Engine) ReleaseSPI(spi uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.spis.Lookup(spi); ok && p == nil {
		e.spis.Remove(spi)
	}
}

// InstallChild installs a negotiated Child SA.
func (e *Engine) InstallChild(c *ike.ChildSA) error {
	p, err := e.Install(PairConfig{Peer: c.Peer, Local: c.Local, Remote: c.Remote, Out: c.Out, In: c.In, Deferred: c.Deferred,
		Unauthenticated: c.PeerAuthMethod() == "null", Owner: c})
	if err != nil {
		return fmt.Errorf("installing Child SA: %w", err)
	}
	c.Handle = p
	return nil
}

// RemoveChild removes a Child SA installed by InstallChild.
func (e *Engine) RemoveChild(c *ike.ChildSA) {
	if p, ok := c.Handle.(*SAPair); ok {
		e.Remove(p)
	}
}

// RetireChild removes a Child SA that a rekey replaced; its inbound SA
// accepts packets for linger more (see Engine.Retire).
func (e *Engine) RetireChild(c *ike.ChildSA, linger time.Duration) {
	if p, ok := c.Handle.(*SAPair); ok {
		e.Retire(p, linger)
	}
}

// ChildInPackets returns how many packets a Child SA accepted.
func (e *Engine) ChildInPackets(c *ike.ChildSA) uint64 {
	if p, ok := c.Handle.(*SAPair); ok {
		return p.In.Counters().Packets
	}
	return 0
}

// SendKeepalive sends a NAT-keepalive (one octet 0xFF) from the NAT-T port.
func (e *Engine) SendKeepalive(to netip.AddrPort) error { return e.sendNATT([]byte{0xff}, to) }
