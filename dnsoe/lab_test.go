//go:build linux

package dnsoe

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

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
