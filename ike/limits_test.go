package ike

import (
	"maps"
	"net/netip"
	"testing"
)

// responderCounts counts d's responder IKE SAs by address the slow way, as
// ikeSAsAt once did, and returns that with respByAddr.
func responderCounts(d *Daemon) (want, got map[netip.Addr]int) {
	want = map[netip.Addr]int{}
	d.call(func() {
		for _, sa := range d.sas {
			if !sa.initiator && sa.state != stateDead {
				want[sa.remote.Addr()]++
			}
		}
		got = maps.Clone(d.respByAddr)
	})
	return want, got
}

// TestResponderCountByAddr (issue 11): ikeSAsAt reads a count kept by
// putSA, deleteSA and setRemote; it must match a recount over the IKE SAs
// as they are made, rekeyed, moved to another address and torn down.
func TestResponderCountByAddr(t *testing.T) {
	d1, d2, dp1, _ := memPair(t)
	check := func(when string) {
		t.Helper()
		want, got := responderCounts(d2)
		if !maps.Equal(want, got) {
			t.Fatalf("%s: counted %v, there are %v", when, got, want)
		}
	}
	a1 := netip.MustParseAddr("192.0.2.1")
	check("established")
	if n := func() (n int) { d2.call(func() { n = d2.ikeSAsAt(a1) }); return n }(); n != 1 {
		t.Fatalf("ikeSAsAt = %d, want 1", n)
	}

	// The initiator moves (a NAT rebinding) and rekeys the IKE SA from
	// there: the responder's SA follows it, and the new one is made there.
	moved := netip.MustParseAddrPort("203.0.113.9:4500")
	s1 := current(d1)
	d1.call(func() {
		dp1.self = moved
		d1.rekeyIKE(s1)
	})
	waitUntil(t, func() bool { return oneEstablished(d1) && oneEstablished(d2) && current(d1) != s1 }, "IKE SA rekeyed")
	check("rekeyed after a move")
	want, _ := responderCounts(d2)
	if want[moved.Addr()] == 0 || want[a1] != 0 {
		t.Fatalf("responder SAs by address %v, want them all at %v", want, moved.Addr())
	}

	d1.Close()
	d2.call(func() {
		for _, sa := range d2.sas {
			d2.teardown(sa, nil)
		}
	})
	check("torn down")
	if _, got := responderCounts(d2); len(got) != 0 {
		t.Fatalf("counts left after teardown: %v", got)
	}
}
