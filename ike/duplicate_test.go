package ike

import (
	"net/netip"
	"testing"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// TestBothInitiateKeepOne (issue 11 item 9): both ends initiate at once;
// each must end with one IKE SA, the same one, with its Child SA.
func TestBothInitiateKeepOne(t *testing.T) {
	for i := 0; i < 10; i++ {
		a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
		dp1 := &memDatapath{self: netip.AddrPortFrom(a1, 4500), nextSPI: 0x1000, children: map[*ChildSA]bool{}}
		dp2 := &memDatapath{self: netip.AddrPortFrom(a2, 4500), nextSPI: 0x2000, children: map[*ChildSA]bool{}}
		psk := []byte("duplicates duplicates")
		mk := func(name string, self, addr netip.Addr, local, remote string) *PeerConfig {
			return &PeerConfig{Name: name, Addr: addr, NATTPort: 4500, IKEPort: 4500, Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk},
				LocalID: IdentityOf(self), RemoteID: IdentityOf(addr), DPD: -1,
				LocalTS: policy.Selectors{mustSelector(t, local)}, RemoteTS: policy.Selectors{mustSelector(t, remote)}}
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
