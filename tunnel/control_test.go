package tunnel

import (
	"net/netip"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/policy"
)

// testControl is a Control of functions, for tests that drive an engine
// without a node; a nil function takes nothing.
type testControl struct {
	ike        func(msg []byte, from netip.AddrPort, to netip.Addr, natt bool)
	unknownSPI func(spi uint32, from netip.AddrPort)
	acquire    func(name string)
	oe         func(src, dst netip.Addr, class policy.Class)
	keyed      func(netip.Addr) bool
	saEvent    func(*SAPair, esp.Event)
}

func (c *testControl) IKE(msg []byte, from netip.AddrPort, to netip.Addr, natt bool) bool {
	if c.ike == nil {
		return false
	}
	c.ike(msg, from, to, natt)
	return true
}

func (c *testControl) Probe([]byte, netip.AddrPort, netip.Addr) bool { return false }

func (c *testControl) UnknownSPI(spi uint32, from netip.AddrPort) {
	if c.unknownSPI != nil {
		c.unknownSPI(spi, from)
	}
}

func (c *testControl) Acquire(name string) {
	if c.acquire != nil {
		c.acquire(name)
	}
}

func (c *testControl) Opportunistic(src, dst netip.Addr, class policy.Class) {
	if c.oe != nil {
		c.oe(src, dst, class)
	}
}

func (c *testControl) Keyed(a netip.Addr) bool { return c.keyed != nil && c.keyed(a) }

func (c *testControl) SAEvent(p *SAPair, ev esp.Event) {
	if c.saEvent != nil {
		c.saEvent(p, ev)
	}
}

// route changes what te's engine hands its control plane: f edits a copy
// of the functions set so far, which then replaces them.
func (te *testEndpoint) route(f func(*testControl)) {
	c := te.ctl
	f(&c)
	te.ctl = c
	te.eng.SetControl(&c)
}
