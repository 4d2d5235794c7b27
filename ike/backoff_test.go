package ike

import (
	"testing"
	"time"
)

// TestRestartDelay: re-initiation after failures backs off exponentially,
// with jitter, up to maxRestartDelay, and starts over once the peer came up.
func TestRestartDelay(t *testing.T) {
	p := &PeerConfig{RetransmitBase: 500 * time.Millisecond}
	want := 2 * time.Second
	for i := 0; i < 12; i++ {
		got := restartDelay(p)
		if got < want/2 || got > want {
			t.Fatalf("failure %d: delay %v, want within [%v, %v]", i, got, want/2, want)
		}
		want = min(2*want, maxRestartDelay)
	}
	if p.restarts != 12 {
		t.Fatalf("restarts = %d", p.restarts)
	}
	p.restarts = 0 // as established does
	if got := restartDelay(p); got > 2*time.Second {
		t.Fatalf("after coming up: %v", got)
	}
	// Jitter: peers that failed together do not all retry together.
	seen := map[time.Duration]bool{}
	for i := 0; i < 20; i++ {
		seen[restartDelay(&PeerConfig{})] = true
	}
	if len(seen) < 5 {
		t.Fatalf("only %d distinct delays in 20", len(seen))
	}
}
