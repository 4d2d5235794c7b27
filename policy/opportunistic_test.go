package policy

import (
	"net/netip"
	"testing"
	"time"
)

func TestShunts(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	s := &Shunts{TTL: time.Minute, Max: 3}
	a := netip.MustParseAddr("192.0.2.1")
	s.Add(a, true, "no IPSECKEY", t0)
	if sh, ok := s.Lookup(netip.MustParseAddr("::ffff:192.0.2.1"), t0.Add(30*time.Second)); !ok || !sh.Clear || sh.Reason != "no IPSECKEY" {
		t.Fatalf("lookup: %+v %v", sh, ok)
	}
	if _, ok := s.Lookup(a, t0.Add(time.Minute)); ok {
		t.Fatal("shunt used past its TTL")
	}
	// Bounded: the entry closest to expiry makes room.
	for i := 2; i <= 5; i++ {
		s.Add(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), false, "peer down", t0.Add(time.Duration(i)*time.Second))
	}
	if s.Len() > 3 {
		t.Fatalf("%d entries, max 3", s.Len())
	}
	if _, ok := s.Lookup(netip.MustParseAddr("192.0.2.5"), t0.Add(10*time.Second)); !ok {
		t.Fatal("newest entry evicted")
	}
	s.Remove(netip.MustParseAddr("192.0.2.5"))
	if _, ok := s.Lookup(netip.MustParseAddr("192.0.2.5"), t0.Add(10*time.Second)); ok {
		t.Fatal("removed entry found")
	}
}

func TestLifespan(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	l := NewLifespan(t0)
	if l.Due(t0.Add(59*time.Second)) || !l.Due(t0.Add(time.Minute)) {
		t.Fatal("initial lifespan is not one minute")
	}
	end := t0.Add(time.Minute)
	// Traffic only in the first half: torn down.
	if _, keep := l.Next(end, t0.Add(10*time.Second)); keep {
		t.Fatal("kept after traffic in the first half only")
	}
	if _, keep := l.Next(end, time.Time{}); keep {
		t.Fatal("kept without traffic")
	}
	// Traffic in the last half: extended to 20 minutes.
	n, keep := l.Next(end, t0.Add(45*time.Second))
	if !keep || n.End() != end.Add(20*time.Minute) {
		t.Fatalf("extension: %v %v", n.End(), keep)
	}
	// And again after the extended lifespan, judged on its last 10 minutes.
	if _, keep := n.Next(n.End(), end.Add(5*time.Minute)); keep {
		t.Fatal("kept after traffic in the first half of the extension only")
	}
	if _, keep := n.Next(n.End(), end.Add(15*time.Minute)); !keep {
		t.Fatal("not kept after traffic in the last half of the extension")
	}
}
