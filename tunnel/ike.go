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

// InstallChild installs a negotiated Child SA, known from then on by its
// inbound SPI.
func (e *Engine) InstallChild(c *ike.ChildSA) error {
	_, err := e.Install(PairConfig{Peer: c.Peer, Local: c.Local, Remote: c.Remote, Out: c.Out, In: c.In, Deferred: c.Deferred,
		Auth: c.PeerAuthMethod(), Unauthenticated: c.PeerAuthMethod() == "null"})
	if err != nil {
		return fmt.Errorf("installing Child SA: %w", err)
	}
	return nil
}

// RemoveChild removes the Child SA installed by InstallChild whose
// inbound SPI is spi.
func (e *Engine) RemoveChild(spi uint32) {
	if p := e.pairBySPI(spi); p != nil {
		e.Remove(p)
	}
}

// RetireChild removes the Child SA whose inbound SPI is spi, which a rekey
// replaced; its inbound SA accepts packets for linger more (see
// Engine.Retire).
func (e *Engine) RetireChild(spi uint32, linger time.Duration) {
	if p := e.pairBySPI(spi); p != nil {
		e.Retire(p, linger)
	}
}

// ChildInPackets returns how many packets the Child SA whose inbound SPI
// is spi accepted.
func (e *Engine) ChildInPackets(spi uint32) uint64 {
	if p := e.pairBySPI(spi); p != nil {
		return p.In.Counters().Packets
	}
	return 0
}

// pairBySPI returns the installed pair whose inbound SPI is spi, or nil.
func (e *Engine) pairBySPI(spi uint32) *SAPair {
	p, _ := e.spis.Lookup(spi)
	return p
}

// SendKeepalive sends a NAT-keepalive (one octet 0xFF) from the NAT-T port.
func (e *Engine) SendKeepalive(to netip.AddrPort) error { return e.sendNATT([]byte{0xff}, to) }
