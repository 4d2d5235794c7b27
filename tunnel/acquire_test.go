package tunnel

import (
	"net/netip"
	"testing"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
)

// TestTrapHoldRacesInstall: a packet that the outbound routine routed to a
// trap on a table loaded before the trap's pair was installed, and that
// reaches the trap after the pair flushed it, is sent through the pair:
// not held until the hold times out, and no second acquire for a trap
// that has its SA. A packet for a trap that was removed is decided again
// too, not held in a trap no one will flush.
func TestTrapHoldRacesInstall(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.98.0.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.98.0.2"))
	acq := make(chan string, 16)
	a.route(func(c *testControl) { c.acquire = func(name string) { acq <- name } })
	a.eng.SetTrap("b", hostSel(a.addr), hostSel(b.addr))
	l, err := b.net.ListenUDPAddrPort(netip.AddrPortFrom(b.addr, 9999))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sendUDP(t, a, b.addr, 1)
	if got := <-acq; got != "b" {
		t.Fatalf("acquire %q", got)
	}
	stale := a.eng.routes.Load()
	connect(t, a, b, esp.AESGCM128)

	late := ipv4Packet(ipview.ProtoUDP, a.addr, b.addr, 4444, 9999, []byte("late"))
	p, err := ipview.Parse(late)
	if err != nil {
		t.Fatal(err)
	}
	a.eng.unrouted(stale, &p, late)
	readDatagrams(t, l, "held", "late")
	noneOn(t, acq, "a second acquire for a trap that has its SA")
	if st := a.eng.Stats(); st.TxPackets != 2 || st.NoSA != 0 {
		t.Fatalf("stats %+v", st)
	}

	// A trap removed under a packet: it leaves by what the newest table
	// says (here: no SA, no class), not by the removed trap's stage.
	c := netip.MustParseAddr("10.98.0.3")
	a.eng.SetTrap("c", hostSel(a.addr), hostSel(c))
	stale = a.eng.routes.Load()
	tr := a.eng.traps["c"]
	a.eng.RemoveTrap("c")
	late = ipv4Packet(ipview.ProtoUDP, a.addr, c, 4444, 9999, []byte("late"))
	if p, err = ipview.Parse(late); err != nil {
		t.Fatal(err)
	}
	if a.eng.hold(tr, &p, late) {
		t.Fatal("a packet was held by a removed trap")
	}
	a.eng.unrouted(stale, &p, late)
	noneOn(t, acq, "an acquire for a removed trap")
	if st := a.eng.Stats(); st.NoSA != 1 {
		t.Fatalf("stats %+v, want the late packet counted without an SA", st)
	}
}
