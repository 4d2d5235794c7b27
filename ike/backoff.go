package ike

import (
	"math/rand/v2"
	"time"
)

// refusalLogInterval is how often a peer's refused proposals are logged at
// WARN; meanwhile they go to DEBUG, so that IKE_SA_INIT requests forged
// with the peer's address cannot flood the log.
const refusalLogInterval = 10 * time.Second

// logRefusal logs why a peer's proposal or selectors were refused: at WARN
// at most once per refusalLogInterval and peer, else at DEBUG.
func (d *Daemon) logRefusal(p *PeerConfig, msg string, args ...any) {
	if now := time.Now(); now.Sub(p.refusalLogged) >= refusalLogInterval {
		p.refusalLogged = now
		d.log.Warn(msg, append([]any{"peer", p.Name}, args...)...)
		return
	}
	d.log.Debug(msg, append([]any{"peer", p.Name}, args...)...)
}

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
