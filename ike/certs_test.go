package ike

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

// issueTestCert issues a certificate for the DNS name (self-signed when
// issuer is nil), valid from notBefore to notAfter.
func issueTestCert(t *testing.T, name string, ca bool, issuer *x509.Certificate, issuerKey *ecdsa.PrivateKey, notBefore, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: notBefore, NotAfter: notAfter, BasicConstraintsValid: true, IsCA: ca,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	if issuer == nil {
		issuer, issuerKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &k.PublicKey, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// TestPinnedCertValidity (issue 11 item 14): a pinned certificate out of
// its validity period is refused, whether the peer sends it or not.
func TestPinnedCertValidity(t *testing.T) {
	now := time.Now()
	id := Identity{Type: IDFQDN, Data: []byte("gw.example")}
	tests := []struct {
		name       string
		from, till time.Time
		wantErr    string
	}{
		{"valid", now.Add(-time.Hour), now.Add(time.Hour), ""},
		{"expired", now.Add(-48 * time.Hour), now.Add(-time.Hour), "not now"},
		{"not yet valid", now.Add(time.Hour), now.Add(48 * time.Hour), "not now"},
	}
	for _, tt := range tests {
		cert, _ := issueTestCert(t, "gw.example", false, nil, nil, tt.from, tt.till)
		pa := &PeerAuth{Certs: []*x509.Certificate{cert}}
		for _, sent := range [][]*CertPayload{nil, {{Encoding: CertX509Signature, Data: cert.Raw}}} {
			_, _, err := peerKeyCert(pa, id, sent)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("%s (sent %d): %v", tt.name, len(sent), err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("%s (sent %d): err %v, want %q", tt.name, len(sent), err, tt.wantErr)
			}
		}
	}
}

// TestCertReqPayloads (issue 11 item 10): the CERTREQ names the trusted
// CAs and the self-signed pinned certificates by the SHA-1 hash of their
// SubjectPublicKeyInfo (RFC 7296 §3.7), and is sent only when the peer
// must present a certificate.
func TestCertReqPayloads(t *testing.T) {
	now := time.Now()
	ca, caKey := issueTestCert(t, "ca", true, nil, nil, now.Add(-time.Hour), now.Add(time.Hour))
	issued, _ := issueTestCert(t, "gw.example", false, ca, caKey, now.Add(-time.Hour), now.Add(time.Hour))
	self, _ := issueTestCert(t, "self.example", false, nil, nil, now.Add(-time.Hour), now.Add(time.Hour))
	hash := func(c *x509.Certificate) []byte { h := sha1.Sum(c.RawSubjectPublicKeyInfo); return h[:] }
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	tests := []struct {
		name string
		pa   PeerAuth
		want []byte // nil: no CERTREQ
	}{
		{"psk", PeerAuth{PSK: []byte("x")}, nil},
		{"ca", PeerAuth{Roots: roots, CAs: []*x509.Certificate{ca}}, hash(ca)},
		{"pinned self-signed and issued", PeerAuth{Certs: []*x509.Certificate{issued, self}}, hash(self)},
		{"ca twice and pinned", PeerAuth{Roots: roots, CAs: []*x509.Certificate{ca, ca}, Certs: []*x509.Certificate{self}},
			append(hash(ca), hash(self)...)},
		{"leap of faith", PeerAuth{LeapOfFaith: func(*x509.Certificate) error { return nil }}, []byte{}},
	}
	for _, tt := range tests {
		got := certReqPayloads(&tt.pa)
		if tt.want == nil {
			if got != nil {
				t.Errorf("%s: CERTREQ %v, want none", tt.name, got)
			}
			continue
		}
		if len(got) != 1 {
			t.Fatalf("%s: %d payloads", tt.name, len(got))
		}
		cr := got[0].(*CertPayload)
		if !cr.Request || cr.Encoding != CertX509Signature || !bytes.Equal(cr.Data, tt.want) {
			t.Errorf("%s: %+v, want hashes %x", tt.name, cr, tt.want)
		}
		// It round-trips through the wire format.
		b, err := cr.marshal(nil)
		var back CertPayload
		if err != nil || back.unmarshal(b) != nil || !bytes.Equal(back.Data, cr.Data) {
			t.Errorf("%s: round trip: %v", tt.name, err)
		}
	}
}
