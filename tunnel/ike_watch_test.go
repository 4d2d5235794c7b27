package tunnel

import (
	"net/netip"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
)

// TestChildHeard: the engine tells when a Child SA last accepted ESP, to
// the received batch (dead-peer detection is due dpd after it), and the
// zero time before any.
func TestChildHeard(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.0.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.0.2"))
	ab, ba := connect(t, a, b, esp.AESGCM128)
	ca, cb := ab.In.SPI(), ba.In.SPI()
	if !b.eng.ChildHeard(cb).IsZero() {
		t.Fatal("heard before any packet")
	}
	before := time.Now()
	if err := ping(t, a, b.addr, 0); err != nil {
		t.Fatal(err)
	}
	for _, h := range []time.Time{b.eng.ChildHeard(cb), a.eng.ChildHeard(ca)} {
		if h.Before(before) || time.Since(h) > time.Second {
			t.Fatalf("last heard %v, the ping went at %v", h, before)
		}
	}
}

// TestLostChildSAProtectedInvalidSPI (issue 11 item 4), end to end: b's
// datapath loses the Child SA while both IKE SAs stay. a's ESP for it
// makes b send INVALID_SPI inside the IKE SA; a deletes its half and makes
// the Child SA again, and traffic flows.
func TestLostChildSAProtectedInvalidSPI(t *testing.T) {
	psk := ike.Credential{PSK: []byte("correct horse battery staple")}
	a, b := connectIKE(t, authCase{credA: psk, credB: psk, authA: ike.PeerAuth{PSK: psk.PSK}, authB: ike.PeerAuth{PSK: psk.PSK}}, 0)
	waitChild(t, a)
	waitChild(t, b)
	if err := ping(t, a.testEndpoint, b.addr, 0); err != nil {
		t.Fatal(err)
	}
	lost := b.d.SAs()[0].Children[0]
	b.eng.RemoveChild(lost.In.SPI) // b's datapath forgets it; its daemon does not know
	start := time.Now()
	go pingOnce(a.testEndpoint, b.addr, 1) // lost: b drops it, and tells a
	waitFor(t, func() bool {
		sas := a.d.SAs()
		return len(sas) == 1 && len(sas[0].Children) == 1 && sas[0].Children[0].In.SPI != lost.Out.SPI
	}, "a new Child SA at a")
	t.Logf("Child SA made again %v after the first packet on the lost one", time.Since(start).Round(time.Millisecond))
	if err := ping(t, a.testEndpoint, b.addr, 2); err != nil {
		t.Fatal(err)
	}
	if st := b.d.Stats(); st.InvalidSPISent == 0 {
		t.Fatal("b sent no INVALID_SPI")
	}
}
