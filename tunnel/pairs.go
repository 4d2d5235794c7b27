package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/oevpn/oevpn/esp"
	conn "github.com/oevpn/oevpn/internal/wgconn"
	"github.com/oevpn/oevpn/policy"
)

// PairConfig describes an SA pair to install: one outbound and one inbound
// SA with the same peer and traffic selectors.
type PairConfig struct {
	// Peer is the peer's outer address and UDP port (4500).
	Peer netip.AddrPort
	// Local and Remote are the traffic selectors: outbound packets from
	// Local to Remote use the pair; inbound packets must come from Remote
	// and go to Local, or they are dropped.
	Local, Remote policy.Selectors
	Out, In       esp.Config
	// Deferred keeps outbound traffic on an older pair with the same
	// selectors until a packet arrives on this one (or the older one
	// goes): the responder of a rekey, whose peer installs its inbound SA
	// only when our answer arrives, must not send first (RFC 7296 §2.8).
	Deferred bool
	// Unauthenticated marks a pair whose peer did not authenticate
	// (AUTH_NULL): it carries traffic only for addresses that
	// MayBeUnauthenticated allows, and is refused or barred for the
	// others. For a private-or-clear address it carries outbound traffic
	// only once opportunism decided that the address would go clear
	// (Decide): only then is it better than the alternative.
	Unauthenticated bool
	// Auth is how IKE authenticated the peer of a negotiated pair (as
	// ike.Credential.Method names it: "psk", "signature", "null", …);
	// empty for a statically keyed pair.
	Auth string
}

// SAPair is an installed pair of SAs.
type SAPair struct {
	// What the datapath reads for every packet comes first, within the
	// first two cache lines: with many pairs, a packet meets a cold one.
	ready atomic.Bool // may carry outbound traffic (see PairConfig.Deferred)
	// barred is set, once and for good, on an unauthenticated pair
	// whose remote address came to need authentication: it carries
	// nothing more, either way.
	barred atomic.Bool
	peer4  bool // the peer's outer address is IPv4
	unauth bool // PairConfig.Unauthenticated

	Out, In       *esp.SA
	Remote, Local policy.Selectors
	ep            conn.Endpoint
	Peer          netip.AddrPort

	// Auth is PairConfig.Auth: empty for a statically keyed pair. The
	// IKE daemon knows a negotiated pair by In.SPI().
	Auth string

	// admitted is set on an unauthenticated pair for a private-or-clear
	// address once Decide sent that address clear: it may then carry
	// the address's outbound traffic.
	admitted atomic.Bool
	seq      uint64 // install order: newer pairs win outbound (make-before-break)
	removed  atomic.Bool
	routed   bool // in the route table; guarded by Engine.mu
	// heard is when (UnixNano, read once per received batch) In last
	// accepted a packet: dead-peer detection times its checks from it.
	heard atomic.Int64
}

// Install keys and installs an SA pair. The inbound SPI must be free.
func (e *Engine) Install(pc PairConfig) (*SAPair, error) {
	if e.closed() {
		return nil, ErrClosed
	}
	if !pc.Peer.IsValid() {
		return nil, errors.New("tunnel: SA pair without a peer address")
	}
	if len(pc.Local) == 0 || len(pc.Remote) == 0 {
		return nil, errors.New("tunnel: SA pair without traffic selectors")
	}
	p := &SAPair{Peer: pc.Peer, Local: pc.Local, Remote: pc.Remote, unauth: pc.Unauthenticated, Auth: pc.Auth}
	p.ready.Store(!pc.Deferred)
	onEvent := func(_ *esp.SA, ev esp.Event) {
		select {
		case e.events <- saEvent{p, ev}:
		default:
			go func() { e.events <- saEvent{p, ev} }()
		}
	}
	pc.Out.OnEvent, pc.In.OnEvent = onEvent, onEvent
	var err error
	if p.Out, err = esp.NewSA(pc.Out); err != nil {
		return nil, fmt.Errorf("tunnel: outbound SA: %w", err)
	}
	if p.In, err = esp.NewSA(pc.In); err != nil {
		return nil, fmt.Errorf("tunnel: inbound SA: %w", err)
	}
	peer := netip.AddrPortFrom(pc.Peer.Addr().Unmap(), pc.Peer.Port())
	p.peer4 = peer.Addr().Is4()
	if p.ep, err = e.natt.ParseEndpoint(peer.String()); err != nil {
		return nil, fmt.Errorf("tunnel: peer %v: %w", pc.Peer, err)
	}
	routed, err := e.insert(p)
	if err != nil {
		return nil, err
	}
	if routed {
		// Not an unauthenticated pair that waits: held packets are never
		// sent where the datapath would not send them.
		e.flushHeld(p)
	}
	e.log.Info("SA pair installed", "peer", p.Peer, "spi_in", fmt.Sprintf("%#08x", p.In.SPI()),
		"spi_out", fmt.Sprintf("%#08x", p.Out.SPI()), "transform", p.Out.Transform(), "local", p.Local, "remote", p.Remote)
	return p, nil
}

// insert adds p to the tables; it reports whether p carries outbound
// traffic (an unauthenticated pair may have to wait).
func (e *Engine) insert(p *SAPair) (routed bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p.unauth {
		if a, ok := e.refusesUnauth(p); ok {
			e.stats.nullRefused.Add(1)
			return false, fmt.Errorf("%w: %v", ErrMustAuthenticate, a)
		}
	}
	insert := e.spis.Insert
	if old, ok := e.spis.Lookup(p.In.SPI()); ok && old == nil {
		insert = e.spis.Replace // an SPI the control plane reserved
	}
	if err := insert(p.In.SPI(), p); err != nil {
		return false, fmt.Errorf("tunnel: inbound SA: %w", err)
	}
	e.nextSeq++
	p.seq = e.nextSeq
	e.pairs[p] = struct{}{}
	if !p.unauth {
		e.routeLocked(p)
		// Unauthenticated pairs for the addresses p carries may carry
		// them no more.
		e.reviewUnauthLocked(p.Remote)
		return true, nil
	}
	for _, a := range singles(p.Remote) {
		e.unauth[a] = append(e.unauth[a], p)
	}
	e.reviewLocked(p)
	return p.routed, nil
}

// routeLocked adds p to the route table.
func (e *Engine) routeLocked(p *SAPair) {
	if !p.routed {
		p.routed = true
		e.routes.Store(e.routes.Load().with(p))
	}
}

// unrouteLocked removes p from the route table.
func (e *Engine) unrouteLocked(p *SAPair) {
	if p.routed {
		p.routed = false
		e.routes.Store(e.routes.Load().without(p))
	}
}

// singles returns the addresses of the selectors of ss that cover one.
func singles(ss policy.Selectors) []netip.Addr {
	var l []netip.Addr
	for _, s := range ss {
		if a, ok := s.Single(); ok {
			l = append(l, a.Unmap())
		}
	}
	return l
}

// Remove uninstalls an SA pair, and ends the linger of a retired one; it
// reports whether the pair was installed (and not retired).
func (e *Engine) Remove(p *SAPair) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	installed := e.uninstallLocked(p)
	spi := p.In.SPI()
	if q, ok := e.spis.Lookup(spi); ok && q == p {
		e.spis.Remove(spi)
		e.log.Info("SA pair removed", "peer", p.Peer, "spi_in", fmt.Sprintf("%#08x", spi), "retired", !installed)
	}
	return installed
}

// Retire uninstalls an SA pair that a newer one replaced (a rekey): it
// carries no outbound traffic from now on, but its inbound SA still
// accepts packets for linger, so that what the peer sent on it before it
// switched, and what arrives after the exchange that deleted it (ESP and
// IKE travel apart), is not lost. It reports whether the pair was
// installed.
func (e *Engine) Retire(p *SAPair, linger time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.uninstallLocked(p) {
		return false
	}
	spi := p.In.SPI()
	e.log.Info("SA pair retired", "peer", p.Peer, "spi_in", fmt.Sprintf("%#08x", spi), "inbound_for", linger)
	time.AfterFunc(linger, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		// The SPI stayed in the table, so it was not given out again.
		if q, ok := e.spis.Lookup(spi); ok && q == p {
			e.spis.Remove(spi)
		}
	})
	return true
}

// uninstallLocked takes p out of every table but the SPI table: it no
// longer carries outbound traffic, is not listed, and has no lifetime
// events. It reports whether p was installed.
func (e *Engine) uninstallLocked(p *SAPair) bool {
	if _, ok := e.pairs[p]; !ok {
		return false
	}
	delete(e.pairs, p)
	p.removed.Store(true)
	e.unrouteLocked(p)
	if p.unauth {
		for _, a := range singles(p.Remote) {
			l := slices.DeleteFunc(slices.Clone(e.unauth[a]), func(q *SAPair) bool { return q == p })
			if len(l) == 0 {
				delete(e.unauth, a)
			} else {
				e.unauth[a] = l
			}
		}
	}
	return true
}

// Pairs returns the installed SA pairs.
func (e *Engine) Pairs() []*SAPair {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := make([]*SAPair, 0, len(e.pairs))
	for p := range e.pairs {
		l = append(l, p)
	}
	return l
}
