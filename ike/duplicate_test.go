package ike

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// TestBothInitiateKeepOne (issue 11 item 9): both ends initiate at once;
// each must end with one IKE SA, the same one, with its Child SA.
func TestBothInitiateKeepOne(t *testing.T) {
	for i := 0; i < 10; i++ {
		a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
		dp1 := &memDatapath{self: netip.AddrPortFrom(a1, 4500), nextSPI: 0x1000, children: map[uint32]bool{}}
		dp2 := &memDatapath{self: netip.AddrPortFrom(a2, 4500), nextSPI: 0x2000, children: map[uint32]bool{}}
		psk := []byte("duplicates duplicates")
		mk := func(name string, self, addr netip.Addr, local, remote string) *PeerConfig {
			return &PeerConfig{Name: name, Addr: addr, NATTPort: 4500, IKEPort: 4500, Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk},
				LocalID: IdentityOf(self), RemoteID: IdentityOf(addr), DPD: -1,
				LocalTS: Selectors{mustSelector(t, local)}, RemoteTS: Selectors{mustSelector(t, remote)}}
		}
		p1, p2 := mk("two", a1, a2, "10.0.0.1", "10.0.0.2"), mk("one", a2, a1, "10.0.0.2", "10.0.0.1")
		d1, err := New(Config{Datapath: dp1, Peers: []*PeerConfig{p1}})
		if err != nil {
			t.Fatal(err)
		}
		d2, err := New(Config{Datapath: dp2, Peers: []*PeerConfig{p2}})
		if err != nil {
			t.Fatal(err)
		}
		dp1.peer, dp2.peer = d2, d1
		crossed(d1, d2, func() { d1.startInitiator(p1) }, func() { d2.startInitiator(p2) })
		waitUntil(t, func() bool {
			s1, s2 := current(d1), current(d2)
			return s1 != nil && s2 != nil && oneEstablished(d1) && oneEstablished(d2) && s1.spiI == s2.spiI && s1.spiR == s2.spiR &&
				dp1.installed() == 1 && dp2.installed() == 1
		}, "one IKE SA and one Child SA on each end, the same")
		time.Sleep(50 * time.Millisecond)
		if !oneEstablished(d1) || !oneEstablished(d2) || dp1.installed() != 1 || dp2.installed() != 1 {
			t.Fatalf("round %d: not stable", i)
		}
		checkAddrIndex(t, d1)
		checkAddrIndex(t, d2)
		d1.Close()
		d2.Close()
	}
}

// TestInitialContactWhilePeerHoldsOld (issue 11 item 9): the peer sends
// INITIAL_CONTACT in a new IKE SA though it still holds the old one (it
// decided so when it started the new one; both sides initiated after a
// restart). The old IKE SA must go at both ends, not only at ours: one IKE
// SA and one Child SA pair remain on each side.
func TestInitialContactWhilePeerHoldsOld(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	old2 := current(d2)
	// d2 forgets old2 while it starts the new IKE SA, so that it sends
	// INITIAL_CONTACT, and finds it again as the IKE_AUTH request goes.
	d2.call(func() { delete(d2.sas, old2.ourSPI()) })
	dp2.mu.Lock()
	dp2.beforeSend = func(msg []byte) {
		if h, err := ParseHeader(msg); err == nil && h.Exchange == IKE_AUTH && !h.IsResponse() {
			d2.sas[old2.ourSPI()] = old2 // on d2's goroutine
		}
	}
	dp2.mu.Unlock()
	if err := d2.Initiate("one"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		s1, s2 := current(d1), current(d2)
		return len(d1.SAs()) == 1 && len(d2.SAs()) == 1 && s1 != nil && s2 != nil && s2 != old2 &&
			s1.spiI == s2.spiI && dp1.installed() == 1 && dp2.installed() == 1
	}, "one IKE SA, the new one, and one Child SA pair at each end")
	checkAddrIndex(t, d1)
}

// TestRetiredUnansweredIsNoFailure: an IKE SA retired as a duplicate (or on
// INITIAL_CONTACT) whose Delete the peer does not answer, as it forgot that
// IKE SA already, goes quietly: it is not reported as the peer failing
// (OnChange with an error made opportunism forget a tunnel that another
// IKE SA carries).
func TestRetiredUnansweredIsNoFailure(t *testing.T) {
	d1, d2, _, _ := memPair(t)
	s1, s2 := current(d1), current(d2)
	var failures atomic.Int32
	d1.call(func() {
		d1.cfg.OnChange = func(_ string, up bool, err error) {
			if err != nil {
				failures.Add(1)
			}
		}
		s1.peer.RetransmitBase = 20 * time.Millisecond
	})
	d2.call(func() { delete(d2.sas, s2.ourSPI()) }) // d2 forgets it
	d1.call(func() {
		s1.rekeyed, s1.suspect = true, true
		d1.retire(s1)
	})
	waitUntil(t, func() bool { return len(d1.SAs()) == 0 }, "the retired IKE SA gone")
	if n := failures.Load(); n != 0 {
		t.Fatalf("the retired IKE SA was reported failed %d times", n)
	}
}
