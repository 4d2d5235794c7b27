package tunnel

import (
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
)

// Shunts returns the opportunistic negative cache: the destinations whose
// traffic goes clear or is dropped because opportunism failed, and why.
func (n *Node) Shunts() []OEStatus { return n.opportunisticTable(time.Now(), true) }

// opportunisticTable lists the engine's opportunistic destinations (only
// the decided ones if decided), sorted by address.
func (n *Node) opportunisticTable(now time.Time, decided bool) []OEStatus {
	out := []OEStatus{}
	classes := n.eng.Classes()
	var addrs []netip.Addr
	n.eng.oe.Range(func(k, _ any) bool {
		addrs = append(addrs, k.(netip.Addr))
		return true
	})
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		v, exp, ok := n.eng.VerdictFor(a)
		if !ok || decided && v == VerdictPending {
			continue
		}
		e := OEStatus{Destination: a.String(), Verdict: v.String()}
		if classes != nil {
			e.Class = classes.ClassOf(a).String()
		}
		if v != VerdictPending {
			e.ExpiresInSeconds = until(now, exp)
		}
		if n.oe != nil {
			note := n.oe.notes.get(a)
			e.Source = note.source
			if v != VerdictPending {
				e.Reason = note.reason
			}
		}
		out = append(out, e)
	}
	return out
}

// Flush forgets the opportunistic verdict (clear or drop) of a, or of every
// destination if a is the zero Addr, and removes the bypass route a clear
// verdict installed: the next packet starts discovery and IKE again.
// Destinations still negotiating are left alone. It returns how many
// verdicts it forgot.
func (n *Node) Flush(a netip.Addr) int {
	return n.eng.flushVerdicts(a.Unmap(), func(dst netip.Addr) {
		if n.oe != nil {
			n.oe.notes.forget(dst)
		}
	})
}

// flushVerdicts forgets the decided verdicts of dst (every destination if
// dst is invalid), removing their bypass routes, and tells forgot of each.
func (e *Engine) flushVerdicts(dst netip.Addr, forgot func(netip.Addr)) int {
	n := 0
	e.oe.Range(func(k, v any) bool {
		a, d := k.(netip.Addr), v.(*oeDest)
		if dst.IsValid() && a != dst {
			return true
		}
		d.mu.Lock()
		verdict := d.verdict
		d.mu.Unlock()
		if verdict == VerdictPending {
			return true
		}
		e.forget(a, d)
		if b := e.cfg.Bypass; b != nil && verdict == VerdictClear {
			// Else later flows to a would still go around us, in the
			// clear, until the flushed verdict would have run out.
			b.RemoveBypass(a)
		}
		forgot(a)
		n++
		return true
	})
	return n
}

// oeNotes remembers, per opportunistic destination, where its gateway was
// found and why opportunism fell back, for Status. It holds at most
// maxOEDests entries (the engine's table has no more).
type oeNotes struct {
	mu     sync.Mutex
	m      map[netip.Addr]oeNote
	events events // lookups and fallbacks
}

type oeNote struct{ source, reason string }

// tried notes the kind of record the gateway being tried for dst came from.
func (ns *oeNotes) tried(dst netip.Addr, source string) {
	ns.update(dst, func(n *oeNote) { n.source = source })
}

// failed notes why opportunism fell back for dst, to verdict v.
func (ns *oeNotes) failed(dst netip.Addr, v Verdict, reason string) {
	ns.events.add(&ns.events.oe, v.String())
	ns.update(dst, func(n *oeNote) { n.reason = reason })
}

// lookedUp counts a lookup's result.
func (ns *oeNotes) lookedUp(res dnsoe.Result) { ns.events.add(&ns.events.lookups, lookupResult(res)) }

func (ns *oeNotes) update(dst netip.Addr, f func(*oeNote)) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.m == nil {
		ns.m = map[netip.Addr]oeNote{}
	}
	note, ok := ns.m[dst]
	if !ok && len(ns.m) >= maxOEDests {
		return
	}
	f(&note)
	ns.m[dst] = note
}

func (ns *oeNotes) get(dst netip.Addr) oeNote {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.m[dst]
}

func (ns *oeNotes) forget(dst netip.Addr) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	delete(ns.m, dst)
}

// prune forgets the notes of destinations the engine no longer has.
func (ns *oeNotes) prune(e *Engine) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for a := range ns.m {
		if _, ok := e.oe.Load(a); !ok {
			delete(ns.m, a)
		}
	}
}

// oeWhy is ": " and why opportunism fell back for a, for Check ("" if not
// known).
func (n *Node) oeWhy(a netip.Addr) string {
	if n.oe == nil {
		return ""
	}
	if r := n.oe.notes.get(a).reason; r != "" {
		return ": " + r
	}
	return ""
}
