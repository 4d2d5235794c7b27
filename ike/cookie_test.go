package ike

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/netip"
	"testing"
	"time"
)

func TestCookies(t *testing.T) {
	j := newCookies()
	age := func() { // the next cookie rotates the secret
		old := *j.jar.Load()
		old.made = time.Now().Add(-2 * cookieSecretLifetime)
		j.jar.Store(&old)
	}
	ni := seq(1, 32)
	ip := netip.MustParseAddr("192.0.2.7")
	c := j.make(ni, ip, 42)
	if !j.valid(c, ni, ip, 42) {
		t.Fatal("fresh cookie refused")
	}
	for name, ok := range map[string]bool{
		"other nonce": j.valid(c, seq(2, 32), ip, 42),
		"other IP":    j.valid(c, ni, netip.MustParseAddr("192.0.2.8"), 42),
		"other SPI":   j.valid(c, ni, ip, 43),
		"truncated":   j.valid(c[:19], ni, ip, 42),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
	// After one rotation the previous secret still works; after two, not.
	age()
	j.make(ni, ip, 1)
	if !j.valid(c, ni, ip, 42) {
		t.Fatal("cookie refused after one rotation")
	}
	age()
	j.make(ni, ip, 1)
	if j.valid(c, ni, ip, 42) {
		t.Fatal("cookie accepted after two rotations")
	}
}

func TestDNIdentity(t *testing.T) {
	id, err := ParseIdentity("C=CH, O=Example AG, CN=gw.example.org")
	if err != nil || id.Type != IDDERASN1D {
		t.Fatalf("%v %v", id, err)
	}
	if got := id.String(); got != "CN=gw.example.org,O=Example AG,C=CH" {
		t.Fatalf("String() = %q", got)
	}
	// The same name encoded by crypto/x509 (PrintableString) is equal.
	var n pkix.Name
	n.Country, n.Organization, n.CommonName = []string{"CH"}, []string{"Example AG"}, "gw.example.org"
	der, _ := asn1.Marshal(n.ToRDNSequence())
	if !id.Equal(Identity{Type: IDDERASN1D, Data: der}) {
		t.Fatal("DN not equal to the x509 encoding of the same name")
	}
	if id.Equal(Identity{Type: IDDERASN1D, Data: mustDN(t, "C=CH, O=Example AG, CN=other")}) {
		t.Fatal("different DNs equal")
	}
	for _, bad := range []string{"CN=", "C=CH, X=1"} {
		if _, err := ParseIdentity(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func mustDN(t *testing.T, s string) []byte {
	b, err := parseDN(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
