package dnsoe

import (
	"container/list"
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
	// by a resolver the configuration trusts), or that oevpn validated
	// itself from its trust anchors; a denial of existence counts only
	// when validated too.
	DNSSECRequire DNSSEC = iota
	// DNSSECPrefer uses unvalidated answers too, marked as such, but
	// never a bogus one (a signed zone's answer that failed validation):
	// a SERVFAIL from the resolver is a failure, not a reason to ask
	// again with checking disabled.
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
	// ErrUnusableKey means the destination publishes an IPSECKEY record
	// or TXT delegation, but no gateway with a key we can use (an RSA key
	// out of bounds, an algorithm we lack, a gateway whose key cannot be
	// found): it asked for encryption, so it is not "no record".
	ErrUnusableKey = errors.New("dnsoe: published record has no usable key")
)

// Result is what DNS says about a destination.
type Result struct {
	// Gateways, in order of preference (see Order).
	Gateways []Gateway
	// Validated is true when every answer used was DNSSEC-validated.
	Validated bool
	// Expires is when the answer must be looked up again (its TTL; for
	// errors, ErrorTTL).
	Expires time.Time
	// Err is ErrNoRecord (cached by the zone's negative TTL),
	// ErrUnvalidated, ErrBogus, ErrUnusableKey, ErrBusy or a transport
	// error.
	Err error
}

// Defaults of the Resolver's limits.
const (
	DefaultTimeout              = 2 * time.Second
	DefaultMaxInFlight          = 64
	DefaultMaxResponderInFlight = 16
	DefaultMaxCache             = 8192
	DefaultErrorTTL             = 5 * time.Second
)

// Resolver looks up opportunistic IPsec records through one recursive
// resolver, caches answers by their TTL (negative ones by the SOA's,
// failures for ErrorTTL), shares one lookup among the callers that want
// the same destination at once, and bounds the lookups in flight, so that
// a slow or dead resolver never holds up more than the flows waiting for
// it, and the cache, so that remote parties choosing addresses cannot
// grow it without end.
type Resolver struct {
	// Server is the resolver's address, e.g. "127.0.0.1:53".
	Server string
	Mode   DNSSEC
	// Timeout bounds one lookup (default 2s).
	Timeout time.Duration
	// MaxInFlight bounds the lookups at once for our own traffic
	// (default 64), MaxResponderInFlight those of LookupResponder
	// (default 16), each failing at once with ErrBusy when full.
	MaxInFlight          int
	MaxResponderInFlight int
	// MaxCache bounds the destinations cached (default 8192): expired
	// entries go first, then the least recently used.
	MaxCache int
	// ErrorTTL is how long a failed lookup (transport error, SERVFAIL,
	// ErrBogus) is remembered (default 5s), so that a flood of failing
	// lookups does not hammer the resolver.
	ErrorTTL time.Duration
	// Dialer, if set, makes the query sockets (e.g. marked so that they
	// bypass the tunnel).
	Dialer *net.Dialer
	// Anchors, if set, make the Resolver validate DNSSEC itself, from
	// these trust anchors, instead of trusting the resolver's AD bit: it
	// asks with checking disabled and checks the signatures and denials
	// of existence up to an anchor.
	Anchors *TrustAnchors

	// xchg, if set, replaces the network (tests).
	xchg func(ctx context.Context, m *dns.Msg) (*dns.Msg, error)

	val *validator

	once      sync.Once
	sem       chan struct{}
	respSem   chan struct{}
	mu        sync.Mutex
	cache     map[netip.Addr]*list.Element // of *cacheEntry, in lru
	lru       *list.List                   // most recently used first
	lastSweep time.Time
	flight    map[netip.Addr]*call
}

type cacheEntry struct {
	dest netip.Addr
	res  Result
}

// call is a lookup in flight, which later callers for the same
// destination wait for.
type call struct {
	done chan struct{}
	res  Result
}

func (r *Resolver) init() {
	r.once.Do(func() {
		orDefault := func(n, d int) int {
			if n <= 0 {
				return d
			}
			return n
		}
		r.sem = make(chan struct{}, orDefault(r.MaxInFlight, DefaultMaxInFlight))
		r.respSem = make(chan struct{}, orDefault(r.MaxResponderInFlight, DefaultMaxResponderInFlight))
		r.MaxCache = orDefault(r.MaxCache, DefaultMaxCache)
		if r.Anchors != nil {
			r.val = &validator{anchors: r.Anchors, query: r.raw}
		}
		r.cache = map[netip.Addr]*list.Element{}
		r.lru = list.New()
		r.flight = map[netip.Addr]*call{}
		if r.Timeout <= 0 {
			r.Timeout = DefaultTimeout
		}
		if r.ErrorTTL <= 0 {
			r.ErrorTTL = DefaultErrorTTL
		}
	})
}

// CacheLen returns how many destinations the cache holds.
func (r *Resolver) CacheLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

// Cached returns a cached, unexpired result for dest.
func (r *Resolver) Cached(dest netip.Addr, now time.Time) (Result, bool) {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cachedLocked(dest.Unmap(), now)
}

func (r *Resolver) cachedLocked(dest netip.Addr, now time.Time) (Result, bool) {
	e, ok := r.cache[dest]
	if !ok {
		return Result{}, false
	}
	ce := e.Value.(*cacheEntry)
	if !now.Before(ce.res.Expires) {
		return Result{}, false
	}
	r.lru.MoveToFront(e)
	return ce.res, true
}

// storeLocked caches res for dest, making room first when the cache is
// full: every expired entry goes (at most once a second, the sweep
// costing the cache's size), then the least recently used.
func (r *Resolver) storeLocked(dest netip.Addr, res Result, now time.Time) {
	if e, ok := r.cache[dest]; ok {
		e.Value.(*cacheEntry).res = res
		r.lru.MoveToFront(e)
		return
	}
	if len(r.cache) >= r.MaxCache && now.Sub(r.lastSweep) >= time.Second {
		r.lastSweep = now
		for e := r.lru.Back(); e != nil; {
			prev := e.Prev()
			if ce := e.Value.(*cacheEntry); !now.Before(ce.res.Expires) {
				r.lru.Remove(e)
				delete(r.cache, ce.dest)
			}
			e = prev
		}
	}
	for len(r.cache) >= r.MaxCache {
		e := r.lru.Back()
		r.lru.Remove(e)
		delete(r.cache, e.Value.(*cacheEntry).dest)
	}
	r.cache[dest] = r.lru.PushFront(&cacheEntry{dest: dest, res: res})
}

// Lookup finds the gateways of dest: IPSECKEY and TXT records in its
// reverse zone, and for a gateway named without a key, its KEY or IPSECKEY
// record. It fails at once with ErrBusy when MaxInFlight lookups run.
func (r *Resolver) Lookup(ctx context.Context, dest netip.Addr) Result {
	r.init()
	return r.do(ctx, dest, r.sem)
}

// LookupResponder is Lookup for the keys of initiators that reached us:
// remote parties choose those addresses, so these lookups have a budget
// of their own (MaxResponderInFlight) and cannot starve the lookups for
// our own traffic.
func (r *Resolver) LookupResponder(ctx context.Context, dest netip.Addr) Result {
	r.init()
	return r.do(ctx, dest, r.respSem)
}

// do answers from the cache, or joins the lookup of dest in flight, or
// runs one within budget.
func (r *Resolver) do(ctx context.Context, dest netip.Addr, budget chan struct{}) Result {
	dest = dest.Unmap()
	r.mu.Lock()
	if res, ok := r.cachedLocked(dest, time.Now()); ok {
		r.mu.Unlock()
		return res
	}
	if c, ok := r.flight[dest]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.res
		case <-ctx.Done():
			return Result{Err: fmt.Errorf("dnsoe: %v: %w", dest, ctx.Err())}
		}
	}
	select {
	case budget <- struct{}{}:
	default:
		r.mu.Unlock()
		return Result{Err: ErrBusy}
	}
	c := &call{done: make(chan struct{})}
	r.flight[dest] = c
	r.mu.Unlock()

	// The lookup is shared: one caller giving up must not end it for the
	// others, so it runs for Timeout whatever ctx says.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Timeout)
	res := r.lookup(lctx, dest)
	cancel()
	<-budget
	now := time.Now()
	if res.Err != nil && !errors.Is(res.Err, ErrNoRecord) && !errors.Is(res.Err, ErrUnvalidated) && !errors.Is(res.Err, ErrUnusableKey) {
		res.Expires = now.Add(r.ErrorTTL) // a failure: remembered briefly
	}
	r.mu.Lock()
	r.storeLocked(dest, res, now)
	delete(r.flight, dest)
	r.mu.Unlock()
	c.res = res
	close(c.done)
	return res
}

// answer is one query's outcome.
type answer struct {
	rrs       []dns.RR
	validated bool
	// bogus: the zone is signed and the answer failed (own) validation.
	bogus bool
	// unproven: a denial of existence that nobody validated (no AD bit
	// from the resolver), which under DNSSECRequire is not "no record".
	unproven bool
	ttl      time.Duration // of the records, or the negative TTL
	err      error
	// cause: why the answer is bogus or not validated (hint.go).
	cause error
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
	if err != nil {
		return answer{err: fmt.Errorf("dnsoe: %s %s: %w", name, dns.TypeToString[qtype], err)}
	}
	if err := rcodeErr(name, qtype, in); err != nil {
		return answer{err: err}
	}
	a := answer{rrs: follow(name, qtype, in), validated: in.AuthenticatedData && r.Mode != DNSSECOff}
	a.ttl = ttlOf(a.rrs, in)
	a.unproven = len(a.rrs) == 0 && !a.validated
	if !a.validated {
		a.cause = whyUnvalidatedByResolver(r.Server, in)
	}
	return a
}

// queryValidating asks with checking disabled and validates the answer
// against the trust anchors.
func (r *Resolver) queryValidating(ctx context.Context, name string, qtype uint16) answer {
	in, err := r.raw(ctx, name, qtype)
	if err == nil {
		err = rcodeErr(name, qtype, in)
	}
	if err != nil {
		return answer{err: fmt.Errorf("dnsoe: %s %s: %w", name, dns.TypeToString[qtype], err)}
	}
	c, err := r.val.check(ctx, name, qtype, in)
	if err != nil {
		return answer{err: fmt.Errorf("dnsoe: %s %s: validating: %w", name, dns.TypeToString[qtype], err)}
	}
	a := answer{rrs: c.rrs, validated: c.sec == secure, bogus: c.sec == bogus, ttl: min(ttlOf(c.rrs, in), c.ttl)}
	switch {
	case c.sec == bogus:
		a.cause = whyBogus(in, name, qtype, time.Now())
	case c.sec == insecure && r.val.anchors.closest(name) == "":
		a.cause = fmt.Errorf("%w (%s)", ErrNoTrustAnchor, name)
	case c.sec == insecure:
		a.cause = fmt.Errorf("%w (%s, proven by its parent)", ErrZoneUnsigned, name)
	}
	return a
}

func rcodeErr(name string, qtype uint16, in *dns.Msg) error {
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return nil
	}
	if cause := edeCause(in); cause != nil {
		return fmt.Errorf("dnsoe: %s %s: %s: %w", name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode], cause)
	}
	return fmt.Errorf("dnsoe: %s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode])
}

// follow returns the RRset of qtype owned by name in the answer, or by the
// end of the CNAME/DNAME chain from name; records owned by any other name
// are never used.
func follow(name string, qtype uint16, in *dns.Msg) []dns.RR {
	name = canonical(name)
	for hop := 0; hop <= maxChain; hop++ {
		if set, _ := rrset(in.Answer, name, qtype); len(set) > 0 {
			return set
		}
		if cn, _ := rrset(in.Answer, name, dns.TypeCNAME); len(cn) == 1 {
			if cn, ok := cn[0].(*dns.CNAME); ok {
				name = canonical(cn.Target)
				continue
			}
		}
		next := ""
		for _, rr := range in.Answer {
			if d, ok := rr.(*dns.DNAME); ok && dns.IsSubDomain(d.Hdr.Name, name) && !sameName(d.Hdr.Name, name) {
				next = canonical(strings.TrimSuffix(name, canonical(d.Hdr.Name)) + canonical(d.Target))
				break
			}
		}
		if _, ok := dns.IsDomainName(next); next == "" || !ok || len(next) > 255 {
			return nil
		}
		name = next
	}
	return nil
}

// ttlOf is how long rrs may be cached, or for a denial, the negative TTL
// of the SOA (RFC 2308 §5; 300 s without one).
func ttlOf(rrs []dns.RR, in *dns.Msg) time.Duration {
	ttl := uint32(1<<31 - 1)
	for _, rr := range rrs {
		ttl = min(ttl, rr.Header().Ttl)
	}
	if len(rrs) == 0 {
		ttl = 300
		for _, rr := range in.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = min(soa.Hdr.Ttl, soa.Minttl)
			}
		}
	}
	return time.Duration(ttl) * time.Second
}

// exchange sends m over UDP, and again over TCP if the answer is truncated.
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	if r.xchg != nil {
		return r.xchg(ctx, m)
	}
	c := &dns.Client{Net: "udp", Dialer: r.Dialer}
	in, _, err := c.ExchangeContext(ctx, m, r.Server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.Server)
	}
	return in, err
}

// lookup asks DNS what dest publishes: its IPSECKEY, TXT (FreeS/WAN) or
// KEY (IP AutoSEC) records, then the keys and addresses of the gateways
// they name.
func (r *Resolver) lookup(ctx context.Context, dest netip.Addr) Result {
	l := &lookupRun{r: r, ctx: ctx, dest: dest, name: ReverseName(dest),
		res: Result{Validated: true, Expires: time.Now().Add(time.Hour)}}
	l.destRecords()
	l.gatewayKeys()
	l.gatewayAddrs()
	return l.result()
}

// lookupRun is one lookup's state: what the answers so far gave and how
// they failed.
type lookupRun struct {
	r            *Resolver
	ctx          context.Context
	dest         netip.Addr
	name         string // dest's reverse name
	res          Result
	transportErr error
	sawBogus     bool
	bogusCause   error // the first bogus answer's (whyBogus)
	published    bool  // an IPsec record of dest's, usable or not
}

// use reports whether answer a has records to read, and records what it
// says otherwise: a transport error, a validation failure (neither records
// nor "no record"), an unvalidated answer under the DNSSEC mode; and the
// earliest expiry.
func (l *lookupRun) use(a answer) bool {
	switch {
	case a.err != nil:
		if l.transportErr == nil {
			l.transportErr = a.err
		}
		return false
	case a.bogus:
		if !l.sawBogus {
			l.sawBogus, l.bogusCause = true, a.cause
		}
		return false
	}
	if exp := time.Now().Add(a.ttl); exp.Before(l.res.Expires) {
		l.res.Expires = exp
	}
	mode := l.r.Mode
	if len(a.rrs) == 0 {
		if a.unproven && mode == DNSSECRequire && l.res.Err == nil {
			l.res.Err = unvalidated(a.cause)
		}
		return false
	}
	if !a.validated {
		if mode == DNSSECRequire {
			l.res.Err = unvalidated(a.cause)
			return false
		}
		if mode == DNSSECPrefer {
			l.res.Validated = false
		}
	}
	return true
}

// destRecords reads dest's own records: IPSECKEY and TXT, else a KEY
// record of the destination itself (plain, or IP AutoSEC).
func (l *lookupRun) destRecords() {
	if a := l.r.query(l.ctx, l.name, dns.TypeIPSECKEY); l.use(a) {
		for _, rr := range a.rrs {
			if rr, ok := rr.(*dns.IPSECKEY); ok {
				l.published = true
				if g, err := FromIPSECKEY(rr, l.dest); err == nil {
					l.res.Gateways = append(l.res.Gateways, g)
				}
			}
		}
	}
	if a := l.r.query(l.ctx, l.name, dns.TypeTXT); l.use(a) {
		for _, rr := range a.rrs {
			t, ok := rr.(*dns.TXT)
			if !ok {
				continue
			}
			txt := strings.Join(t.Txt, "")
			if !strings.HasPrefix(txt, txtPrefix) {
				continue
			}
			l.published = true
			if g, err := FromTXT(txt); err == nil {
				l.res.Gateways = append(l.res.Gateways, g)
			}
		}
	}
	if len(l.res.Gateways) > 0 || l.res.Err != nil {
		return
	}
	if a := l.r.query(l.ctx, l.name, dns.TypeKEY); l.use(a) {
		for _, rr := range a.rrs {
			if rr, ok := rr.(*dns.KEY); ok {
				if g, err := FromKEYRecord(rr, l.dest); err == nil {
					l.res.Gateways = append(l.res.Gateways, g)
				}
			}
		}
	}
}

// gatewayKeys finds the keys of gateways named without one: their KEY (or
// IPSECKEY) record.
func (l *lookupRun) gatewayKeys() {
	for i := range l.res.Gateways {
		g := &l.res.Gateways[i]
		if g.Key != nil {
			continue
		}
		owner := dns.Fqdn(g.Name)
		if g.Name == "" {
			owner = ReverseName(g.Addr)
		}
		if a := l.r.query(l.ctx, owner, dns.TypeKEY); l.use(a) {
			for _, rr := range a.rrs {
				if rr, ok := rr.(*dns.KEY); ok {
					if k, err := FromKEY(rr); err == nil {
						g.Key = k
						break
					}
				}
			}
		}
		if g.Key != nil {
			continue
		}
		if a := l.r.query(l.ctx, owner, dns.TypeIPSECKEY); l.use(a) {
			for _, rr := range a.rrs {
				if rr, ok := rr.(*dns.IPSECKEY); ok {
					if kg, err := FromIPSECKEY(rr, g.Addr); err == nil && kg.Key != nil {
						g.Key = kg.Key
						break
					}
				}
			}
		}
	}
}

// gatewayAddrs finds the addresses of gateways known only by name, of
// dest's family.
func (l *lookupRun) gatewayAddrs() {
	qtype := dns.TypeA
	if l.dest.Is6() {
		qtype = dns.TypeAAAA
	}
	for i := range l.res.Gateways {
		g := &l.res.Gateways[i]
		if g.Addr.IsValid() || g.Name == "" {
			continue
		}
		if a := l.r.query(l.ctx, dns.Fqdn(g.Name), qtype); l.use(a) {
			switch rr := a.rrs[0].(type) {
			case *dns.A:
				g.Addr, _ = netip.AddrFromSlice(rr.A.To4())
			case *dns.AAAA:
				g.Addr, _ = netip.AddrFromSlice(rr.AAAA)
			}
		}
	}
}

// result keeps the gateways with a key (without one there is no
// authenticated peer), in order, and says why there are none.
func (l *lookupRun) result() Result {
	res := l.res
	kept := res.Gateways[:0]
	for _, g := range res.Gateways {
		if g.Key != nil {
			kept = append(kept, g)
		}
	}
	res.Gateways = Order(kept, nil)
	switch {
	case len(res.Gateways) > 0:
		if errors.Is(res.Err, ErrUnvalidated) {
			res.Err = nil // some records validated; the others were skipped
		}
	case l.sawBogus && l.bogusCause != nil:
		res.Err = fmt.Errorf("%w (%s): %w", ErrBogus, l.name, l.bogusCause)
	case l.sawBogus:
		res.Err = fmt.Errorf("%w (%s)", ErrBogus, l.name)
	case l.transportErr != nil:
		res.Err = l.transportErr
	case res.Err != nil:
	case l.published:
		res.Err = fmt.Errorf("%w (%s)", ErrUnusableKey, l.name)
	default:
		res.Err = ErrNoRecord
	}
	return res
}
