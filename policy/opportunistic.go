package policy

import (
	"time"
)

// Lifespans of opportunistic tunnels (draft-richardson-ipsec-opportunistic
// §5.1): a short initial lifespan, because most flows last seconds, then a
// long one while traffic keeps flowing.
const (
	InitialLifespan  = time.Minute
	ExtendedLifespan = 20 * time.Minute
)

// Lifespan tracks when an opportunistic tunnel's future is next considered
// and decides, then, whether it stays up.
type Lifespan struct {
	start, end time.Time
	extended   time.Duration
}

// NewLifespan starts the initial lifespan at now, with the draft's
// durations.
func NewLifespan(now time.Time) Lifespan {
	return NewLifespanOf(now, InitialLifespan, ExtendedLifespan)
}

// NewLifespanOf starts an initial lifespan of the given length at now;
// extensions last extended.
func NewLifespanOf(now time.Time, initial, extended time.Duration) Lifespan {
	return Lifespan{start: now, end: now.Add(initial), extended: extended}
}

// Due reports whether the lifespan is over at now.
func (l Lifespan) Due(now time.Time) bool { return !now.Before(l.end) }

// Next decides at the end of a lifespan: if traffic flowed in either
// direction during its last half (lastTraffic is the time of the last
// packet), the tunnel stays for an extended lifespan; otherwise it is torn
// down (Delete sent, SAs removed: §5.2).
func (l Lifespan) Next(now, lastTraffic time.Time) (next Lifespan, keep bool) {
	half := l.start.Add(l.end.Sub(l.start) / 2)
	if lastTraffic.IsZero() || lastTraffic.Before(half) {
		return l, false
	}
	return Lifespan{start: now, end: now.Add(l.extended), extended: l.extended}, true
}

// End returns when the lifespan is over.
func (l Lifespan) End() time.Time { return l.end }
