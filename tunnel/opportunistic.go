package tunnel

import (
	"net/netip"
	"sync"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// Bounds of the packets held while opportunistic discovery and IKE run.
const (
	maxHeldPerDest = 32    // per destination
	maxHeldOE      = 4096  // in all
	maxOEDests     = 65536 // destinations with a verdict (the negative cache)
	// pendingTimeout is how long a destination may stay pending before
	// the next packet raises a new acquire (the control plane normally
	// decides long before).
	pendingTimeout = 30 * time.Second
)

// Verdict is what the engine does with a destination's packets when no SA
// carries them.
type Verdict uint8

// Verdicts.
const (
	// VerdictPending holds the packets while discovery and IKE run.
	VerdictPending Verdict = iota
	// VerdictClear sends them in the clear (clear path).
	VerdictClear
	// VerdictDrop drops them.
	VerdictDrop
)

var verdictNames = [...]string{"pending", "clear", "drop"}

func (v Verdict) String() string { return verdictNames[v] }

// oeDest is the state of one opportunistic destination without an SA.
type oeDest struct {
	mu      sync.Mutex // taken only for packets without an SA
	verdict Verdict
	held    stage
	since   time.Time // when the acquire was raised (pending)
	until   time.Time // when a clear or drop verdict runs out
}

// Decide sets a destination's verdict until the given time, and sends (or
// drops) the packets held for it: the negative cache of opportunism.
//
// An unauthenticated SA for dst carries what Decide would send clear: it
// is no worse, and it is encrypted.
func (e *Engine) Decide(dst netip.Addr, v Verdict, until time.Time) {
	dst = dst.Unmap()
	if v == VerdictClear {
		if p := e.admitUnauth(dst); p != nil {
			e.flushHeld(p)
			return
		}
	}
	d := &oeDest{verdict: v, until: until}
	var held [][]byte
	old, ok := e.oe.Swap(dst, d)
	if !ok {
		e.oeDests.Add(1)
	}
	if ok {
		o := old.(*oeDest)
		o.mu.Lock()
		held = o.held.retire()
		o.mu.Unlock()
		e.oeHeld.Add(-int64(len(held)))
	}
	for _, pkt := range held {
		e.emit(v, pkt)
	}
	if b := e.cfg.Bypass; b != nil && v == VerdictClear && e.clear != nil {
		// Later flows to dst need not pass through us until the verdict
		// runs out.
		if err := b.AddBypass(dst); err != nil {
			e.log.Debug("bypass route", "dst", dst, "err", err)
			return
		}
		time.AfterFunc(time.Until(until), func() { b.RemoveBypass(dst) })
	}
}

// Abandon removes a destination's state, pending or not, and drops the
// packets held for it: its next packet without an SA raises a new acquire
// (the negotiation was stopped, neither failed nor done).
func (e *Engine) Abandon(dst netip.Addr) {
	dst = dst.Unmap()
	if v, ok := e.oe.Load(dst); ok {
		d := v.(*oeDest)
		d.mu.Lock()
		e.stats.noSA.Add(uint64(d.held.len()))
		d.mu.Unlock()
		e.forget(dst, d)
	}
}

// VerdictFor returns a destination's current verdict, if it has one.
func (e *Engine) VerdictFor(dst netip.Addr) (Verdict, time.Time, bool) {
	v, ok := e.oe.Load(dst.Unmap())
	if !ok {
		return 0, time.Time{}, false
	}
	d := v.(*oeDest)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.verdict != VerdictPending && !time.Now().Before(d.until) {
		return 0, time.Time{}, false
	}
	return d.verdict, d.until, true
}

// HasSA reports whether an SA pair carries traffic to dst.
func (e *Engine) HasSA(dst netip.Addr) bool { return e.PairFor(dst) != nil }

// PairFor returns the SA pair that carries outbound traffic to dst now (by
// address alone: the newest that may carry it), or nil. An unauthenticated
// pair barred, or not yet admitted, for dst carries nothing.
func (e *Engine) PairFor(dst netip.Addr) *SAPair { return e.routes.Load().pairFor(dst.Unmap()) }

// outboundNoSA handles a packet that no SA pair or trap covers, by the
// class of its destination. It reports false, having done nothing, when
// the packet must be decided again (see holdOE).
func (e *Engine) outboundNoSA(p *ipview.Packet, pkt []byte) bool {
	if av := e.autovpn.Load(); av != nil && av.covers(p) {
		av.outbound(p, pkt)
		return true
	}
	c := e.classes.Load()
	if c == nil {
		e.stats.noSA.Add(1)
		return true
	}
	class, explicit := c.Match(p)
	switch {
	case class == policy.ClassBlock:
		e.stats.blocked.Add(1)
	case class.Initiates():
		return e.opportunistic(p, pkt, class)
	case explicit:
		e.emit(VerdictClear, pkt) // clear, clear-or-private
	default:
		// No class: a configured tunnel's destination without its SA.
		e.stats.noSA.Add(1)
	}
	return true
}

// opportunistic handles a packet of an opportunistic class without an SA:
// by its destination's verdict, or held while a new acquire runs. It
// reports false when the packet must be decided again (see holdOE).
func (e *Engine) opportunistic(p *ipview.Packet, pkt []byte, class policy.Class) bool {
	dst := p.Dst.Unmap()
	now := time.Now()
	v, ok := e.oe.Load(dst)
	if !ok {
		if e.oeDests.Load() >= maxOEDests {
			e.stats.noSA.Add(1) // too many destinations at once: no state for more
			return true
		}
		v, ok = e.oe.LoadOrStore(dst, &oeDest{since: now})
		if !ok {
			e.oeDests.Add(1)
			// A new acquire: hold the packet, then tell the control plane.
			d := v.(*oeDest)
			if !e.holdOE(d, p, pkt) {
				e.forget(dst, d)
				return false
			}
			e.control().Opportunistic(p.Src.Unmap(), dst, class)
			return true
		}
	}
	d := v.(*oeDest)
	d.mu.Lock()
	verdict, stale := d.verdict, false
	switch verdict {
	case VerdictPending:
		stale = now.Sub(d.since) > pendingTimeout
	default:
		stale = !now.Before(d.until)
	}
	d.mu.Unlock()
	if stale {
		e.forget(dst, d)
		return e.opportunistic(p, pkt, class)
	}
	if verdict == VerdictPending {
		return e.holdOE(d, p, pkt)
	}
	e.emit(verdict, pkt)
	return true
}

// holdOE holds a packet for a pending destination. It holds nothing and
// reports false when the packet must be decided again: d left the table
// (Decide replaced it, or a pair's flush or a sweep forgot it), or a pair
// that carries the packet was installed since the caller's route lookup.
// Install publishes a pair before it takes d.mu to flush, so the look at
// the routes under d.mu sees it.
func (e *Engine) holdOE(d *oeDest, p *ipview.Packet, pkt []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held.retired || e.routes.Load().lookup(p) != nil {
		return false
	}
	if d.verdict != VerdictPending || e.oeHeld.Load() >= maxHeldOE || !d.held.hold(pkt, maxHeldPerDest) {
		e.stats.noSA.Add(1)
		return true
	}
	e.oeHeld.Add(1)
	return true
}

// emit sends a packet in the clear or drops it, by verdict.
func (e *Engine) emit(v Verdict, pkt []byte) {
	switch {
	case v == VerdictDrop:
		e.stats.blocked.Add(1)
	case e.clear == nil:
		e.stats.noSA.Add(1)
	default:
		if err := e.clear.Send(pkt); err != nil {
			e.stats.sendErrors.Add(1)
			return
		}
		e.stats.clear.Add(1)
	}
}

// flushOE sends the packets held for opportunistic destinations that the
// new pair covers through it, and forgets those destinations' verdicts.
func (e *Engine) flushOE(p *SAPair) [][]byte {
	var send [][]byte
	e.oe.Range(func(k, v any) bool {
		dst := k.(netip.Addr)
		if !p.Remote.Contains(dst) {
			return true
		}
		// The pair carries dst now: its verdict (pending, or a clear or
		// drop after a failure) is moot. Only a pair the engine routes
		// gets here: an unauthenticated one for an address that must be
		// authenticated was refused, and clears nothing.
		d := v.(*oeDest)
		d.mu.Lock()
		n := d.held.len()
		send = d.held.sealThrough(p, send)
		e.oeHeld.Add(-int64(n - d.held.len()))
		d.mu.Unlock()
		e.forget(dst, d) // drops what p does not carry
		return true
	})
	return send
}

// forget removes dst's state d (unless it was replaced meanwhile).
func (e *Engine) forget(dst netip.Addr, d *oeDest) {
	if e.oe.CompareAndDelete(dst, d) {
		d.mu.Lock()
		e.oeHeld.Add(-int64(len(d.held.retire())))
		d.mu.Unlock()
		e.oeDests.Add(-1)
	}
}

// sweepOE removes verdicts that ran out and pending destinations that the
// control plane never decided, so that the table holds only live state.
func (e *Engine) sweepOE(now time.Time) {
	e.oe.Range(func(k, v any) bool {
		d := v.(*oeDest)
		d.mu.Lock()
		stale := d.verdict == VerdictPending && now.Sub(d.since) > pendingTimeout ||
			d.verdict != VerdictPending && !now.Before(d.until)
		d.mu.Unlock()
		if stale {
			e.forget(k.(netip.Addr), d)
		}
		return true
	})
}
