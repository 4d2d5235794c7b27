package dnsoe

import (
	"crypto"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// tzone is a zone for the in-process DNS tests, signed (when it is) with a
// key made by the test, with an NSEC or NSEC3 chain, answering as an
// authoritative server does.
type tzone struct {
	origin        string
	signed        bool
	nsec3, optOut bool
	key           *dns.DNSKEY
	priv          crypto.Signer
	sets          map[string]map[uint16][]dns.RR // by canonical owner
	sigs          map[string]map[uint16]*dns.RRSIG
	chain         []dns.RR // NSEC or NSEC3, in chain order
	names         []string // in the chain, same order
}

const tzTTL = 300

func newTZone(t testing.TB, origin string, signed bool) *tzone {
	t.Helper()
	z := &tzone{origin: canonical(origin), signed: signed, sets: map[string]map[uint16][]dns.RR{}, sigs: map[string]map[uint16]*dns.RRSIG{}}
	if signed {
		z.key = &dns.DNSKEY{Hdr: dns.RR_Header{Name: z.origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: tzTTL},
			Flags: 257, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
		priv, err := z.key.Generate(256)
		if err != nil {
			t.Fatal(err)
		}
		z.priv = priv.(crypto.Signer)
	}
	z.add(t, z.origin+" 300 IN SOA ns."+z.origin+" host."+z.origin+" 1 3600 600 86400 60", z.origin+" 300 IN NS ns."+z.origin)
	if signed {
		z.put(z.key)
	}
	return z
}

func (z *tzone) put(rr dns.RR) {
	h := rr.Header()
	n := canonical(h.Name)
	if z.sets[n] == nil {
		z.sets[n] = map[uint16][]dns.RR{}
	}
	z.sets[n][h.Rrtype] = append(z.sets[n][h.Rrtype], rr)
}

func (z *tzone) add(t testing.TB, lines ...string) {
	t.Helper()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		z.put(rr)
	}
}

// delegate makes child a zone cut of z, signed (with a DS) when child is.
func (z *tzone) delegate(t testing.TB, child *tzone) {
	z.add(t, child.origin+" 300 IN NS ns."+child.origin)
	if child.signed {
		ds := child.key.ToDS(dns.SHA256)
		ds.Hdr.Ttl = tzTTL
		z.put(ds)
	}
}

// signWith returns an RRSIG over set by key/priv for signer, valid now.
func signWith(t testing.TB, set []dns.RR, signer string, key *dns.DNSKEY, priv crypto.Signer) *dns.RRSIG {
	t.Helper()
	h := set[0].Header()
	now := time.Now()
	sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: h.Name, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: h.Ttl},
		Inception: uint32(now.Add(-time.Hour).Unix()), Expiration: uint32(now.Add(24 * time.Hour).Unix()),
		KeyTag: key.KeyTag(), SignerName: signer, Algorithm: key.Algorithm}
	if err := sig.Sign(priv, set); err != nil {
		t.Fatal(err)
	}
	return sig
}

func (z *tzone) sign(t testing.TB, set []dns.RR) *dns.RRSIG {
	return signWith(t, set, z.origin, z.key, z.priv)
}

// delegation reports whether n is a zone cut below the apex.
func (z *tzone) delegation(n string) bool {
	return n != z.origin && len(z.sets[n][dns.TypeNS]) > 0
}

// finish builds the denial chain and signs every authoritative RRset.
func (z *tzone) finish(t testing.TB) {
	t.Helper()
	if !z.signed {
		return
	}
	if z.nsec3 {
		flags := uint8(0)
		if z.optOut {
			flags = 1
		}
		z.put(&dns.NSEC3PARAM{Hdr: dns.RR_Header{Name: z.origin, Rrtype: dns.TypeNSEC3PARAM, Class: dns.ClassINET}, Hash: dns.SHA1, Flags: 0})
		type h struct{ hash, name string }
		var hs []h
		for n := range z.sets {
			if z.optOut && z.delegation(n) && len(z.sets[n][dns.TypeDS]) == 0 {
				continue // opt-out: unsigned delegations have no NSEC3
			}
			hs = append(hs, h{dns.HashName(n, dns.SHA1, 0, ""), n})
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].hash < hs[j].hash })
		for i, x := range hs {
			r := &dns.NSEC3{Hdr: dns.RR_Header{Name: strings.ToLower(x.hash) + "." + z.origin, Rrtype: dns.TypeNSEC3, Class: dns.ClassINET, Ttl: 60},
				Hash: dns.SHA1, Flags: flags, Iterations: 0, HashLength: 20, NextDomain: hs[(i+1)%len(hs)].hash, TypeBitMap: z.types(x.name, false)}
			z.chain, z.names = append(z.chain, r), append(z.names, x.name)
		}
	} else {
		var ns []string
		for n := range z.sets {
			ns = append(ns, n)
		}
		sort.Slice(ns, func(i, j int) bool { return canonicalCompare(ns[i], ns[j]) < 0 })
		for i, n := range ns {
			r := &dns.NSEC{Hdr: dns.RR_Header{Name: n, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: 60},
				NextDomain: ns[(i+1)%len(ns)], TypeBitMap: z.types(n, true)}
			z.chain, z.names = append(z.chain, r), append(z.names, n)
		}
	}
	for n, sets := range z.sets {
		for typ, set := range sets {
			if z.delegation(n) && typ != dns.TypeDS {
				continue // the child's, not signed here
			}
			if z.sigs[n] == nil {
				z.sigs[n] = map[uint16]*dns.RRSIG{}
			}
			z.sigs[n][typ] = z.sign(t, set)
		}
	}
	for _, r := range z.chain {
		n := canonical(r.Header().Name)
		if z.sigs[n] == nil {
			z.sigs[n] = map[uint16]*dns.RRSIG{}
		}
		z.sigs[n][r.Header().Rrtype] = z.sign(t, []dns.RR{r})
	}
}

func (z *tzone) types(n string, nsec bool) []uint16 {
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

// withSig is set followed by its signature, if any.
func (z *tzone) withSig(n string, typ uint16) []dns.RR {
	out := append([]dns.RR(nil), z.sets[n][typ]...)
	if s := z.sigs[n][typ]; s != nil {
		out = append(out, s)
	}
	return out
}

func (z *tzone) chainRR(i int) []dns.RR {
	r := z.chain[i]
	return []dns.RR{r, z.sigs[canonical(r.Header().Name)][r.Header().Rrtype]}
}

// matching and covering find the chain record of or around a name.
func (z *tzone) matching(n string) int {
	for i, r := range z.chain {
		if nsec3, ok := r.(*dns.NSEC3); ok && nsec3.Match(n) || !ok && z.names[i] == n {
			return i
		}
	}
	return -1
}

func (z *tzone) covering(n string) int {
	for i, r := range z.chain {
		switch r := r.(type) {
		case *dns.NSEC3:
			if r.Cover(n) && !r.Match(n) {
				return i
			}
		case *dns.NSEC:
			lo, hi := canonicalCompare(r.Hdr.Name, n), canonicalCompare(n, r.NextDomain)
			if lo < 0 && (hi < 0 || canonicalCompare(r.NextDomain, r.Hdr.Name) <= 0) {
				return i
			}
		}
	}
	return -1
}

// answer is the zone's authoritative answer to q.
func (z *tzone) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	n := canonical(q.Name)
	if set := z.withSig(n, q.Qtype); len(set) > 0 {
		m.Answer = set
		return m
	}
	if set := z.withSig(n, dns.TypeCNAME); len(set) > 0 {
		m.Answer = set // the server chases it
		return m
	}
	m.Ns = z.withSig(z.origin, dns.TypeSOA)
	if !z.signed {
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
	for z.sets[ce] == nil && ce != z.origin {
		ce = parent(ce)
	}
	if z.nsec3 {
		proof(z.matching(ce))
		proof(z.covering(nextCloser(n, ce)))
	} else {
		proof(z.covering(n))
	}
	proof(z.covering("*." + ce))
	return m
}

// zoneServer is an in-process DNS server on loopback serving tzones as
// their authoritative servers would (DS from the parent side), as a
// resolver asked with checking disabled does; hook, if set, may replace
// any answer: it is the attacker on the path.
type zoneServer struct {
	addr    string
	zones   []*tzone
	mu      sync.Mutex
	hook    func(q dns.Question, honest *dns.Msg) *dns.Msg
	queries atomic.Int32
}

// newZoneServer finishes the zones and serves them in process
// (respond); listen puts them on a loopback socket.
func newZoneServer(t testing.TB, zones ...*tzone) *zoneServer {
	t.Helper()
	for _, z := range zones {
		z.finish(t)
	}
	return &zoneServer{zones: zones}
}

func (zs *zoneServer) listen(t testing.TB) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	zs.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(zs.serve), UDPSize: 65535}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
}

func (zs *zoneServer) setHook(h func(q dns.Question, honest *dns.Msg) *dns.Msg) {
	zs.mu.Lock()
	zs.hook = h
	zs.mu.Unlock()
}

func (zs *zoneServer) respond(req *dns.Msg) *dns.Msg {
	q := req.Question[0]
	n := canonical(q.Name)
	var best *tzone
	for _, z := range zs.zones {
		if !dns.IsSubDomain(z.origin, n) || q.Qtype == dns.TypeDS && z.origin == n {
			continue
		}
		if best == nil || dns.CountLabel(z.origin) > dns.CountLabel(best.origin) {
			best = z
		}
	}
	if best == nil {
		m := new(dns.Msg)
		return m.SetRcode(req, dns.RcodeRefused)
	}
	m := best.answer(req)
	// Chase a CNAME, as a recursive resolver does.
	if len(m.Answer) > 0 {
		if cn, ok := m.Answer[0].(*dns.CNAME); ok && q.Qtype != dns.TypeCNAME && req.Id != 0xffff {
			next := req.Copy()
			next.Question[0].Name = cn.Target
			next.Id = 0xffff // once
			more := zs.respond(next)
			m.Answer = append(m.Answer, more.Answer...)
			m.Ns, m.Rcode = more.Ns, more.Rcode
		}
	}
	return m
}

func (zs *zoneServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	zs.queries.Add(1)
	m := zs.respond(req)
	zs.mu.Lock()
	hook := zs.hook
	zs.mu.Unlock()
	if hook != nil {
		if forged := hook(req.Question[0], m); forged != nil {
			rcode := forged.Rcode
			m = forged
			m.SetReply(req)
			m.Rcode = rcode
		}
	}
	w.WriteMsg(m)
}
