package tunnel

import (
	"net/netip"
	"sync"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// Implementation constants of on-demand negotiation.
const (
	maxHeldPerTrap = 32              // packets held per trap while its SA is negotiated
	heldTimeout    = 5 * time.Second // held packets older than this are dropped
)

// trap is an on-demand SA: traffic between Local and Remote without an SA
// is held and the control plane is asked to negotiate one (an "acquire").
type trap struct {
	name          string
	local, remote policy.Selectors

	mu       sync.Mutex // guards the fields below; taken only for packets without an SA
	held     stage
	acquired time.Time // when the acquire was raised; zero if none is under way
}

// SetTrap installs (or replaces) an on-demand trap. The control plane's
// Acquire is told when the first packet needs it. A replaced trap's held
// packets are dropped with it.
func (e *Engine) SetTrap(name string, local, remote policy.Selectors) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.traps[name]
	e.traps[name] = &trap{name: name, local: local, remote: remote}
	e.setTrapsLocked()
	if old != nil {
		old.mu.Lock()
		old.held.retire()
		old.mu.Unlock()
	}
	e.reviewUnauthLocked(remote)
}

// AcquireFailed tells the engine that the negotiation for a trap failed: its
// held packets are dropped and the next packet raises a new acquire.
func (e *Engine) AcquireFailed(name string) {
	e.mu.Lock()
	t := e.traps[name]
	e.mu.Unlock()
	if t != nil {
		t.mu.Lock()
		t.held.take()
		t.acquired = time.Time{}
		t.mu.Unlock()
	}
}

// setTrapsLocked publishes a route table with the current traps.
func (e *Engine) setTrapsLocked() {
	rt := *e.routes.Load()
	rt.traps = make([]*trap, 0, len(e.traps))
	for _, t := range e.traps {
		rt.traps = append(rt.traps, t)
	}
	e.routes.Store(&rt)
}

func (rt *routeTable) trapFor(p *ipview.Packet) *trap {
	for _, t := range rt.traps {
		if t.remote.MatchDst(p) && t.local.MatchSrc(p) {
			return t
		}
	}
	return nil
}

// hold keeps a copy of an outbound packet for which trap t has no SA yet
// and raises an acquire if none is under way. It holds nothing and
// reports false when the packet must be decided again: t left the tables,
// or a pair that carries the packet was installed, and t flushed, since
// the caller's route lookup. Install publishes a pair before it takes
// t.mu to flush, so the look at the routes under t.mu sees it.
func (e *Engine) hold(t *trap, p *ipview.Packet, pkt []byte) bool {
	now := time.Now()
	t.mu.Lock()
	if t.held.retired || e.routes.Load().lookup(p) != nil {
		t.mu.Unlock()
		return false
	}
	fresh := t.acquired.IsZero() || now.Sub(t.acquired) > heldTimeout
	if fresh {
		t.held.take()
		t.acquired = now
	}
	if !t.held.hold(pkt, maxHeldPerTrap) {
		e.stats.noSA.Add(1)
	}
	t.mu.Unlock()
	if fresh {
		e.control().Acquire(t.name)
	}
	return true
}

// flushHeld sends the packets held by traps that the new pair covers.
// It runs on the control plane, after the pair is installed.
func (e *Engine) flushHeld(p *SAPair) {
	e.mu.Lock()
	traps := make([]*trap, 0, len(e.traps))
	for _, t := range e.traps {
		traps = append(traps, t)
	}
	e.mu.Unlock()
	send := e.flushOE(p)
	for _, t := range traps {
		t.mu.Lock()
		send = t.held.sealThrough(p, send)
		if t.held.len() == 0 {
			t.acquired = time.Time{}
		}
		t.mu.Unlock()
	}
	if len(send) > 0 {
		e.send(p, send)
	}
}

// TrapFor returns the name of the trap whose remote selectors contain a.
func (e *Engine) TrapFor(a netip.Addr) (string, bool) {
	for _, t := range e.routes.Load().traps {
		for _, s := range t.remote {
			if s.Contains(a) {
				return t.name, true
			}
		}
	}
	return "", false
}
