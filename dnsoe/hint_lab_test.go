//go:build linux

package dnsoe

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/internal/lab"
)

// TestLabDNSSECHints: the causes and hints of DNSSEC failures against
// real servers: Knot serving a zone whose signatures expired a day ago and
// an unsigned one, and Unbound validating (with extended DNS errors) or
// only fetching for oevpn's own validation.
func TestLabDNSSECHints(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rec := func(target string) []string {
		lines, err := Records(target, "", 10, edKey.Public())
		if err != nil {
			t.Fatal(err)
		}
		return lines
	}
	d := lab.StartDNS(t, []lab.DNSZone{
		{Name: "2.0.192.in-addr.arpa", Mode: "signed", Records: rec("192.0.2.7")},
		{Name: "100.51.198.in-addr.arpa", Mode: "expired", Records: rec("198.51.100.7")},
		{Name: "113.0.203.in-addr.arpa", Mode: "unsigned", Records: rec("203.0.113.7")},
	})
	anchors, err := LoadTrustAnchors(d.Anchors)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		anchors *TrustAnchors
		dest    string
		want    []error
		hint    string
	}{
		{"own validation, expired signatures", anchors, "198.51.100.7", []error{ErrBogus, ErrSignatureExpired}, "re-sign the zone"},
		// Once Unbound's priming of the zone's anchor failed, it only
		// says "DNSSEC Bogus" (extended DNS error 6); a query that races
		// the priming gets "Signature Expired" (7).
		{"Unbound validates, expired signatures", nil, "198.51.100.7", []error{errAnyOf{ErrResolverBogus, ErrSignatureExpired}}, ""},
		{"own validation, no anchor for the zone", anchors, "203.0.113.7", []error{ErrUnvalidated, ErrNoTrustAnchor}, "add a trust anchor"},
		{"Unbound validates, unsigned zone", nil, "203.0.113.7", []error{ErrUnvalidated, ErrNoDNSSECRecords}, "sign it"},
		{"own validation, an anchor for another zone only", mustAnchors(t, anchorFor(t, d.Anchors, "100.51.198.in-addr.arpa.")),
			"192.0.2.7", []error{ErrUnvalidated, ErrNoTrustAnchor}, "add a trust anchor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Resolver{Server: d.Resolver, Mode: DNSSECRequire, Anchors: tc.anchors}
			res := r.Lookup(ctx, netip.MustParseAddr(tc.dest))
			for _, want := range tc.want {
				if alt, ok := want.(errAnyOf); ok && !alt.Is(res.Err) || !ok && !errors.Is(res.Err, want) {
					t.Errorf("%v\nis not %v", res.Err, want)
				}
			}
			if h := Hint(res.Err); h == "" || !strings.Contains(h, tc.hint) {
				t.Errorf("%v: hint %q lacks %q", res.Err, h, tc.hint)
			}
			t.Logf("%+v\n  to fix: %s", res, Hint(res.Err))
		})
	}
	// The signed zone still validates both ways.
	for _, ta := range []*TrustAnchors{nil, anchors} {
		if res := (&Resolver{Server: d.Resolver, Mode: DNSSECRequire, Anchors: ta}).Lookup(ctx, netip.MustParseAddr("192.0.2.7")); res.Err != nil || !res.Validated {
			t.Errorf("signed zone: %+v", res)
		}
	}
}

// errAnyOf is a wanted error with alternatives: Is reports whether err
// is any of them.
type errAnyOf []error

func (e errAnyOf) Error() string { return fmt.Sprint([]error(e)) }

func (e errAnyOf) Is(err error) bool {
	for _, want := range e {
		if errors.Is(err, want) {
			return true
		}
	}
	return false
}
