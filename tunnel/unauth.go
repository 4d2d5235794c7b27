package tunnel

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/oevpn/oevpn/policy"
)

// ErrMustAuthenticate refuses an unauthenticated SA pair for an address
// that must be authenticated.
var ErrMustAuthenticate = errors.New("tunnel: an unauthenticated peer may not carry traffic for this address")

// MayBeUnauthenticated reports whether an unauthenticated peer (AUTH_NULL)
// may carry traffic to and from a. It is the one place that decides, for
// every path that accepts such a peer (the opportunistic responder, the
// installation of an SA pair, the outbound lookup): it may not if a is of
// the private class (by prefix or by an exception), is known to publish a
// key, or is covered by an authenticated SA pair or a configured tunnel's
// trap.
func (e *Engine) MayBeUnauthenticated(a netip.Addr) bool {
	return e.mayBeUnauth(a.Unmap(), e.routes.Load())
}

// mayBeUnauth is MayBeUnauthenticated against the route table rt.
func (e *Engine) mayBeUnauth(a netip.Addr, rt *routeTable) bool {
	if c := e.classes.Load(); c != nil && c.RequiresAuth(a) {
		return false
	}
	if e.control().Keyed(a) {
		return false
	}
	if rt.authenticated(a) {
		return false
	}
	for _, t := range rt.traps {
		if t.remote.Contains(a) {
			return false
		}
	}
	return true
}

// refusesUnauth returns an address of the unauthenticated pair p's remote
// selectors that may not be unauthenticated. Only single addresses are
// checked: an opportunistic pair has no other, and a configured tunnel's
// wider selectors are the operator's choice.
func (e *Engine) refusesUnauth(p *SAPair) (netip.Addr, bool) {
	rt := e.routes.Load()
	for _, a := range singles(p.Remote) {
		if !e.mayBeUnauth(a, rt) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// reviewLocked decides again about the unauthenticated pair p: it bars p
// for good if one of its addresses must now be authenticated, and routes
// outbound traffic to it once it need not wait any more.
func (e *Engine) reviewLocked(p *SAPair) {
	if p.barred.Load() {
		return
	}
	if a, refused := e.refusesUnauth(p); refused {
		p.barred.Store(true)
		e.unrouteLocked(p)
		e.stats.nullRefused.Add(1)
		e.log.Warn("unauthenticated SA pair barred: its address must be authenticated", "peer", p.Peer, "addr", a,
			"spi_in", fmt.Sprintf("%#08x", p.In.SPI()))
		return
	}
	if !e.unauthWaits(p) {
		e.routeLocked(p)
	}
}

// reviewUnauthLocked reviews the unauthenticated pairs with an address in
// ss: by address if the ranges are smaller than the index, or else all.
func (e *Engine) reviewUnauthLocked(ss policy.Selectors) {
	if len(e.unauth) == 0 {
		return
	}
	var addrs []netip.Addr
	for _, s := range ss {
		a := s.Start.Unmap()
		for ; len(addrs) <= len(e.unauth); a = a.Next() {
			addrs = append(addrs, a)
			if a == s.End.Unmap() {
				break
			}
		}
	}
	if len(addrs) > len(e.unauth) {
		e.reviewAllUnauthLocked()
		return
	}
	for _, a := range addrs {
		for _, p := range e.unauth[a] {
			e.reviewLocked(p)
		}
	}
}

// reviewAllUnauthLocked reviews every unauthenticated pair.
func (e *Engine) reviewAllUnauthLocked() {
	for _, l := range e.unauth {
		for _, p := range l {
			e.reviewLocked(p)
		}
	}
}

// Reconsider bars the unauthenticated SA pairs that carry a if a may no
// longer be unauthenticated (it was found to publish a key).
func (e *Engine) Reconsider(a netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.unauth[a.Unmap()] {
		e.reviewLocked(p)
	}
}

// admitUnauth admits the unauthenticated pairs for dst, which opportunism
// sends clear, to carry its outbound traffic, and returns the newest, or
// nil if there is none that may.
func (e *Engine) admitUnauth(dst netip.Addr) *SAPair {
	e.mu.Lock()
	defer e.mu.Unlock()
	var newest *SAPair
	for _, p := range e.unauth[dst] {
		if a, ok := singleRemote(p); ok && a == dst && !p.barred.Load() {
			p.admitted.Store(true)
			if newest == nil || p.seq > newest.seq {
				newest = p
			}
		}
	}
	if newest == nil {
		return nil
	}
	for _, p := range e.unauth[dst] {
		e.reviewLocked(p)
	}
	if newest.barred.Load() {
		return nil
	}
	return newest
}

// singleRemote returns the address of a pair whose remote selectors are
// one address.
func singleRemote(p *SAPair) (netip.Addr, bool) {
	if len(p.Remote) != 1 {
		return netip.Addr{}, false
	}
	a, ok := p.Remote[0].Single()
	return a.Unmap(), ok
}

// unauthWaits reports whether the unauthenticated pair p, allowed for its
// address, must still wait before it carries outbound traffic: its
// address is private-or-clear (opportunism looks it up first: it may
// publish a key) and Decide has not sent it clear. A pair rekeying an
// admitted one is admitted.
func (e *Engine) unauthWaits(p *SAPair) bool {
	a, ok := singleRemote(p)
	if !ok || p.admitted.Load() {
		return false
	}
	for _, q := range e.unauth[a] {
		if b, ok := singleRemote(q); ok && b == a && q.admitted.Load() {
			p.admitted.Store(true)
			return false
		}
	}
	c := e.classes.Load()
	return c != nil && c.ClassOf(a).Initiates()
}
