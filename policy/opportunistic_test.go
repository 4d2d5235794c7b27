package policy

import (
	"testing"
	"time"
)

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
