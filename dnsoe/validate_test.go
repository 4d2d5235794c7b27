package dnsoe

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// signedZone is a zone key pair for the in-process validation tests.
type signedZone struct {
	name string
	key  *dns.DNSKEY
	priv crypto.Signer
}

func newSignedZone(t *testing.T, name string) *signedZone {
	t.Helper()
	k := &dns.DNSKEY{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 300},
		Flags: 257, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
	priv, err := k.Generate(256)
	if err != nil {
		t.Fatal(err)
	}
	return &signedZone{name: name, key: k, priv: priv.(crypto.Signer)}
}

// sign returns an RRSIG over rrs valid from inception to expiration.
func (z *signedZone) sign(t *testing.T, rrs []dns.RR, inception, expiration time.Time) *dns.RRSIG {
	t.Helper()
	h := rrs[0].Header()
	sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: h.Name, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: h.Ttl},
		Inception: uint32(inception.Unix()), Expiration: uint32(expiration.Unix()), KeyTag: z.key.KeyTag(),
		SignerName: z.name, Algorithm: z.key.Algorithm}
	if err := sig.Sign(z.priv, rrs); err != nil {
		t.Fatal(err)
	}
	return sig
}

// publish serves an RRset and its signature.
func (ts *testServer) publish(rrs []dns.RR, sig *dns.RRSIG) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	h := rrs[0].Header()
	k := h.Name + "/" + dns.TypeToString[h.Rrtype]
	ts.records[k] = append(append([]dns.RR(nil), rrs...), sig)
}

func TestOwnValidation(t *testing.T) {
	now := time.Now()
	valid := func(z *signedZone, rrs []dns.RR) *dns.RRSIG {
		return z.sign(t, rrs, now.Add(-time.Hour), now.Add(time.Hour))
	}
	ts := startTestServer(t)
	parent := newSignedZone(t, "example.test.")
	child := newSignedZone(t, "sub.example.test.")
	ts.publish([]dns.RR{parent.key}, valid(parent, []dns.RR{parent.key}))
	ts.publish([]dns.RR{child.key}, valid(child, []dns.RR{child.key}))
	ds := child.key.ToDS(dns.SHA256)
	ds.Hdr.Ttl = 300
	ts.publish([]dns.RR{ds}, valid(parent, []dns.RR{ds})) // the delegation, signed by the parent
	anchors, err := ParseTrustAnchors(strings.NewReader(parent.key.ToDS(dns.SHA256).String()+"\n"), "anchors")
	if err != nil {
		t.Fatal(err)
	}
	r := &Resolver{Server: ts.addr, Mode: DNSSECRequire, Anchors: anchors}
	v := func(_ string, rrs []dns.RR, sigs ...*dns.RRSIG) bool {
		r.init()
		return r.val.verify(context.Background(), rrs, sigs, 0)
	}
	rr := func(s string) dns.RR {
		x, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	key := rr("x.sub.example.test. 300 IN TXT \"X-IPsec-Server(10)=192.0.2.1\"")
	inParent := rr("y.example.test. 300 IN TXT \"X-IPsec-Server(10)=192.0.2.2\"")
	if !v("", []dns.RR{key}, valid(child, []dns.RR{key})) {
		t.Error("a record signed by a delegated zone did not validate")
	}
	if !v("", []dns.RR{inParent}, valid(parent, []dns.RR{inParent})) {
		t.Error("a record signed by the anchored zone did not validate")
	}
	tampered := rr("x.sub.example.test. 300 IN TXT \"X-IPsec-Server(10)=192.0.2.66\"")
	if v("", []dns.RR{tampered}, valid(child, []dns.RR{key})) {
		t.Error("a changed record validated with the old signature")
	}
	if v("", []dns.RR{key}, child.sign(t, []dns.RR{key}, now.Add(-2*time.Hour), now.Add(-time.Hour))) {
		t.Error("an expired signature validated")
	}
	if v("", []dns.RR{key}) {
		t.Error("an unsigned record validated")
	}
	// A zone the anchor does not reach.
	stray := newSignedZone(t, "other.test.")
	ts.publish([]dns.RR{stray.key}, valid(stray, []dns.RR{stray.key}))
	other := rr("z.other.test. 300 IN TXT \"X-IPsec-Server(10)=192.0.2.3\"")
	if v("", []dns.RR{other}, valid(stray, []dns.RR{other})) {
		t.Error("a zone without a chain to the anchor validated")
	}
	// Signed by the child's key but claiming the parent as signer.
	forged := valid(child, []dns.RR{inParent})
	forged.SignerName = parent.name
	if v("", []dns.RR{inParent}, forged) {
		t.Error("a signature by the wrong zone's key validated")
	}
}

func TestTrustAnchorFiles(t *testing.T) {
	if _, err := ParseTrustAnchors(strings.NewReader("example.test. 300 IN A 192.0.2.1\n"), "f"); !errors.Is(err, ErrAnchors) {
		t.Errorf("an A record accepted as anchor: %v", err)
	}
	if _, err := ParseTrustAnchors(strings.NewReader("; nothing\n"), "f"); !errors.Is(err, ErrAnchors) {
		t.Errorf("an empty file accepted: %v", err)
	}
	if _, err := ParseTrustAnchors(strings.NewReader("example.test. IN DS garbage\n"), "f"); !errors.Is(err, ErrAnchors) {
		t.Errorf("garbage accepted: %v", err)
	}
	if _, err := LoadTrustAnchors("/nonexistent/anchors"); !errors.Is(err, ErrAnchors) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzTrustAnchors(f *testing.F) {
	f.Add("example.test. 300 IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n")
	f.Fuzz(func(t *testing.T, s string) {
		ParseTrustAnchors(strings.NewReader(s), "fuzz")
	})
}
