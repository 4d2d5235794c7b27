package policy

import (
	"net/netip"
	"sync"
	"time"
)

// Shunts is the negative cache of opportunistic encryption: after discovery
// or negotiation with a destination failed, what its traffic gets (clear or
// drop, by its class) is remembered for a while, so that a failed peer is
// not retried on every packet. It is bounded: when full, the entry closest
// to expiry makes room. Safe for concurrent use.
type Shunts struct {
	// TTL is how long a failure is remembered (default 15 minutes); Max
	// bounds the entries (default 65536).
	TTL time.Duration
	Max int

	mu sync.Mutex
	m  map[netip.Addr]Shunt
}

// Shunt is one remembered failure.
type Shunt struct {
	// Clear is true when the destination's traffic goes out in the clear
	// (private-or-clear), false when it is dropped (private).
	Clear   bool
	Reason  string
	Expires time.Time
}

// Add remembers that opportunism with dest failed at now.
func (s *Shunts) Add(dest netip.Addr, clear bool, reason string, now time.Time) {
	ttl, max := s.TTL, s.Max
	if ttl <= 0 {
		ttl = 15 * time.Minute
	}
	if max <= 0 {
		max = 1 << 16
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[netip.Addr]Shunt{}
	}
	dest = dest.Unmap()
	if _, ok := s.m[dest]; !ok && len(s.m) >= max {
		s.evictLocked(now, max)
	}
	s.m[dest] = Shunt{Clear: clear, Reason: reason, Expires: now.Add(ttl)}
}

func (s *Shunts) evictLocked(now time.Time, max int) {
	var victim netip.Addr
	var first time.Time
	for a, sh := range s.m {
		if !sh.Expires.After(now) {
			delete(s.m, a)
			continue
		}
		if !victim.IsValid() || sh.Expires.Before(first) {
			victim, first = a, sh.Expires
		}
	}
	if len(s.m) >= max && victim.IsValid() {
		delete(s.m, victim)
	}
}

// Lookup returns the shunt for dest, if one is in force at now.
func (s *Shunts) Lookup(dest netip.Addr, now time.Time) (Shunt, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.m[dest.Unmap()]
	if !ok || !now.Before(sh.Expires) {
		return Shunt{}, false
	}
	return sh, true
}

// Remove forgets dest (e.g. when its peer initiates to us after all).
func (s *Shunts) Remove(dest netip.Addr) {
	s.mu.Lock()
	delete(s.m, dest.Unmap())
	s.mu.Unlock()
}

// Len returns the number of entries, expired ones included.
func (s *Shunts) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

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
