package ike

import (
	"testing"
	"time"

	"github.com/oevpn/oevpn/policy"
)

func TestTouched(t *testing.T) {
	sel := func(s string) policy.Selector {
		t.Helper()
		x, err := policy.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	children := []*ChildSA{{Remote: policy.Selectors{sel("10.2.0.0/24")}}, {Remote: policy.Selectors{sel("10.4.0.0/16")}, replaced: true}}
	tests := []struct {
		r    string
		want bool
	}{
		{"10.2.0.0/24", true},
		{"10.2.0.7", true},
		{"10.2.0.0/23", true}, // narrowed on purpose: asking again gets the same
		{"10.0.0.0/8", true},
		{"10.3.0.0/24", false},
		{"10.4.1.0/24", false}, // only a replaced (rekeyed) Child SA covers it
		{"2001:db8::/64", false},
	}
	for _, tt := range tests {
		if got := touched(sel(tt.r), children); got != tt.want {
			t.Errorf("touched(%s) = %v, want %v", tt.r, got, tt.want)
		}
	}
}

// TestChildRemadeAfterPeerDeletedIt (issue 11 item 13): the peer deletes
// the Child SA of a peer configured to start but keeps the IKE SA; a new
// Child SA is made in the same IKE SA, and a peer that keeps deleting it
// gets it back later each time (backoff). A peer not configured to start
// gets none until traffic asks (TestNewChildAfterPeerDeletedIt).
func TestChildRemadeAfterPeerDeletedIt(t *testing.T) {
	const base = 100 * time.Millisecond
	d1, d2, dp1, dp2 := memPair(t)
	s1, s2 := current(d1), current(d2)
	remade := func() time.Duration {
		t.Helper()
		var old *ChildSA
		d1.call(func() { old = s1.children[0] })
		gone := time.Now()
		d2.call(func() { d2.deleteChild(s2.children[0]) })
		waitUntil(t, func() bool {
			var c *ChildSA
			d1.call(func() {
				if len(s1.children) == 1 {
					c = s1.children[0]
				}
			})
			return c != nil && c != old && dp1.installed() == 1 && dp2.installed() == 1 && oneEstablished(d1) && oneEstablished(d2)
		}, "a new Child SA in the same IKE SA")
		if current(d1) != s1 || current(d2) != s2 {
			t.Fatal("a new IKE SA was made instead of a Child SA")
		}
		return time.Since(gone)
	}

	// Not configured to start: nothing comes back by itself.
	d2.call(func() { d2.deleteChild(s2.children[0]) })
	waitUntil(t, func() bool { return dp1.installed() == 0 && dp2.installed() == 0 }, "Child SA deleted on both ends")
	time.Sleep(4 * base)
	if dp1.installed() != 0 {
		t.Fatal("a Child SA was made for a peer not configured to start, without traffic")
	}
	d1.Acquire("two")
	waitUntil(t, func() bool { return dp1.installed() == 1 && dp2.installed() == 1 }, "a new Child SA on traffic")

	d1.call(func() { s1.peer.AutoStart, s1.peer.RetransmitBase, s1.childLosses = true, base, 0 })
	var took []time.Duration
	for range 4 {
		took = append(took, remade())
	}
	t.Logf("Child SA remade after %v", took)
	if took[0] > base/2 {
		t.Errorf("first Child SA remade after %v, want at once", took[0])
	}
	if took[3] < 3*base/2 {
		t.Errorf("fourth Child SA in a row remade after %v: no backoff (want 2 × %v less up to half)", took[3], base)
	}
}
