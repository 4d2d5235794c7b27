package ike

import (
	"testing"
	"time"
)

// TestDPDProbeDueFromLastHeard (issue 11 item 16): the liveness check
// comes dpd after the peer was last heard, not up to twice that: the next
// check is timed from when the peer was last heard, not from the last
// check.
func TestDPDProbeDueFromLastHeard(t *testing.T) {
	const iv = time.Second
	d1, d2, dp1, _ := memPair(t)
	probes := func() int {
		n := 0
		for _, b := range dp1.sends() {
			if h, err := ParseHeader(b); err == nil && h.Exchange == INFORMATIONAL && !h.IsResponse() {
				n++
			}
		}
		return n
	}
	before := probes()
	start := time.Now()
	sa1, sa2 := current(d1), current(d2)
	d1.call(func() {
		sa := sa1
		sa.peer.DPD = iv
		sa.lastHeard = time.Now()
		d1.scheduleDPD(sa)
	})
	// Half-way, the peer is heard (an empty INFORMATIONAL of its own).
	time.Sleep(iv / 2)
	heard := time.Now()
	d2.call(func() {
		d2.queueRequest(sa2, exchange{exch: INFORMATIONAL, payloads: func() ([]Payload, error) { return nil, nil }})
	})
	for probes() == before {
		if time.Since(start) > 3*iv {
			t.Fatal("no liveness check in 3 × dpd")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if late := time.Since(heard); late > iv+iv/4 {
		t.Fatalf("liveness check %v after the peer was last heard, dpd %v", late.Round(time.Millisecond), iv)
	}
}

// TestDPDProbeDueFromLastESP (issue 11 item 16): the liveness check comes
// dpd after the last ESP packet the peer sent, not up to twice that: the
// datapath tells when each Child SA last accepted one (childHearer).
func TestDPDProbeDueFromLastESP(t *testing.T) {
	const iv = time.Second
	d1, _, dp1, _ := memPair(t)
	probes := func() int {
		n := 0
		for _, b := range dp1.sends() {
			if h, err := ParseHeader(b); err == nil && h.Exchange == INFORMATIONAL && !h.IsResponse() {
				n++
			}
		}
		return n
	}
	before := probes()
	start := time.Now()
	sa1 := current(d1)
	var c1 *ChildSA
	d1.call(func() {
		c1 = sa1.children[0]
		sa1.peer.DPD = iv
		sa1.lastHeard = time.Now()
		d1.scheduleDPD(sa1)
	})
	// Half-way, an ESP packet arrives.
	time.Sleep(iv / 2)
	dp1.hear(c1)
	heard := time.Now()
	for probes() == before {
		if time.Since(start) > 3*iv {
			t.Fatal("no liveness check in 3 × dpd")
		}
		time.Sleep(5 * time.Millisecond)
	}
	late := time.Since(heard)
	t.Logf("liveness check %v after the last ESP packet, dpd %v", late.Round(time.Millisecond), iv)
	if late > iv+iv/4 {
		t.Fatalf("liveness check %v after the last ESP packet, dpd %v", late.Round(time.Millisecond), iv)
	}
	if late < iv-iv/10 {
		t.Fatalf("liveness check only %v after the last ESP packet, dpd %v", late.Round(time.Millisecond), iv)
	}
}
