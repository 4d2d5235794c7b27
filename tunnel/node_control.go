package tunnel

import (
	"net/netip"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
)

// controlPlane is the node's Control: it routes what the datapath hands
// over to the IKE daemon, opportunism and AutoVPN (each nil when off).
// It is set on the engine once they are all started, and not changed.
type controlPlane struct {
	ike *ike.Daemon
	oe  *Opportunism
	av  *AutoVPN
}

// IKE implements Control.
func (c *controlPlane) IKE(msg []byte, from netip.AddrPort, to netip.Addr, natt bool) bool {
	if c.ike == nil {
		return false
	}
	c.ike.HandlePacketTo(msg, from, to, natt)
	return true
}

// Probe implements Control.
func (c *controlPlane) Probe(msg []byte, from netip.AddrPort, to netip.Addr) bool {
	if c.av == nil {
		return false
	}
	c.av.gw.HandleUDP(msg, from, to)
	return true
}

// UnknownSPI implements Control.
func (c *controlPlane) UnknownSPI(spi uint32, from netip.AddrPort) {
	if c.ike != nil {
		c.ike.UnknownESP(spi, from)
	}
}

// Acquire implements Control.
func (c *controlPlane) Acquire(name string) {
	if c.ike != nil {
		c.ike.Acquire(name)
	}
}

// Opportunistic implements Control.
func (c *controlPlane) Opportunistic(src, dst netip.Addr, class policy.Class) {
	if c.oe != nil {
		c.oe.acquire(src, dst, class)
	}
}

// Keyed implements Control.
func (c *controlPlane) Keyed(a netip.Addr) bool { return c.oe != nil && c.oe.keyed(a) }

// SAEvent implements Control: the daemon knows its Child SAs by inbound
// SPI (and ignores those of static pairs).
func (c *controlPlane) SAEvent(p *SAPair, ev esp.Event) {
	if c.ike != nil {
		c.ike.ChildEvent(p.In.SPI(), ev == esp.EventHardExpire)
	}
}
