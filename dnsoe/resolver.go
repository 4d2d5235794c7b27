package dnsoe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNSSEC says which answers count.
type DNSSEC int

// DNSSEC modes.
const (
	// DNSSECRequire uses only answers the resolver validated (AD bit set
	// by a resolver the configuration trusts).
	DNSSECRequire DNSSEC = iota
	// DNSSECPrefer uses unvalidated answers too, marked as such.
	DNSSECPrefer
	// DNSSECOff ignores DNSSEC.
	DNSSECOff
)

// Errors of lookups.
var (
	ErrUnvalidated = errors.New("dnsoe: answer not validated by DNSSEC")
	ErrNoRecord    = errors.New("dnsoe: no opportunistic IPsec record")
	ErrBusy        = errors.New("dnsoe: too many lookups in flight")
	// ErrBogus means the zone is signed but an answer (records or a denial
	// of existence) failed validation: someone may be forging answers, so
	// it is never taken as "no record".
	ErrBogus = errors.New("dnsoe: DNSSEC validation failed (bogus answer)")
)

// Result is what DNS says about a destination.
type Result struct {
	// Gateways, in order of preference (see Order).
	Gateways []Gateway
	// Validated is true when every answer used was DNSSEC-validated.
	Validated bool
	// Expires is when the answer must be looked up again (its TTL).
	Expires time.Time
	// Err is ErrNoRecord (cached by the zone's negative TTL),
	// ErrUnvalidated, ErrBusy or a transport error.
	Err error
}

// Resolver looks up opportunistic IPsec records through one recursive
// resolver, caches answers by their TTL (negative ones by the SOA's), and
// bounds the lookups in flight, so that a slow or dead resolver never holds
// up more than the flows waiting for it.
type Resolver struct {
	// Server is the resolver's address, e.g. "127.0.0.1:53".
	Server string
	Mode   DNSSEC
	// Timeout bounds one lookup (default 2s); MaxInFlight the lookups at
	// once (default 64).
	Timeout     time.Duration
	MaxInFlight int
	// Dialer, if set, makes the query sockets (e.g. marked so that they
	// bypass the tunnel).
	Dialer *net.Dialer
	// Anchors, if set, make the Resolver validate DNSSEC itself, from
	// these trust anchors, instead of trusting the resolver's AD bit: it
	// asks with checking disabled and checks the signatures up to an
	// anchor.
	Anchors *TrustAnchors

	val *validator

	once  sync.Once
	sem   chan struct{}
	mu    sync.Mutex
	cache map[netip.Addr]Result
}

func (r *Resolver) init() {
	r.once.Do(func() {
		n := r.MaxInFlight
		if n <= 0 {
			n = 64
		}
		r.sem = make(chan struct{}, n)
		if r.Anchors != nil {
			r.val = &validator{anchors: r.Anchors, query: r.raw}
		}
		r.cache = map[netip.Addr]Result{}
		if r.Timeout == 0 {
			r.Timeout = 2 * time.Second
		}
	})
}

// Cached returns a cached, unexpired result for dest.
func (r *Resolver) Cached(dest netip.Addr, now time.Time) (Result, bool) {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.cache[dest.Unmap()]
	if ok && now.Before(res.Expires) {
		return res, true
	}
	return Result{}, false
}

// Lookup finds the gateways of dest: IPSECKEY and TXT records in its
// reverse zone, and for a gateway named without a key, its KEY or IPSECKEY
// record. It fails at once with ErrBusy when MaxInFlight lookups run.
func (r *Resolver) Lookup(ctx context.Context, dest netip.Addr) Result {
	r.init()
	dest = dest.Unmap()
	if res, ok := r.Cached(dest, time.Now()); ok {
		return res
	}
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	default:
		return Result{Err: ErrBusy}
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	res := r.lookup(ctx, dest)
	if res.Err == nil || errors.Is(res.Err, ErrNoRecord) || errors.Is(res.Err, ErrUnvalidated) {
		r.mu.Lock()
		r.cache[dest] = res
		r.mu.Unlock()
	}
	return res
}

// LookupResponder is Lookup for the keys of initiators that reached us:
// remote parties choose those addresses, so these lookups have a budget
// of their own and cannot starve the lookups for our own traffic.
func (r *Resolver) LookupResponder(ctx context.Context, dest netip.Addr) Result {
	return r.Lookup(ctx, dest)
}

// answer is one query's outcome.
type answer struct {
	rrs       []dns.RR
	validated bool
	ttl       time.Duration // of the records, or the negative TTL
	err       error
}

// raw asks name/qtype with DNSSEC records and checking disabled (for
// oevpn's own validation).
func (r *Resolver) raw(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(4096, true)
	m.CheckingDisabled = true
	return r.exchange(ctx, m)
}

func (r *Resolver) query(ctx context.Context, name string, qtype uint16) answer {
	if r.val != nil && r.Mode != DNSSECOff {
		return r.queryValidating(ctx, name, qtype)
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(4096, r.Mode != DNSSECOff) // DO: ask for DNSSEC
	m.AuthenticatedData = r.Mode != DNSSECOff
	in, err := r.exchange(ctx, m)
	if err == nil && in.Rcode == dns.RcodeServerFailure && r.Mode == DNSSECPrefer {
		// A validating resolver answers SERVFAIL when the signatures are
		// broken; with prefer, ask again with checking disabled and use
		// the data as unvalidated.
		m.CheckingDisabled = true
		if in2, err2 := r.exchange(ctx, m); err2 == nil && in2.Rcode != dns.RcodeServerFailure {
			in = in2
			in.AuthenticatedData = false
		}
	}
	if err != nil {
		return answer{err: fmt.Errorf("dnsoe: %s %s: %w", name, dns.TypeToString[qtype], err)}
	}
	return parseAnswer(name, qtype, in, in.AuthenticatedData)
}

// queryValidating asks with checking disabled and validates the answer
// against the trust anchors.
func (r *Resolver) queryValidating(ctx context.Context, name string, qtype uint16) answer {
	in, err := r.raw(ctx, name, qtype)
	if err != nil {
		return answer{err: fmt.Errorf("dnsoe: %s %s: %w", name, dns.TypeToString[qtype], err)}
	}
	a := parseAnswer(name, qtype, in, false)
	if a.err == nil && len(a.rrs) > 0 {
		var sigs []*dns.RRSIG
		for _, rr := range in.Answer {
			if sig, ok := rr.(*dns.RRSIG); ok && sig.TypeCovered == qtype && strings.EqualFold(sig.Hdr.Name, a.rrs[0].Header().Name) {
				sigs = append(sigs, sig)
			}
		}
		a.validated = r.val.verify(ctx, a.rrs, sigs, 0)
	}
	return a
}

// parseAnswer keeps the records of qtype (one RRset: the first owner's) and
// the TTL to cache the answer, or the negative TTL.
func parseAnswer(name string, qtype uint16, in *dns.Msg, validated bool) answer {
	a := answer{validated: validated}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		return answer{err: fmt.Errorf("dnsoe: %s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode])}
	}
	min := uint32(1<<31 - 1)
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype && (len(a.rrs) == 0 || strings.EqualFold(rr.Header().Name, a.rrs[0].Header().Name)) {
			a.rrs = append(a.rrs, rr)
			min = minU(min, rr.Header().Ttl)
		}
	}
	if len(a.rrs) == 0 {
		// Negative answer: cache by the SOA's minimum (RFC 2308 §5).
		min = 300
		for _, rr := range in.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				min = minU(soa.Hdr.Ttl, soa.Minttl)
			}
		}
	}
	a.ttl = time.Duration(min) * time.Second
	return a
}

// exchange sends m over UDP, and again over TCP if the answer is truncated.
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Dialer: r.Dialer}
	in, _, err := c.ExchangeContext(ctx, m, r.Server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
	}
	return in, err
}

func minU(a, b uint32) uint32 {
	if a < b {
		return a
	}
	return b
}

func (r *Resolver) lookup(ctx context.Context, dest netip.Addr) Result {
	name := ReverseName(dest)
	res := Result{Validated: true, Expires: time.Now().Add(time.Hour)}
	use := func(a answer) bool {
		if a.err != nil {
			return false
		}
		if exp := time.Now().Add(a.ttl); exp.Before(res.Expires) {
			res.Expires = exp
		}
		if len(a.rrs) == 0 {
			return false
		}
		if !a.validated {
			if r.Mode == DNSSECRequire {
				res.Err = ErrUnvalidated
				return false
			}
			if r.Mode == DNSSECPrefer {
				res.Validated = false
			}
		}
		return true
	}
	var transportErr error
	if a := r.query(ctx, name, dns.TypeIPSECKEY); use(a) {
		for _, rr := range a.rrs {
			if g, err := FromIPSECKEY(rr.(*dns.IPSECKEY), dest); err == nil {
				res.Gateways = append(res.Gateways, g)
			}
		}
	} else if a.err != nil {
		transportErr = a.err
	}
	if a := r.query(ctx, name, dns.TypeTXT); use(a) {
		for _, rr := range a.rrs {
			txt := strings.Join(rr.(*dns.TXT).Txt, "")
			if !strings.HasPrefix(txt, txtPrefix) {
				continue
			}
			if g, err := FromTXT(txt); err == nil {
				res.Gateways = append(res.Gateways, g)
			}
		}
	} else if a.err != nil && transportErr == nil {
		transportErr = a.err
	}
	// Neither: a KEY record of the destination itself (plain, or IP
	// AutoSEC).
	if len(res.Gateways) == 0 && res.Err == nil {
		if a := r.query(ctx, name, dns.TypeKEY); use(a) {
			for _, rr := range a.rrs {
				if g, err := FromKEYRecord(rr.(*dns.KEY), dest); err == nil {
					res.Gateways = append(res.Gateways, g)
				}
			}
		} else if a.err != nil && transportErr == nil {
			transportErr = a.err
		}
	}
	// Gateways named without a key: their KEY (or IPSECKEY) record.
	for i := range res.Gateways {
		g := &res.Gateways[i]
		if g.Key != nil {
			continue
		}
		owner := dns.Fqdn(g.Name)
		if g.Name == "" {
			owner = ReverseName(g.Addr)
		}
		if a := r.query(ctx, owner, dns.TypeKEY); use(a) {
			for _, rr := range a.rrs {
				if k, err := FromKEY(rr.(*dns.KEY)); err == nil {
					g.Key = k
					break
				}
			}
		}
		if g.Key == nil {
			if a := r.query(ctx, owner, dns.TypeIPSECKEY); use(a) {
				for _, rr := range a.rrs {
					if kg, err := FromIPSECKEY(rr.(*dns.IPSECKEY), g.Addr); err == nil && kg.Key != nil {
						g.Key = kg.Key
						break
					}
				}
			}
		}
	}
	// Gateways known only by name: their address, of dest's family.
	for i := range res.Gateways {
		g := &res.Gateways[i]
		if g.Addr.IsValid() || g.Name == "" {
			continue
		}
		qtype := dns.TypeA
		if dest.Is6() {
			qtype = dns.TypeAAAA
		}
		if a := r.query(ctx, dns.Fqdn(g.Name), qtype); use(a) {
			switch rr := a.rrs[0].(type) {
			case *dns.A:
				g.Addr, _ = netip.AddrFromSlice(rr.A.To4())
			case *dns.AAAA:
				g.Addr, _ = netip.AddrFromSlice(rr.AAAA)
			}
		}
	}
	// Without a key there is no authenticated peer: drop such gateways.
	kept := res.Gateways[:0]
	for _, g := range res.Gateways {
		if g.Key != nil {
			kept = append(kept, g)
		}
	}
	res.Gateways = Order(kept, nil)
	switch {
	case len(res.Gateways) > 0:
		if res.Err == ErrUnvalidated {
			res.Err = nil // some records validated; the others were skipped
		}
	case res.Err != nil:
	case transportErr != nil:
		res.Err = transportErr
	default:
		res.Err = ErrNoRecord
	}
	return res
}
