package dnsoe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/oevpn/oevpn/internal/dnstest"
	"github.com/oevpn/oevpn/internal/dnszone"
)

// signAt is z's signature over set, valid from inception to expiration.
func signAt(t *testing.T, z *dnszone.Zone, set []dns.RR, inception, expiration time.Time) *dns.RRSIG {
	t.Helper()
	h := set[0].Header()
	sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: h.Name, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: h.Ttl},
		Inception: uint32(inception.Unix()), Expiration: uint32(expiration.Unix()),
		KeyTag: z.Key.KeyTag(), SignerName: z.Origin, Algorithm: z.Key.Algorithm}
	if err := sig.Sign(z.Priv, set); err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestDNSSECHints: each way DNSSEC validation fails gives an error that
// says why (a sentinel under ErrBogus or ErrUnvalidated, with the names
// and times) and a Hint with the fix. The answers come from a signed tree
// served over UDP in process; the broken ones are what a zone whose
// signer stopped, a host with a wrong clock, a resolver that strips
// signatures or does not validate, and a forger produce.
func TestDNSSECHints(t *testing.T) {
	w := newDNSSECWorld(t)
	victim := "7.2.0.192.in-addr.arpa."
	set := func() []dns.RR {
		return rrsetOnly(w.victim.WithSig(victim, dns.TypeIPSECKEY), victim, dns.TypeIPSECKEY)
	}
	now := time.Now()
	answer := func(rrs ...dns.RR) func() *dns.Msg {
		return func() *dns.Msg { return &dns.Msg{Answer: rrs} }
	}
	for _, tc := range []struct {
		name    string
		forge   func() *dns.Msg // the answer to the victim's IPSECKEY query
		dest    string
		anchors *TrustAnchors
		want    []error
		text    []string // in the error
		hint    string
	}{
		{name: "signatures expired (the signer stopped)",
			forge: answer(append(set(), signAt(t, w.victim, set(), now.Add(-30*24*time.Hour), now.Add(-26*time.Hour)))...),
			want:  []error{ErrBogus, ErrSignatureExpired},
			text:  []string{"expired at " + now.Add(-26*time.Hour).UTC().Format(time.RFC3339), "this host's time is"},
			hint:  "re-sign the zone"},
		{name: "signatures from the future (this host's clock is behind)",
			forge: answer(append(set(), signAt(t, w.victim, set(), now.Add(2*time.Hour), now.Add(30*24*time.Hour)))...),
			want:  []error{ErrBogus, ErrSignatureNotYetValid},
			text:  []string{"valid from " + now.Add(2*time.Hour).UTC().Format(time.RFC3339)},
			hint:  "clock"},
		{name: "signatures stripped on the way",
			forge: answer(set()...),
			want:  []error{ErrBogus, ErrNoSignatures},
			hint:  "returns DNSSEC records"},
		{name: "signature by a key that is not the zone's",
			forge: func() *dns.Msg {
				sig, err := dnszone.SignWith(set(), w.victim.Origin, w.evil.Key, w.evil.Priv)
				if err != nil {
					t.Fatal(err)
				}
				return &dns.Msg{Answer: append(set(), sig)}
			},
			want: []error{ErrBogus, ErrBadSignature},
			hint: "trust anchor or the parent's DS"},
		{name: "zone proven unsigned", dest: "192.0.3.7",
			want: []error{ErrUnvalidated, ErrZoneUnsigned},
			hint: `dnssec = "prefer"`},
		{name: "no trust anchor for the zone", anchors: mustAnchors(t, w.evil.DS().String()),
			want: []error{ErrUnvalidated, ErrNoTrustAnchor},
			hint: "add a trust anchor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.forge != nil {
				w.srv.SetHook(func(q dns.Question, honest *dns.Msg) *dns.Msg {
					if canonical(q.Name) == victim && q.Qtype == dns.TypeIPSECKEY {
						return tc.forge()
					}
					return nil
				})
				defer w.srv.SetHook(nil)
			}
			r := w.resolver(DNSSECRequire)
			if tc.anchors != nil {
				r.Anchors = tc.anchors
			}
			dest := cmp.Or(tc.dest, "192.0.2.7")
			res := r.Lookup(context.Background(), netip.MustParseAddr(dest))
			for _, want := range tc.want {
				if !errors.Is(res.Err, want) {
					t.Errorf("error %v\nis not %v", res.Err, want)
				}
			}
			for _, want := range tc.text {
				if res.Err == nil || !strings.Contains(res.Err.Error(), want) {
					t.Errorf("error %v\nlacks %q", res.Err, want)
				}
			}
			if h := Hint(res.Err); !strings.Contains(h, tc.hint) {
				t.Errorf("hint %q\nlacks %q", h, tc.hint)
			}
		})
	}
}

// TestDNSSECHintsResolver: with no trust anchors, a resolver that answers
// without the AD bit is named, and whether it returned DNSSEC records at
// all (a non-validating resolver, or one that does not speak DNSSEC).
func TestDNSSECHintsResolver(t *testing.T) {
	dest := netip.MustParseAddr("192.0.2.7")
	// An authoritative server: signatures, never an AD bit.
	w := newDNSSECWorld(t)
	r := &Resolver{Server: w.srv.Addr, Mode: DNSSECRequire}
	res := r.Lookup(context.Background(), dest)
	if !errors.Is(res.Err, ErrUnvalidated) || !errors.Is(res.Err, ErrResolverNotValidating) || !strings.Contains(res.Err.Error(), w.srv.Addr) ||
		!strings.Contains(Hint(res.Err), "validating resolver") {
		t.Errorf("signatures without AD: %v (hint %q)", res.Err, Hint(res.Err))
	}
	// A server that knows nothing of DNSSEC.
	s := dnstest.Start(t)
	s.Add(t, ipseckeyLine(t, "192.0.2.7", w.victimKey))
	res = (&Resolver{Server: s.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), dest)
	if !errors.Is(res.Err, ErrUnvalidated) || !errors.Is(res.Err, ErrNoDNSSECRecords) || !strings.Contains(Hint(res.Err), "validating resolver") {
		t.Errorf("no DNSSEC records: %v (hint %q)", res.Err, Hint(res.Err))
	}
	// Prefer mode takes the unvalidated answer: no error, no hint.
	if res := (&Resolver{Server: s.Addr, Mode: DNSSECPrefer}).Lookup(context.Background(), dest); res.Err != nil || Hint(res.Err) != "" {
		t.Errorf("prefer: %v", res.Err)
	}
}

func mustAnchors(t *testing.T, lines string) *TrustAnchors {
	t.Helper()
	ta, err := ParseTrustAnchors(strings.NewReader(lines+"\n"), "anchors")
	if err != nil {
		t.Fatal(err)
	}
	return ta
}

// TestDNSSECHintsEDE: a validating resolver's SERVFAIL with an extended
// DNS error (RFC 8914) gives its cause and hint; the resolver's text is
// quoted, bounded, and never changes the verdict (not ErrBogus: the
// answer is not authenticated).
func TestDNSSECHintsEDE(t *testing.T) {
	w := newDNSSECWorld(t)
	victim := "7.2.0.192.in-addr.arpa."
	for _, tc := range []struct {
		code uint16
		text string
		want error
		hint string
	}{
		{dns.ExtendedErrorCodeSignatureExpired, "signature expired from 127.0.0.1 for " + victim, ErrSignatureExpired, "re-sign the zone"},
		{dns.ExtendedErrorCodeSignatureNotYetValid, "", ErrSignatureNotYetValid, "clock"},
		{dns.ExtendedErrorCodeRRSIGsMissing, strings.Repeat("\x1b[2J", 100), ErrNoSignatures, "returns DNSSEC records"},
		{dns.ExtendedErrorCodeDNSKEYMissing, "", ErrBadSignature, "key rollover"},
		{dns.ExtendedErrorCodeDNSBogus, "", ErrResolverBogus, "trust_anchors"},
	} {
		w.srv.SetHook(func(q dns.Question, honest *dns.Msg) *dns.Msg {
			if canonical(q.Name) != victim || q.Qtype != dns.TypeIPSECKEY {
				return nil
			}
			m := &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeServerFailure}}
			m.SetEdns0(1232, true)
			opt := m.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: tc.code, ExtraText: tc.text})
			return m
		})
		res := (&Resolver{Server: w.srv.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), netip.MustParseAddr("192.0.2.7"))
		msg := fmt.Sprint(res.Err)
		if !errors.Is(res.Err, tc.want) || errors.Is(res.Err, ErrBogus) || !strings.Contains(msg, "SERVFAIL") ||
			!strings.Contains(Hint(res.Err), tc.hint) || strings.ContainsRune(msg, 0x1b) || len(msg) > 400 {
			t.Errorf("EDE %d: %q (hint %q)", tc.code, msg, Hint(res.Err))
		}
	}
	w.srv.SetHook(nil)
}
