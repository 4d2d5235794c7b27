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
	ca, cb := &ike.ChildSA{Handle: ab}, &ike.ChildSA{Handle: ba}
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
