package dnsoe

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/oevpn/oevpn/internal/dnszone"
)

// dnssecWorld is a signed reverse tree served in process: the anchored
// zone 0.192.in-addr.arpa (NSEC3 with opt-out) delegates to the victim's
// zone 2.0.192 (signed, NSEC), to 5.0.192 (signed, NSEC3), to an unsigned
// 3.0.192, and to 66.0.192, a correctly signed zone that the attacker
// controls.
type dnssecWorld struct {
	srv                   *dnszone.Server
	anchors               *TrustAnchors
	top, victim, v3, evil *dnszone.Zone
	victimKey, evilKey    ed25519.PublicKey
	evilPriv              ed25519.PrivateKey
}

func ipseckeyLine(t testing.TB, addr string, pub ed25519.PublicKey) string {
	t.Helper()
	lines, err := Records(addr, "", 10, pub)
	if err != nil {
		t.Fatal(err)
	}
	return lines[0]
}

func newDNSSECWorld(t *testing.T) *dnssecWorld {
	t.Helper()
	w := buildDNSSECWorld(t)
	if err := w.srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.srv.Close() })
	return w
}

// buildDNSSECWorld makes the zones and their in-process server, without a
// socket.
func buildDNSSECWorld(t testing.TB) *dnssecWorld {
	t.Helper()
	w := &dnssecWorld{}
	w.victimKey, _, _ = ed25519.GenerateKey(rand.Reader)
	w.evilKey, w.evilPriv, _ = ed25519.GenerateKey(rand.Reader)
	zone := func(origin string, signed bool, lines ...string) *dnszone.Zone {
		z, err := dnszone.New(origin, signed)
		if err == nil {
			err = z.Add(lines...)
		}
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	w.top = zone("0.192.in-addr.arpa.", true)
	w.top.NSEC3, w.top.OptOut = true, true
	w.victim = zone("2.0.192.in-addr.arpa.", true, ipseckeyLine(t, "192.0.2.7", w.victimKey), "10.2.0.192.in-addr.arpa. 300 IN PTR host.example.",
		"9.2.0.192.in-addr.arpa. 300 IN CNAME 9.5.0.192.in-addr.arpa.") // RFC 2317 style, into another zone
	w.v3 = zone("5.0.192.in-addr.arpa.", true, ipseckeyLine(t, "192.0.5.7", w.victimKey), "10.5.0.192.in-addr.arpa. 300 IN PTR host.example.")
	w.v3.NSEC3 = true
	nine, _ := dns.NewRR(ipseckeyLine(t, "192.0.5.7", w.victimKey))
	nine.Header().Name = "9.5.0.192.in-addr.arpa."
	w.v3.Put(nine)
	unsigned := zone("3.0.192.in-addr.arpa.", false, ipseckeyLine(t, "192.0.3.7", w.victimKey))
	w.evil = zone("66.0.192.in-addr.arpa.", true, ipseckeyLine(t, "192.0.66.7", w.evilKey))
	for _, c := range []*dnszone.Zone{w.victim, w.v3, unsigned, w.evil} {
		w.top.Delegate(c)
	}
	var err error
	if w.srv, err = dnszone.NewServer(w.top, w.victim, w.v3, unsigned, w.evil); err != nil {
		t.Fatal(err)
	}
	w.anchors, err = ParseTrustAnchors(strings.NewReader(w.top.DS().String()+"\n"), "anchors")
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// sign is z's signature over set.
func sign(t testing.TB, z *dnszone.Zone, set []dns.RR) *dns.RRSIG {
	t.Helper()
	sig, err := z.Sign(set)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func (w *dnssecWorld) resolver(mode DNSSEC) *Resolver {
	return &Resolver{Server: w.srv.Addr, Mode: mode, Anchors: w.anchors}
}

// evilSet is an IPSECKEY RRset with the attacker's key, owned by owner.
func (w *dnssecWorld) evilSet(t testing.TB, owner string) []dns.RR {
	rr, err := dns.NewRR(ipseckeyLine(t, "192.0.66.7", w.evilKey))
	if err != nil {
		t.Fatal(err)
	}
	rr.Header().Name = owner
	return []dns.RR{rr}
}

// TestOwnValidationAccepts: the in-process signed tree validates: records,
// NSEC and NSEC3 denials (NODATA and NXDOMAIN), and an unsigned zone
// proven insecure by its parent's NSEC3 opt-out span.
func TestOwnValidationAccepts(t *testing.T) {
	w := newDNSSECWorld(t)
	ctx := context.Background()
	for _, mode := range []DNSSEC{DNSSECRequire, DNSSECPrefer} {
		r := w.resolver(mode)
		for _, addr := range []string{"192.0.2.7", "192.0.5.7", "192.0.2.9"} {
			res := r.Lookup(ctx, netip.MustParseAddr(addr))
			if res.Err != nil || !res.Validated || len(res.Gateways) != 1 || !sameKey(res.Gateways[0].Key, w.victimKey) {
				t.Errorf("mode %d, %s: %+v", mode, addr, res)
			}
		}
		for _, addr := range []string{"192.0.2.10", "192.0.2.99", "192.0.5.10", "192.0.5.99", "192.0.9.9"} {
			if res := r.Lookup(ctx, netip.MustParseAddr(addr)); !errors.Is(res.Err, ErrNoRecord) {
				t.Errorf("mode %d, %s (denial): %+v", mode, addr, res)
			}
		}
		if res := r.Lookup(ctx, netip.MustParseAddr("192.0.3.99")); !errors.Is(res.Err, ErrNoRecord) {
			t.Errorf("mode %d, insecure NXDOMAIN: %+v", mode, res)
		}
	}
	if res := w.resolver(DNSSECRequire).Lookup(ctx, netip.MustParseAddr("192.0.3.7")); !errors.Is(res.Err, ErrUnvalidated) {
		t.Errorf("require, insecure zone: %+v", res)
	}
	if res := w.resolver(DNSSECPrefer).Lookup(ctx, netip.MustParseAddr("192.0.3.7")); res.Err != nil || res.Validated || len(res.Gateways) != 1 {
		t.Errorf("prefer, insecure zone: %+v", res)
	}
}

// TestOwnValidationAttacks performs the attacks of an on-path attacker
// against own validation (trust_anchors): it answers the victim's
// IPSECKEY query (or the DS query of its zone) with a correctly signed set
// of its own zone, with a wrong signer, unsigned, or with a forged denial.
// Each must be refused as ErrBogus: neither the attacker's key nor "no
// record".
func TestOwnValidationAttacks(t *testing.T) {
	w := newDNSSECWorld(t)
	victim := "7.2.0.192.in-addr.arpa."
	victim3 := "7.5.0.192.in-addr.arpa."
	evilOwner := "7.66.0.192.in-addr.arpa."
	nxFor := func(name string, qtype uint16) *dns.Msg { // an honest answer for another name
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		return w.srv.Respond(m)
	}
	msg := func(rcode int, answer, ns []dns.RR) *dns.Msg {
		return &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: rcode}, Answer: answer, Ns: ns}
	}
	soa := w.victim.WithSig(w.victim.Origin, dns.TypeSOA)
	cases := []struct {
		name   string
		target string // whose IPSECKEY query is forged
		qtype  uint16
		forge  func() *dns.Msg
	}{
		{"wrong owner, signed by the attacker's zone", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			return msg(0, w.evil.WithSig(evilOwner, dns.TypeIPSECKEY), nil)
		}},
		{"victim's name, signed by the attacker's zone", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			set := w.evilSet(t, victim)
			return msg(0, append(set, sign(t, w.evil, set)), nil)
		}},
		{"victim's name, attacker's key claiming the victim's zone", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			set := w.evilSet(t, victim)
			sig, err := dnszone.SignWith(set, w.victim.Origin, w.evil.Key, w.evil.Priv)
			if err != nil {
				t.Fatal(err)
			}
			return msg(0, append(set, sig), nil)
		}},
		{"unsigned set in a signed zone", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			return msg(0, w.evilSet(t, victim), nil)
		}},
		{"both sets, the attacker's first", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			return msg(0, append(w.evil.WithSig(evilOwner, dns.TypeIPSECKEY), w.evilSet(t, victim)...), nil)
		}},
		{"unsigned CNAME to the attacker's signed set", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			cn, _ := dns.NewRR(victim + " 300 IN CNAME " + evilOwner)
			return msg(0, append([]dns.RR{cn}, w.evil.WithSig(evilOwner, dns.TypeIPSECKEY)...), nil)
		}},
		{"CNAME signed by the attacker's zone", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			cn, _ := dns.NewRR(victim + " 300 IN CNAME " + evilOwner)
			return msg(0, append([]dns.RR{cn, sign(t, w.evil, []dns.RR{cn})}, w.evil.WithSig(evilOwner, dns.TypeIPSECKEY)...), nil)
		}},
		{"NXDOMAIN without proof", victim, dns.TypeIPSECKEY, func() *dns.Msg { return msg(dns.RcodeNameError, nil, soa) }},
		{"NODATA without proof", victim, dns.TypeIPSECKEY, func() *dns.Msg { return msg(0, nil, soa) }},
		{"NXDOMAIN proven in the attacker's zone", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			return nxFor("99.66.0.192.in-addr.arpa.", dns.TypeIPSECKEY)
		}},
		{"NODATA with the NSEC of another name", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			return nxFor("10.2.0.192.in-addr.arpa.", dns.TypeIPSECKEY)
		}},
		{"NXDOMAIN with another name's NSEC proof", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			return nxFor("99.2.0.192.in-addr.arpa.", dns.TypeIPSECKEY)
		}},
		{"NXDOMAIN rcode on a NODATA proof", victim, dns.TypeIPSECKEY, func() *dns.Msg {
			m := nxFor("10.2.0.192.in-addr.arpa.", dns.TypeIPSECKEY)
			m.Rcode = dns.RcodeNameError
			return m
		}},
		{"NSEC3: NXDOMAIN with another name's proof", victim3, dns.TypeIPSECKEY, func() *dns.Msg {
			return nxFor("99.5.0.192.in-addr.arpa.", dns.TypeIPSECKEY)
		}},
		{"NSEC3: NODATA with another name's proof", victim3, dns.TypeIPSECKEY, func() *dns.Msg {
			return nxFor("10.5.0.192.in-addr.arpa.", dns.TypeIPSECKEY)
		}},
		{"NSEC3: NODATA without proof", victim3, dns.TypeIPSECKEY, func() *dns.Msg {
			return msg(0, nil, w.v3.WithSig(w.v3.Origin, dns.TypeSOA))
		}},
		{"NSEC3: unsigned set", victim3, dns.TypeIPSECKEY, func() *dns.Msg {
			return msg(0, w.evilSet(t, victim3), nil)
		}},
		{"downgrade: the victim zone's DS denied without proof", w.victim.Origin, dns.TypeDS, func() *dns.Msg {
			return msg(0, nil, w.top.WithSig(w.top.Origin, dns.TypeSOA))
		}},
		{"downgrade: the victim zone's DS denied with the opt-out proof of the unsigned zone", w.victim.Origin, dns.TypeDS, func() *dns.Msg {
			return nxFor("3.0.192.in-addr.arpa.", dns.TypeDS)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forged := tc.forge()
			w.srv.SetHook(func(q dns.Question, honest *dns.Msg) *dns.Msg {
				if canonical(q.Name) == tc.target && q.Qtype == tc.qtype {
					return forged.Copy()
				}
				if tc.qtype == dns.TypeDS && q.Qtype == dns.TypeIPSECKEY {
					// With its zone "insecure", the attacker's unsigned set.
					return msg(0, w.evilSet(t, q.Name), nil)
				}
				return nil
			})
			defer w.srv.SetHook(nil)
			dest := netip.MustParseAddr("192.0.2.7")
			if strings.HasSuffix(tc.target, "5.0.192.in-addr.arpa.") {
				dest = netip.MustParseAddr("192.0.5.7")
			}
			for _, mode := range []DNSSEC{DNSSECRequire, DNSSECPrefer} {
				res := w.resolver(mode).Lookup(context.Background(), dest)
				for _, g := range res.Gateways {
					if sameKey(g.Key, w.evilKey) {
						t.Fatalf("mode %d: the attacker's key was accepted: %+v", mode, res)
					}
				}
				if !errors.Is(res.Err, ErrBogus) {
					t.Errorf("mode %d: %+v, want ErrBogus", mode, res)
				}
			}
		})
	}
}

// FuzzValidate feeds hostile answers to own DNSSEC validation: the answer
// to query number pick of a lookup is the fuzzer's message, the others
// come from the correctly signed tree. It must never panic, and a gateway
// it returns must carry the key the victim's zone signed.
func FuzzValidate(f *testing.F) {
	w := buildDNSSECWorld(f)
	honest := func(name string, qtype uint16) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		b, err := w.srv.Respond(m).Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	seeds := [][]byte{
		honest("7.2.0.192.in-addr.arpa.", dns.TypeIPSECKEY),
		honest("7.66.0.192.in-addr.arpa.", dns.TypeIPSECKEY),
		honest("99.2.0.192.in-addr.arpa.", dns.TypeIPSECKEY),
		honest("10.2.0.192.in-addr.arpa.", dns.TypeIPSECKEY),
		honest("99.5.0.192.in-addr.arpa.", dns.TypeIPSECKEY),
		honest("10.5.0.192.in-addr.arpa.", dns.TypeIPSECKEY),
		honest("2.0.192.in-addr.arpa.", dns.TypeDS),
		honest("3.0.192.in-addr.arpa.", dns.TypeDS),
		honest("2.0.192.in-addr.arpa.", dns.TypeDNSKEY),
		honest("0.192.in-addr.arpa.", dns.TypeDNSKEY),
	}
	for i, s := range seeds {
		f.Add(s, uint8(i), uint8(i))
	}
	dests := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("192.0.5.7"), netip.MustParseAddr("192.0.2.99"),
		netip.MustParseAddr("192.0.3.7"), netip.MustParseAddr("192.0.5.10"), netip.MustParseAddr("192.0.2.10")}
	f.Fuzz(func(t *testing.T, data []byte, pick, dest uint8) {
		forged := new(dns.Msg)
		if forged.Unpack(data) != nil {
			return
		}
		n := 0
		r := &Resolver{Mode: DNSSECRequire, Anchors: w.anchors}
		r.xchg = func(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
			if n++; n-1 == int(pick%16) {
				out := forged.Copy()
				out.Id = m.Id
				return out, nil
			}
			return w.srv.Respond(m), nil
		}
		res := r.Lookup(context.Background(), dests[int(dest)%len(dests)])
		for _, g := range res.Gateways {
			if !sameKey(g.Key, w.victimKey) {
				t.Fatalf("a key the victim's zone did not sign was returned: %+v", res)
			}
		}
	})
}
