package tunnel

import (
	"maps"
	"net/netip"
	"testing"
)

// TestHostRoutingAddRoutes adds routes to a configured device, as a reload
// does off Linux: the new ones go in (and Close takes them); a route by
// another interface for one of them fails the whole call, leaving the
// table as it was.
func TestHostRoutingAddRoutes(t *testing.T) {
	pp := netip.MustParsePrefix
	f := newFakeHostNet()
	log, _ := bufLogger()
	h := &hostRouting{net: f, name: "utun7", log: log}
	if err := h.configure(hostTestConfig()); err != nil {
		t.Fatal(err)
	}
	added, err := h.addRoutes([]Route{{Prefix: pp("10.3.0.0/16")}, {Prefix: pp("192.0.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 1 || added[0].Prefix != pp("10.3.0.0/16") || f.routes[pp("10.3.0.0/16")] != "dev" {
		t.Fatalf("added %v; routes %v", added, f.routes)
	}
	before, _ := f.snapshot()
	if _, err := h.addRoutes([]Route{{Prefix: pp("10.4.0.0/16")}, {Prefix: pp("203.0.113.0/24")}}); err == nil {
		t.Fatal("a route by another interface was taken over")
	}
	if after, _ := f.snapshot(); !maps.Equal(after, before) {
		t.Fatalf("a failed addRoutes left %v, want %v", after, before)
	}
	if err := h.remove(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.routes[pp("10.3.0.0/16")]; ok {
		t.Error("Close left the added route")
	}
}
