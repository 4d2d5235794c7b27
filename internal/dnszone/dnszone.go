// Package dnszone is a DNS zone served as its authoritative server would
// serve it, signed with DNSSEC (a DNSKEY made for it, an RRSIG over every
// authoritative RRset, an NSEC or NSEC3 chain for denials, a DS at the
// parent of a signed delegation), and an in-process server for a tree of
// such zones. The demo publishes keys in it; the resolver's tests attack
// their own validation through its hook. It is not a name server for
// production: zones are built in memory and never change once served.
package dnszone

import (
	"crypto"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/oevpn/oevpn/internal/dnsname"
)

// TTL is the TTL of the zone's own records (SOA, NS, DNSKEY, DS).
const TTL = 300

// Zone is one zone, signed (when it is) with its own key, with an NSEC or
// NSEC3 chain. Build it with New, Add and Delegate, set NSEC3 and OptOut
// before it is served; NewServer finishes it (chain and signatures).
type Zone struct {
	// Origin is the zone's apex, canonical (lower case, fully qualified).
	Origin string
	Signed bool
	// NSEC3 makes the denial chain NSEC3 (SHA-1, no salt, no extra
	// iterations) instead of NSEC; OptOut leaves unsigned delegations out
	// of it.
	NSEC3, OptOut bool
	// Key and Priv are the zone's key (a KSK/ZSK in one, ECDSA P-256),
	// when it is signed.
	Key  *dns.DNSKEY
	Priv crypto.Signer

	sets     map[string]map[uint16][]dns.RR // by canonical owner
	sigs     map[string]map[uint16]*dns.RRSIG
	chain    []dns.RR // NSEC or NSEC3, in chain order
	names    []string // in the chain, same order
	finished bool
}

// New returns a zone at origin with its SOA and NS records (and its DNSKEY
// when signed).
func New(origin string, signed bool) (*Zone, error) {
	z := &Zone{Origin: canonical(origin), Signed: signed, sets: map[string]map[uint16][]dns.RR{}, sigs: map[string]map[uint16]*dns.RRSIG{}}
	if signed {
		z.Key = &dns.DNSKEY{Hdr: dns.RR_Header{Name: z.Origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: TTL},
			Flags: 257, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
		priv, err := z.Key.Generate(256)
		if err != nil {
			return nil, fmt.Errorf("dnszone: %s: %w", z.Origin, err)
		}
		z.Priv = priv.(crypto.Signer)
	}
	err := z.Add(fmt.Sprintf("%s %d IN SOA ns.%s host.%s 1 3600 600 86400 60", z.Origin, TTL, z.Origin, z.Origin),
		fmt.Sprintf("%s %d IN NS ns.%s", z.Origin, TTL, z.Origin))
	if err != nil {
		return nil, err
	}
	if signed {
		z.Put(z.Key)
	}
	return z, nil
}

// Put adds rr to the zone.
func (z *Zone) Put(rr dns.RR) {
	h := rr.Header()
	n := canonical(h.Name)
	if z.sets[n] == nil {
		z.sets[n] = map[uint16][]dns.RR{}
	}
	z.sets[n][h.Rrtype] = append(z.sets[n][h.Rrtype], rr)
}

// Add adds records in presentation format, one per line.
func (z *Zone) Add(lines ...string) error {
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			return fmt.Errorf("dnszone: %s: %q: %w", z.Origin, l, err)
		}
		if rr == nil {
			return fmt.Errorf("dnszone: %s: %q: no record", z.Origin, l)
		}
		z.Put(rr)
	}
	return nil
}

// Delegate makes child a zone cut of z, signed (with a DS) when child is.
func (z *Zone) Delegate(child *Zone) {
	ns := &dns.NS{Hdr: dns.RR_Header{Name: child.Origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: TTL}, Ns: "ns." + child.Origin}
	z.Put(ns)
	if child.Signed {
		z.Put(child.DS())
	}
}

// DS is the DS record of the zone's key (SHA-256): what its parent
// publishes, or what a validator takes as trust anchor. Nil when the zone
// is not signed.
func (z *Zone) DS() *dns.DS {
	if !z.Signed {
		return nil
	}
	ds := z.Key.ToDS(dns.SHA256)
	ds.Hdr.Ttl = TTL
	return ds
}

// SignWith returns an RRSIG over set by key/priv in the name of signer,
// valid from an hour ago for a day.
func SignWith(set []dns.RR, signer string, key *dns.DNSKEY, priv crypto.Signer) (*dns.RRSIG, error) {
	if len(set) == 0 {
		return nil, fmt.Errorf("dnszone: signing an empty set")
	}
	h := set[0].Header()
	now := time.Now()
	sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: h.Name, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: h.Ttl},
		Inception: uint32(now.Add(-time.Hour).Unix()), Expiration: uint32(now.Add(24 * time.Hour).Unix()),
		KeyTag: key.KeyTag(), SignerName: signer, Algorithm: key.Algorithm}
	if err := sig.Sign(priv, set); err != nil {
		return nil, fmt.Errorf("dnszone: signing %s %s: %w", h.Name, dns.TypeToString[h.Rrtype], err)
	}
	return sig, nil
}

// Sign returns the zone's RRSIG over set.
func (z *Zone) Sign(set []dns.RR) (*dns.RRSIG, error) {
	return SignWith(set, z.Origin, z.Key, z.Priv)
}

// delegation reports whether n is a zone cut below the apex.
func (z *Zone) delegation(n string) bool {
	return n != z.Origin && len(z.sets[n][dns.TypeNS]) > 0
}

// finish builds the denial chain and signs every authoritative RRset,
// once.
func (z *Zone) finish() error {
	if !z.Signed || z.finished {
		return nil
	}
	z.finished = true
	if z.NSEC3 {
		flags := uint8(0)
		if z.OptOut {
			flags = 1
		}
		z.Put(&dns.NSEC3PARAM{Hdr: dns.RR_Header{Name: z.Origin, Rrtype: dns.TypeNSEC3PARAM, Class: dns.ClassINET}, Hash: dns.SHA1, Flags: 0})
		type h struct{ hash, name string }
		var hs []h
		for n := range z.sets {
			if z.OptOut && z.delegation(n) && len(z.sets[n][dns.TypeDS]) == 0 {
				continue // opt-out: unsigned delegations have no NSEC3
			}
			hs = append(hs, h{dns.HashName(n, dns.SHA1, 0, ""), n})
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].hash < hs[j].hash })
		for i, x := range hs {
			r := &dns.NSEC3{Hdr: dns.RR_Header{Name: strings.ToLower(x.hash) + "." + z.Origin, Rrtype: dns.TypeNSEC3, Class: dns.ClassINET, Ttl: 60},
				Hash: dns.SHA1, Flags: flags, Iterations: 0, HashLength: 20, NextDomain: hs[(i+1)%len(hs)].hash, TypeBitMap: z.types(x.name, false)}
			z.chain, z.names = append(z.chain, r), append(z.names, x.name)
		}
	} else {
		var ns []string
		for n := range z.sets {
			ns = append(ns, n)
		}
		sort.Slice(ns, func(i, j int) bool { return dnsname.Compare(ns[i], ns[j]) < 0 })
		for i, n := range ns {
			r := &dns.NSEC{Hdr: dns.RR_Header{Name: n, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: 60},
				NextDomain: ns[(i+1)%len(ns)], TypeBitMap: z.types(n, true)}
			z.chain, z.names = append(z.chain, r), append(z.names, n)
		}
	}
	sign := func(n string, typ uint16, set []dns.RR) error {
		sig, err := z.Sign(set)
		if err != nil {
			return err
		}
		if z.sigs[n] == nil {
			z.sigs[n] = map[uint16]*dns.RRSIG{}
		}
		z.sigs[n][typ] = sig
		return nil
	}
	for n, sets := range z.sets {
		for typ, set := range sets {
			if z.delegation(n) && typ != dns.TypeDS {
				continue // the child's, not signed here
			}
			if err := sign(n, typ, set); err != nil {
				return err
			}
		}
	}
	for _, r := range z.chain {
		if err := sign(canonical(r.Header().Name), r.Header().Rrtype, []dns.RR{r}); err != nil {
			return err
		}
	}
	return nil
}

func (z *Zone) types(n string, nsec bool) []uint16 {
	var ts []uint16
	for typ := range z.sets[n] {
		ts = append(ts, typ)
	}
	if !z.delegation(n) || len(z.sets[n][dns.TypeDS]) > 0 {
		ts = append(ts, dns.TypeRRSIG)
	}
	if nsec {
		ts = append(ts, dns.TypeNSEC)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

// WithSig returns the RRset of name and type followed by its signature, if
// any (once the zone is served).
func (z *Zone) WithSig(name string, typ uint16) []dns.RR {
	n := canonical(name)
	out := append([]dns.RR(nil), z.sets[n][typ]...)
	if s := z.sigs[n][typ]; s != nil {
		out = append(out, s)
	}
	return out
}

func (z *Zone) chainRR(i int) []dns.RR {
	r := z.chain[i]
	return []dns.RR{r, z.sigs[canonical(r.Header().Name)][r.Header().Rrtype]}
}

// matching and covering find the chain record of or around a name.
func (z *Zone) matching(n string) int {
	for i, r := range z.chain {
		if nsec3, ok := r.(*dns.NSEC3); ok && nsec3.Match(n) || !ok && z.names[i] == n {
			return i
		}
	}
	return -1
}

func (z *Zone) covering(n string) int {
	for i, r := range z.chain {
		switch r := r.(type) {
		case *dns.NSEC3:
			if r.Cover(n) && !r.Match(n) {
				return i
			}
		case *dns.NSEC:
			lo, hi := dnsname.Compare(r.Hdr.Name, n), dnsname.Compare(n, r.NextDomain)
			if lo < 0 && (hi < 0 || dnsname.Compare(r.NextDomain, r.Hdr.Name) <= 0) {
				return i
			}
		}
	}
	return -1
}

// answer is the zone's authoritative answer to req.
func (z *Zone) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	n := canonical(q.Name)
	if set := z.WithSig(n, q.Qtype); len(set) > 0 {
		m.Answer = set
		return m
	}
	if set := z.WithSig(n, dns.TypeCNAME); len(set) > 0 {
		m.Answer = set // the server chases it
		return m
	}
	m.Ns = z.WithSig(z.Origin, dns.TypeSOA)
	if !z.Signed {
		if z.sets[n] == nil {
			m.Rcode = dns.RcodeNameError
		}
		return m
	}
	seen := map[int]bool{}
	proof := func(i int) {
		if i >= 0 && !seen[i] {
			seen[i] = true
			m.Ns = append(m.Ns, z.chainRR(i)...)
		}
	}
	if i := z.matching(n); i >= 0 {
		proof(i) // NODATA
		return m
	}
	if z.sets[n] == nil {
		m.Rcode = dns.RcodeNameError
	}
	// Closest encloser: the longest existing ancestor.
	ce := parent(n)
	for z.sets[ce] == nil && ce != z.Origin && ce != "." {
		ce = parent(ce)
	}
	if z.NSEC3 {
		proof(z.matching(ce))
		proof(z.covering(nextCloser(n, ce)))
	} else {
		proof(z.covering(n))
	}
	proof(z.covering("*." + ce))
	return m
}

// Server serves zones as their authoritative servers would (the DS from
// the parent's side), chasing CNAMEs as a resolver asked with checking
// disabled does. Its hook, if set, may replace any answer: it is the
// attacker on the path.
type Server struct {
	// Addr is the address it listens on, once it does.
	Addr string
	// Queries counts the queries served.
	Queries atomic.Int32

	zones []*Zone
	mu    sync.Mutex
	hook  func(q dns.Question, honest *dns.Msg) *dns.Msg
	srv   *dns.Server
}

// NewServer finishes the zones (denial chains and signatures) and serves
// them in process (Respond); Listen puts them on a socket. The zones must
// not change afterwards.
func NewServer(zones ...*Zone) (*Server, error) {
	for _, z := range zones {
		if err := z.finish(); err != nil {
			return nil, err
		}
	}
	return &Server{zones: zones}, nil
}

// Listen serves the zones over UDP on addr (e.g. "127.0.0.1:0") until
// Close, and sets Addr.
func (s *Server) Listen(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dnszone: %w", err)
	}
	s.Addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: s, UDPSize: 65535}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	return nil
}

// Close stops serving on the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown()
}

// SetHook makes h see every answer (nil: none); what it returns, if not
// nil, is sent instead.
func (s *Server) SetHook(h func(q dns.Question, honest *dns.Msg) *dns.Msg) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

// Respond is the honest answer to req: from the deepest zone that holds
// its name (from the parent for a DS at a cut), REFUSED when none does.
func (s *Server) Respond(req *dns.Msg) *dns.Msg {
	if len(req.Question) != 1 {
		return new(dns.Msg).SetRcode(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	n := canonical(q.Name)
	var best *Zone
	for _, z := range s.zones {
		if !dns.IsSubDomain(z.Origin, n) || q.Qtype == dns.TypeDS && z.Origin == n {
			continue
		}
		if best == nil || dns.CountLabel(z.Origin) > dns.CountLabel(best.Origin) {
			best = z
		}
	}
	if best == nil {
		return new(dns.Msg).SetRcode(req, dns.RcodeRefused)
	}
	m := best.answer(req)
	// Chase a CNAME, as a recursive resolver does.
	if len(m.Answer) > 0 {
		if cn, ok := m.Answer[0].(*dns.CNAME); ok && q.Qtype != dns.TypeCNAME && req.Id != 0xffff {
			next := req.Copy()
			next.Question[0].Name = cn.Target
			next.Id = 0xffff // once
			more := s.Respond(next)
			m.Answer = append(m.Answer, more.Answer...)
			m.Ns, m.Rcode = more.Ns, more.Rcode
		}
	}
	return m
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.Queries.Add(1)
	m := s.Respond(req)
	s.mu.Lock()
	hook := s.hook
	s.mu.Unlock()
	if hook != nil && len(req.Question) == 1 {
		if forged := hook(req.Question[0], m); forged != nil {
			rcode := forged.Rcode
			m = forged
			m.SetReply(req)
			m.Rcode = rcode
		}
	}
	w.WriteMsg(m)
}

func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// parent is name without its first label ("." for the root).
func parent(name string) string {
	off, end := dns.NextLabel(name, 0)
	if end || off >= len(name) {
		return "."
	}
	return name[off:]
}

// nextCloser is the ancestor of name one label longer than ce.
func nextCloser(name, ce string) string {
	idx := dns.Split(name)
	n := dns.CountLabel(ce) + 1
	if n >= len(idx) {
		return name
	}
	return name[idx[len(idx)-n]:]
}
