package tunnel

import (
	"net/netip"
	"testing"

	"github.com/oevpn/oevpn/esp"
)

// TestNodeSAEventsReachIKE: the datapath's lifetime events of a
// negotiated pair reach the IKE daemon through the node's Control, which
// names the Child SA by its inbound SPI: a soft event rekeys it, and at a
// hard one the daemon deletes it and tells the peer, which removes its
// half (the engine alone would only drop its own).
func TestNodeSAEventsReachIKE(t *testing.T) {
	a, b := nodePair(t)
	addrB := netip.MustParseAddr("10.97.0.2")
	var p *SAPair
	waitFor(t, func() bool { p = a.Engine().PairFor(addrB); return p != nil }, "A's Child SA")
	first := p.In.SPI()
	a.eng.events <- saEvent{p, esp.EventSoftExpire}
	waitFor(t, func() bool {
		p = a.Engine().PairFor(addrB)
		return p != nil && p.In.SPI() != first && p.ready.Load()
	}, "the Child SA rekeyed on its soft lifetime")
	second := p.In.SPI()
	// B's half: its outbound SA sends to A's inbound SPI.
	bHas := func(spi uint32) bool {
		for _, q := range b.Engine().Pairs() {
			if q.Out.SPI() == spi {
				return true
			}
		}
		return false
	}
	waitFor(t, func() bool { return bHas(second) }, "B's half of the rekeyed Child SA")
	a.eng.events <- saEvent{p, esp.EventHardExpire}
	waitFor(t, func() bool { return !bHas(second) }, "B to remove its half of the Child SA A deleted at its hard lifetime")
	for _, sa := range a.IKE().SAs() {
		for _, c := range sa.Children {
			if c.In.SPI == second {
				t.Fatalf("A's daemon still lists the Child SA past its hard lifetime: %#x", second)
			}
		}
	}
}
