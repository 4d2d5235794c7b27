//go:build linux

package dnsoe

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/oevpn/oevpn/internal/lab"
)

// TestLabDNSSEC runs the resolver against real servers: Knot serving
// DNSSEC-signed, bogus and unsigned reverse zones, and a validating Unbound
// that trusts the signed zones' keys.
func TestLabDNSSEC(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rec := func(target, gw string, pub any) []string {
		lines, err := Records(target, gw, 10, pub)
		if err != nil {
			t.Fatal(err)
		}
		return lines
	}
	signed := append(rec("192.0.2.7", "", edKey.Public()), rec("192.0.2.9", "198.51.100.1", &rk.PublicKey)[2]) // IPSECKEY+KEY of .7, TXT of .9
	signed = append(signed, "10.2.0.192.in-addr.arpa. 300 IN PTR nokey.example.test.")
	d := lab.StartDNS(t, []lab.DNSZone{
		{Name: "2.0.192.in-addr.arpa", Mode: "signed", Records: signed},
		{Name: "100.51.198.in-addr.arpa", Mode: "bogus", Records: rec("198.51.100.7", "", edKey.Public())},
		{Name: "113.0.203.in-addr.arpa", Mode: "unsigned", Records: rec("203.0.113.7", "", edKey.Public())},
	})
	anchors, err := LoadTrustAnchors(d.Anchors)
	if err != nil {
		t.Fatal(err)
	}
	for _, own := range []bool{false, true} {
		var ta *TrustAnchors
		if own {
			ta = anchors // oevpn validates itself; Unbound only fetches
		}
		t.Run(map[bool]string{false: "resolver-validates", true: "own-validation"}[own], func(t *testing.T) {
			checkLabDNSSEC(t, &Resolver{Server: d.Resolver, Mode: DNSSECRequire, Anchors: ta},
				&Resolver{Server: d.Resolver, Mode: DNSSECPrefer, Anchors: ta}, edKey.Public(), &rk.PublicKey)
		})
	}
	// Own validation with an anchor for another zone only: nothing
	// validates.
	other, err := ParseTrustAnchors(strings.NewReader(anchorFor(t, d.Anchors, "100.51.198.in-addr.arpa.")), "other")
	if err != nil {
		t.Fatal(err)
	}
	wrong := &Resolver{Server: d.Resolver, Mode: DNSSECRequire, Anchors: other}
	if res := wrong.Lookup(context.Background(), netip.MustParseAddr("192.0.2.7")); !errors.Is(res.Err, ErrUnvalidated) {
		t.Fatalf("no anchor for the zone: %+v", res)
	}
}

// anchorFor returns the lines of the anchors file for one zone.
func anchorFor(t *testing.T, path, zone string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, zone) {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no anchor for %s in %s", zone, data)
	}
	return strings.Join(out, "\n") + "\n"
}

func checkLabDNSSEC(t *testing.T, require, prefer *Resolver, edKey, rsaKey any) {
	ctx := context.Background()

	res := require.Lookup(ctx, netip.MustParseAddr("192.0.2.7"))
	if res.Err != nil || !res.Validated || len(res.Gateways) != 1 || !sameKey(res.Gateways[0].Key, edKey) {
		t.Fatalf("signed IPSECKEY: %+v", res)
	}
	res = require.Lookup(ctx, netip.MustParseAddr("192.0.2.9"))
	if res.Err != nil || !res.Validated || len(res.Gateways) != 1 || res.Gateways[0].Addr != netip.MustParseAddr("198.51.100.1") ||
		!sameKey(res.Gateways[0].Key, rsaKey) {
		t.Fatalf("signed TXT delegation: %+v", res)
	}
	if res := require.Lookup(ctx, netip.MustParseAddr("192.0.2.10")); !errors.Is(res.Err, ErrNoRecord) {
		t.Fatalf("signed NODATA: %+v", res)
	}
	// Broken signatures: nothing under require or prefer (ErrBogus when
	// oevpn validates itself, the resolver's SERVFAIL otherwise).
	for _, r := range []*Resolver{require, prefer} {
		res := r.Lookup(ctx, netip.MustParseAddr("198.51.100.7"))
		if res.Err == nil || len(res.Gateways) != 0 || r.Anchors != nil && !errors.Is(res.Err, ErrBogus) {
			t.Fatalf("bogus, mode %d: %+v", r.Mode, res)
		}
	}
	// An unsigned zone: insecure, so only prefer uses it.
	if res := require.Lookup(ctx, netip.MustParseAddr("203.0.113.7")); !errors.Is(res.Err, ErrUnvalidated) {
		t.Fatalf("unsigned, require: %+v", res)
	}
	if res := prefer.Lookup(ctx, netip.MustParseAddr("203.0.113.7")); res.Err != nil || res.Validated || len(res.Gateways) != 1 {
		t.Fatalf("unsigned, prefer: %+v", res)
	}
}

// TestLabDNSSECDenial runs own validation against Knot and Unbound on a
// signed tree: 0.192.in-addr.arpa (NSEC3, opt-out) delegates to
// 2.0.192 (signed, NSEC), 5.0.192 (signed, NSEC3) and 3.0.192 (unsigned).
// From the top zone's anchor alone, real records validate through the
// DS chain, real NSEC and NSEC3 denials (NODATA and NXDOMAIN) are "no
// record", the unsigned zone is proven insecure by the opt-out span, and
// a real denial of another name replayed by a proxy on the path is bogus.
func TestLabDNSSECDenial(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rec := func(target string) string {
		lines, err := Records(target, "", 10, edKey.Public())
		if err != nil {
			t.Fatal(err)
		}
		return lines[0]
	}
	d := lab.StartDNS(t, []lab.DNSZone{
		{Name: "0.192.in-addr.arpa", Mode: "signed", Denial: "nsec3-optout"},
		{Name: "2.0.192.in-addr.arpa", Mode: "signed", Denial: "nsec", Records: []string{rec("192.0.2.7"), "10 PTR host.example."}},
		{Name: "5.0.192.in-addr.arpa", Mode: "signed", Denial: "nsec3", Records: []string{rec("192.0.5.7"), "10 PTR host.example."}},
		{Name: "3.0.192.in-addr.arpa", Mode: "unsigned", Records: []string{rec("192.0.3.7")}},
	})
	top, err := ParseTrustAnchors(strings.NewReader(anchorFor(t, d.Anchors, "0.192.in-addr.arpa.")), "top")
	if err != nil {
		t.Fatal(err)
	}
	islands, err := LoadTrustAnchors(d.Anchors)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		anchors *TrustAnchors
	}{{"resolver-validates", nil}, {"own-from-top", top}, {"own-islands", islands}} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Resolver{Server: d.Resolver, Mode: DNSSECRequire, Anchors: tc.anchors}
			for _, a := range []string{"192.0.2.7", "192.0.5.7"} {
				res := r.Lookup(ctx, netip.MustParseAddr(a))
				if res.Err != nil || !res.Validated || len(res.Gateways) != 1 || !sameKey(res.Gateways[0].Key, edKey.Public()) {
					t.Errorf("%s: %+v", a, res)
				}
			}
			for _, a := range []string{"192.0.2.10", "192.0.2.99", "192.0.5.10", "192.0.5.99"} {
				if res := r.Lookup(ctx, netip.MustParseAddr(a)); !errors.Is(res.Err, ErrNoRecord) {
					t.Errorf("%s (denial): %+v", a, res)
				}
			}
			// A name in the opt-out span is insecure (RFC 5155 §9.2): Unbound
			// sets no AD, which under require is not "no record"; oevpn's own
			// validation proves the span insecure: no record.
			want := ErrNoRecord
			if tc.anchors == nil {
				want = ErrUnvalidated
			}
			if res := r.Lookup(ctx, netip.MustParseAddr("192.0.9.9")); !errors.Is(res.Err, want) {
				t.Errorf("opt-out NXDOMAIN: %+v, want %v", res, want)
			}
			if res := r.Lookup(ctx, netip.MustParseAddr("192.0.3.7")); !errors.Is(res.Err, ErrUnvalidated) {
				t.Errorf("unsigned zone under require: %+v", res)
			}
		})
	}

	// A proxy on the path answers the victims' IPSECKEY queries with the
	// real, signed denials of other names.
	replay := map[string]string{
		"7.2.0.192.in-addr.arpa.": "99.2.0.192.in-addr.arpa.",
		"7.5.0.192.in-addr.arpa.": "99.5.0.192.in-addr.arpa.",
	}
	proxy := startProxy(t, d.Resolver, func(q *dns.Msg) *dns.Msg {
		other, ok := replay[canonical(q.Question[0].Name)]
		if !ok || q.Question[0].Qtype != dns.TypeIPSECKEY {
			return q
		}
		m := q.Copy()
		m.Question[0].Name = other
		return m
	})
	r := &Resolver{Server: proxy, Mode: DNSSECRequire, Anchors: top}
	for _, a := range []string{"192.0.2.7", "192.0.5.7"} {
		if res := r.Lookup(ctx, netip.MustParseAddr(a)); !errors.Is(res.Err, ErrBogus) {
			t.Errorf("%s, a replayed denial: %+v, want ErrBogus", a, res)
		}
	}
}

// startProxy forwards queries to server, as rewrite makes them, and
// returns the answers under the original question.
func startProxy(t *testing.T, server string, rewrite func(*dns.Msg) *dns.Msg) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		in, err := dns.Exchange(rewrite(q), server)
		if err != nil {
			return
		}
		in.Id, in.Question = q.Id, q.Question
		w.WriteMsg(in)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}
