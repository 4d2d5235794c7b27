package ike

import (
	"math/rand/v2"
	"time"
)

// maxRestartDelay bounds the backoff between re-initiations of a peer
// that keeps failing.
const maxRestartDelay = 2 * time.Minute

// restartDelay returns how long to wait before re-initiating p after a
// failure, and counts the failure: 4 × the retransmission base (2 s by
// default), doubling with each failure since the peer was last up, at
// most maxRestartDelay, of which a random part up to a half is taken off
// so that peers that failed together do not retry together.
func restartDelay(p *PeerConfig) time.Duration {
	base := 4 * p.retransmitBase()
	d := base << min(p.restarts, 16)
	if d > maxRestartDelay || d <= 0 {
		d = maxRestartDelay
	}
	p.restarts++
	return d - rand.N(d/2+1)
}
