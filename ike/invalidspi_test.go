package ike

import (
	"math/rand/v2"
	"testing"
	"time"
)

// loseChild makes d forget the Child SA of sa without telling the peer, as
// when its Delete was lost.
func loseChild(d *Daemon, dp *memDatapath, sa *ikeSA) (lost *ChildSA) {
	d.call(func() {
		lost = sa.children[0]
		sa.children = nil
		dp.RemoveChild(lost.In.SPI)
	})
	return lost
}

// TestProtectedInvalidSPI (issue 11 item 4): one end lost a Child SA that
// the other still sends on, in an IKE SA both keep. ESP for the unknown
// SPI makes the end that lost it say so inside the IKE SA (INVALID_SPI,
// §2.21.4), and the other end deletes its half and makes the Child SA
// again.
func TestProtectedInvalidSPI(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	s1, s2 := current(d1), current(d2)
	var c1 *ChildSA
	d1.call(func() { c1 = s1.children[0] })
	lost := loseChild(d2, dp2, s2)
	d2.UnknownESP(lost.In.SPI, dp1.self) // c1 still sends on it
	waitUntil(t, func() bool {
		var n1, n2 *ChildSA
		d1.call(func() {
			if len(s1.children) == 1 {
				n1 = s1.children[0]
			}
		})
		d2.call(func() {
			if len(s2.children) == 1 {
				n2 = s2.children[0]
			}
		})
		return n1 != nil && n2 != nil && n1 != c1 && n1.Out.SPI == n2.In.SPI && n2.Out.SPI == n1.In.SPI &&
			dp1.installed() == 1 && dp2.installed() == 1
	}, "the lost Child SA made again, in the same IKE SA")
	if current(d1) != s1 || current(d2) != s2 {
		t.Fatal("a new IKE SA was made")
	}
}

// TestProtectedInvalidSPIFlood performs the attack on it: ESP with random
// SPIs and the peer's source address, as fast as the daemon takes it.
// Each IKE SA sends at most one INVALID_SPI per second (and none while one
// is unanswered), and the peer, whose Child SAs none of them name, keeps
// its Child SA.
func TestProtectedInvalidSPIFlood(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	informational := func() int {
		n := 0
		for _, b := range dp2.sends() {
			if h, err := ParseHeader(b); err == nil && h.Exchange == INFORMATIONAL && !h.IsResponse() {
				n++
			}
		}
		return n
	}
	before := informational()
	start := time.Now()
	calls := 0
	for time.Since(start) < 1500*time.Millisecond {
		d2.call(func() {
			for range 100 {
				d2.sendInvalidSPI(rand.Uint32(), dp1.self) // past UnknownESP's rate limit
			}
		})
		calls += 100
	}
	settle(d2)
	settle(d1)
	sent := informational() - before
	t.Logf("%d forged ESP packets in %v: %d INVALID_SPI notifies", calls, time.Since(start).Round(time.Millisecond), sent)
	if sent < 1 || sent > 2 {
		t.Fatalf("%d INVALID_SPI notifies in 1.5 s, want 1 or 2", sent)
	}
	if !oneEstablished(d1) || !oneEstablished(d2) || dp1.installed() != 1 {
		t.Fatal("the peer's Child SA went")
	}
}

// checkAddrIndex fails t unless d.byAddr holds exactly the IKE SAs of
// d.sas, each under its peer's address.
func checkAddrIndex(t *testing.T, d *Daemon) {
	t.Helper()
	d.call(func() {
		n := 0
		for a, l := range d.byAddr {
			for _, sa := range l {
				n++
				if d.sas[sa.ourSPI()] != sa || sa.remote.Addr() != a {
					t.Errorf("byAddr[%v] holds an IKE SA that sas does not, or at another address", a)
				}
			}
		}
		if n != len(d.sas) {
			t.Errorf("byAddr holds %d IKE SAs, sas %d", n, len(d.sas))
		}
	})
}
