package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Identity is an IKE identity: the content of an ID payload (§3.5).
type Identity struct {
	Type IDType
	Data []byte
}

// ParseIdentity reads an identity: an IP address, "%null" (RFC 7619), a
// distinguished name ("C=CH, O=Example, CN=gw"; ID_DER_ASN1_DN), an e-mail
// address (ID_RFC822_ADDR) or a domain name (ID_FQDN, a leading "@" is
// dropped as in strongSwan).
func ParseIdentity(s string) (Identity, error) {
	switch {
	case s == "":
		return Identity{}, errors.New("empty identity")
	case s == "%null":
		return Identity{Type: IDNull}, nil
	}
	if looksLikeDN(s) {
		der, err := parseDN(s)
		if err != nil {
			return Identity{}, err
		}
		return Identity{Type: IDDERASN1D, Data: der}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Is4() {
			return Identity{Type: IDIPv4, Data: a.AsSlice()}, nil
		}
		return Identity{Type: IDIPv6, Data: a.AsSlice()}, nil
	}
	if strings.Contains(s, "@") && !strings.HasPrefix(s, "@") {
		return Identity{Type: IDRFC822, Data: []byte(s)}, nil
	}
	return Identity{Type: IDFQDN, Data: []byte(strings.TrimPrefix(s, "@"))}, nil
}

// IdentityOf returns the identity for an address (the default ID).
func IdentityOf(a netip.Addr) Identity {
	a = a.Unmap()
	if a.Is4() {
		return Identity{Type: IDIPv4, Data: a.AsSlice()}
	}
	return Identity{Type: IDIPv6, Data: a.AsSlice()}
}

// Equal reports whether two identities are the same (DNs compared by
// content, not encoding).
func (id Identity) Equal(o Identity) bool {
	if id.Type == IDDERASN1D && o.Type == IDDERASN1D {
		return sameDN(id.Data, o.Data)
	}
	return id.Type == o.Type && bytes.Equal(id.Data, o.Data)
}

// String formats the identity.
func (id Identity) String() string {
	return (&IDPayload{IDType: id.Type, Data: id.Data}).String()
}

func (id Identity) payload(initiator bool) *IDPayload {
	return &IDPayload{Initiator: initiator, IDType: id.Type, Data: id.Data}
}

// Credential is how this end authenticates: a pre-shared key, a private
// key for RFC 7427 signatures (Ed25519, ECDSA P-256, RSA), or AUTH_NULL.
type Credential struct {
	PSK    []byte
	Signer crypto.Signer
	// Cert, if set, is Signer's X.509 certificate, sent in a CERT payload;
	// Chain are the intermediate CA certificates that lead from it to a
	// root the peer trusts (issuer of Cert first), sent after it.
	Cert  *x509.Certificate
	Chain []*x509.Certificate
	Null  bool
}

// Method returns the AUTH method the credential uses.
func (c *Credential) Method() string {
	switch {
	case c.Null:
		return "null"
	case c.PSK != nil:
		return "psk"
	case c.Cert != nil:
		return "cert"
	}
	switch c.Signer.(type) {
	case ed25519.PrivateKey:
		return "ed25519"
	case *ecdsa.PrivateKey:
		return "ecdsa"
	case *rsa.PrivateKey:
		return "rsa"
	}
	return "unknown"
}

// PeerAuth is how the peer must authenticate.
type PeerAuth struct {
	PSK       []byte
	PublicKey crypto.PublicKey // raw public key (RFC 7670) pinned for the peer
	// Certs are the peer's pinned X.509 certificates (self-signed ones
	// included); Roots are CAs that may certify the peer. The certificate
	// must confirm the peer's identity.
	Certs []*x509.Certificate
	Roots *x509.CertPool
	// CAs are the certificates in Roots: CERTREQ names them (by the SHA-1
	// hash of their public key) so that the peer sends its certificate.
	CAs  []*x509.Certificate
	Null bool
	// LeapOfFaith, if set, accepts any certificate the peer sends that
	// confirms its identity and verifies its AUTH, subject to this
	// function (AutoVPN: the trust store refuses untrusted and
	// conflicting certificates).
	LeapOfFaith func(cert *x509.Certificate) error
	// SharedSecret, if set, returns the AutoVPN shared secret kept for a
	// peer identity, with which the peer may authenticate instead of its
	// certificate (draft-sheffer-autovpn §9.2); cert is the certificate
	// the peer presents for that identity (nil if none), so that the
	// trust store can refuse it (revoked) before the secret is used.
	SharedSecret func(id Identity, cert *x509.Certificate) []byte
}

// usesCerts reports whether the peer authenticates with certificates.
func (pa *PeerAuth) usesCerts() bool {
	return len(pa.Certs) > 0 || pa.Roots != nil || pa.LeapOfFaith != nil
}

// Bounds on the public keys the peer's AUTH or certificates are verified
// with: an RSA verification costs time quadratic in the modulus size, and
// one with a 120 kbit modulus held the daemon's goroutine for about a
// second.
const (
	MaxRSAModulusBits = 8192
	MaxRSAExponent    = 1 << 32
)

// ErrKeyTooLarge is wrapped by CheckPublicKey's refusals.
var ErrKeyTooLarge = errors.New("ike: public key too large")

// CheckPublicKey refuses a public key that is too costly to verify with:
// an RSA key with a modulus over MaxRSAModulusBits bits or an exponent
// over MaxRSAExponent. Every key oevpn verifies a signature or a
// certificate with passes it first, whether pinned, from DNS or from a
// certificate.
func CheckPublicKey(pub crypto.PublicKey) error {
	k, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil // Ed25519 and ECDSA keys have fixed sizes
	}
	switch {
	case k.N == nil:
		return fmt.Errorf("%w: RSA key without a modulus", ErrMalformed)
	case k.N.BitLen() > MaxRSAModulusBits:
		return fmt.Errorf("%w: RSA modulus of %d bits, over %d", ErrKeyTooLarge, k.N.BitLen(), MaxRSAModulusBits)
	case int64(k.E) > MaxRSAExponent || k.E < 0:
		return fmt.Errorf("%w: RSA exponent %d, over 2^32", ErrKeyTooLarge, k.E)
	}
	return nil
}

// maxCertReqHashes bounds the CA hashes in a CERTREQ, which goes in the
// IKE_SA_INIT response (not fragmented): 16 hashes are 320 octets.
const maxCertReqHashes = 16

// certReqPayloads returns the CERTREQ we send to a peer that must
// authenticate with a certificate (§3.7): the SHA-1 hashes of the
// SubjectPublicKeyInfo of the CAs we trust for it, and of the pinned
// certificates that are self-signed (their own CA). strongSwan with
// send_cert = ifasked sends its certificate only after a CERTREQ, of any
// content; an empty one asks for any certificate.
func certReqPayloads(pa *PeerAuth) []Payload {
	if !pa.usesCerts() {
		return nil
	}
	var hashes []byte
	seen := map[[sha1.Size]byte]bool{}
	add := func(c *x509.Certificate) {
		h := sha1.Sum(c.RawSubjectPublicKeyInfo)
		if !seen[h] && len(seen) < maxCertReqHashes {
			seen[h] = true
			hashes = append(hashes, h[:]...)
		}
	}
	for _, c := range pa.CAs {
		add(c)
	}
	for _, c := range pa.Certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			add(c)
		}
	}
	return []Payload{&CertPayload{Request: true, Encoding: CertX509Signature, Data: hashes}}
}

// peerKey finds the public key that must verify the peer's AUTH: the pinned
// raw key, or the key of the peer's certificate (sent in CERT payloads, or
// pinned), which must confirm identity id.
func peerKey(pa *PeerAuth, id Identity, sent []*CertPayload) (crypto.PublicKey, error) {
	k, _, err := peerKeyCert(pa, id, sent)
	return k, err
}

// peerKeyCert is peerKey that also returns the peer's certificate, when it
// authenticates with one.
func peerKeyCert(pa *PeerAuth, id Identity, sent []*CertPayload) (crypto.PublicKey, *x509.Certificate, error) {
	if pa.PublicKey != nil {
		// A raw public key the peer sends (RFC 7670, CERT encoding 15)
		// must be the pinned one.
		for _, c := range sent {
			if c.Encoding != CertRawPublicKey {
				continue
			}
			k, err := x509.ParsePKIXPublicKey(c.Data)
			eq, ok := k.(interface{ Equal(crypto.PublicKey) bool })
			if err != nil || !ok || !eq.Equal(pa.PublicKey) {
				return nil, nil, fmt.Errorf("%w: the raw public key the peer sent is not the one configured for it", ErrAuth)
			}
		}
		return pa.PublicKey, nil, nil
	}
	if !pa.usesCerts() {
		return nil, nil, nil
	}
	var chain []*x509.Certificate
	for _, c := range sent {
		if c.Encoding != CertX509Signature {
			continue
		}
		if len(chain) == MaxPeerCerts {
			return nil, nil, fmt.Errorf("%w: peer sent more than %d certificates", ErrAuth, MaxPeerCerts)
		}
		cert, err := x509.ParseCertificate(c.Data)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: peer's certificate: %v", ErrAuth, err)
		}
		// Before chain building checks any signature with it.
		if err := CheckPublicKey(cert.PublicKey); err != nil {
			return nil, nil, fmt.Errorf("%w: peer's certificate %q: %w", ErrAuth, cert.Subject, err)
		}
		chain = append(chain, cert)
	}
	var ee *x509.Certificate
	switch {
	case len(chain) > 0:
		ee = chain[0]
	default:
		for _, c := range pa.Certs {
			if certConfirms(c, id) {
				ee = c
				break
			}
		}
		if ee == nil {
			return nil, nil, fmt.Errorf("%w: peer sent no certificate and none pinned confirms %v", ErrAuth, id)
		}
	}
	trusted := false
	for _, c := range pa.Certs {
		if bytes.Equal(c.Raw, ee.Raw) {
			trusted = true
		}
	}
	if trusted {
		// A pinned certificate is trusted as it is, not forever: once
		// expired it is refused, as a CA's would be (x509 verification)
		// and as strongSwan does. A key to trust without an end is
		// pinned with remote_public_key.
		if now := time.Now(); now.After(ee.NotAfter) || now.Before(ee.NotBefore) {
			return nil, nil, fmt.Errorf("%w: pinned certificate %q is valid from %s to %s, not now: pin a renewed one (or pin its public key)",
				ErrAuth, ee.Subject, ee.NotBefore.UTC().Format(time.RFC3339), ee.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if !trusted && pa.Roots != nil {
		inter := x509.NewCertPool()
		for _, c := range chain[min(1, len(chain)):] {
			inter.AddCert(c)
		}
		_, err := ee.Verify(x509.VerifyOptions{Roots: pa.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return nil, nil, fmt.Errorf("%w: peer's certificate %q: %v", ErrAuth, ee.Subject, err)
		}
		trusted = true
	}
	if !certConfirms(ee, id) {
		return nil, nil, fmt.Errorf("%w: certificate %q does not confirm identity %v", ErrAuth, ee.Subject, id)
	}
	if !trusted && pa.LeapOfFaith != nil {
		if err := pa.LeapOfFaith(ee); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrAuth, err)
		}
		trusted = true
	}
	if !trusted {
		return nil, nil, fmt.Errorf("%w: peer's certificate %q is neither pinned nor from a trusted CA", ErrAuth, ee.Subject)
	}
	return ee.PublicKey, ee, nil
}

// certConfirms reports whether cert binds identity id: its subject DN, or
// a subjectAltName of the identity's type.
func certConfirms(cert *x509.Certificate, id Identity) bool {
	switch id.Type {
	case IDDERASN1D:
		return sameDN(id.Data, cert.RawSubject)
	case IDFQDN:
		for _, n := range cert.DNSNames {
			if strings.EqualFold(n, string(id.Data)) {
				return true
			}
		}
	case IDRFC822:
		for _, e := range cert.EmailAddresses {
			if strings.EqualFold(e, string(id.Data)) {
				return true
			}
		}
	case IDIPv4, IDIPv6:
		for _, ip := range cert.IPAddresses {
			if a, ok := netip.AddrFromSlice(ip); ok && bytes.Equal(a.Unmap().AsSlice(), id.Data) {
				return true
			}
		}
	}
	return false
}

// CertIdentity is the identity a certificate stands for: its subject DN.
func CertIdentity(cert *x509.Certificate) Identity {
	return Identity{Type: IDDERASN1D, Data: cert.RawSubject}
}

// Algorithm identifiers of RFC 7427 §3 (DER AlgorithmIdentifier).
var (
	algEd25519     = []byte{0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70}
	algECDSASHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	algECDSASHA384 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}
	algECDSASHA512 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04}
	algRSASHA256   = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00}
	algRSASHA384   = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00}
	algRSASHA512   = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00}
)

// keyPad is the PSK key pad of §2.15.
const keyPad = "Key Pad for IKEv2"

// signedOctets builds InitiatorSignedOctets or ResponderSignedOctets (§2.15):
// the sender's first message, the peer's nonce and prf(SK_p, RestOfIDPayload).
func signedOctets(p *prfFunc, firstMsg, peerNonce, skP []byte, id *IDPayload) []byte {
	out := append(append([]byte(nil), firstMsg...), peerNonce...)
	return append(out, p.sum(skP, id.body())...)
}

// ErrAuth is wrapped by authentication failures.
var ErrAuth = errors.New("ike: authentication failed")

// makeAuth computes our AUTH payload over octets.
func makeAuth(p *prfFunc, c *Credential, octets []byte) (*AuthPayload, error) {
	switch {
	case c.Null:
		// RFC 7619 §3: the PSK computation with an empty key.
		return &AuthPayload{Method: AuthNULL, Data: p.sum(p.sum(nil, []byte(keyPad)), octets)}, nil
	case c.PSK != nil:
		return &AuthPayload{Method: AuthPSK, Data: p.sum(p.sum(c.PSK, []byte(keyPad)), octets)}, nil
	case c.Signer == nil:
		return nil, errors.New("ike: no credential configured")
	}
	var alg, sig []byte
	var err error
	switch k := c.Signer.(type) {
	case ed25519.PrivateKey:
		alg = algEd25519
		sig = ed25519.Sign(k, octets)
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(octets)
		alg = algECDSASHA256
		sig, err = ecdsa.SignASN1(rand.Reader, k, h[:])
	case *rsa.PrivateKey:
		h := sha256.Sum256(octets)
		alg = algRSASHA256
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
	default:
		return nil, fmt.Errorf("%w: key type %T", ErrUnsupported, c.Signer)
	}
	if err != nil {
		return nil, err
	}
	data := append([]byte{byte(len(alg))}, alg...)
	return &AuthPayload{Method: AuthDigitalSign, Data: append(data, sig...)}, nil
}

// verifyAuth checks the peer's AUTH payload over octets.
func verifyAuth(p *prfFunc, pa *PeerAuth, a *AuthPayload, octets []byte) error {
	switch a.Method {
	case AuthPSK, AuthNULL:
		key := pa.PSK
		if a.Method == AuthNULL {
			if !pa.Null {
				return fmt.Errorf("%w: peer used AUTH_NULL, which this peer's configuration does not accept", ErrAuth)
			}
			key = nil
		} else if pa.PSK == nil {
			return fmt.Errorf("%w: peer used a PSK, but none is configured for it", ErrAuth)
		}
		if !hmac.Equal(a.Data, p.sum(p.sum(key, []byte(keyPad)), octets)) {
			return fmt.Errorf("%w: %s does not verify", ErrAuth, authMethodName(a.Method))
		}
		return nil
	case AuthDigitalSign:
		if pa.PublicKey == nil {
			return fmt.Errorf("%w: peer signed, but no public key is configured for it", ErrAuth)
		}
		if len(a.Data) < 1 || len(a.Data) < 1+int(a.Data[0]) {
			return fmt.Errorf("%w: %w: AUTH data", ErrAuth, ErrMalformed)
		}
		if err := CheckPublicKey(pa.PublicKey); err != nil {
			return fmt.Errorf("%w: %w", ErrAuth, err)
		}
		alg, sig := a.Data[1:1+int(a.Data[0])], a.Data[1+int(a.Data[0]):]
		if verifySignature(pa.PublicKey, alg, octets, sig) {
			return nil
		}
		return fmt.Errorf("%w: signature does not verify with the configured key", ErrAuth)
	}
	return fmt.Errorf("%w: AUTH method %d not supported", ErrAuth, a.Method)
}

func verifySignature(pub crypto.PublicKey, alg, msg, sig []byte) bool {
	hashed := func(h crypto.Hash) []byte {
		switch h {
		case crypto.SHA384:
			s := sha512.Sum384(msg)
			return s[:]
		case crypto.SHA512:
			s := sha512.Sum512(msg)
			return s[:]
		}
		s := sha256.Sum256(msg)
		return s[:]
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return bytes.Equal(alg, algEd25519) && ed25519.Verify(k, msg, sig)
	case *ecdsa.PublicKey:
		for _, x := range []struct {
			alg []byte
			h   crypto.Hash
		}{{algECDSASHA256, crypto.SHA256}, {algECDSASHA384, crypto.SHA384}, {algECDSASHA512, crypto.SHA512}} {
			if bytes.Equal(alg, x.alg) {
				return ecdsa.VerifyASN1(k, hashed(x.h), sig)
			}
		}
	case *rsa.PublicKey:
		for _, x := range []struct {
			alg []byte
			h   crypto.Hash
		}{{algRSASHA256, crypto.SHA256}, {algRSASHA384, crypto.SHA384}, {algRSASHA512, crypto.SHA512}} {
			if bytes.Equal(alg, x.alg) {
				return rsa.VerifyPKCS1v15(k, x.h, hashed(x.h), sig) == nil
			}
		}
	}
	return false
}

func authMethodName(m AuthMethod) string {
	switch m {
	case AuthPSK:
		return "PSK"
	case AuthNULL:
		return "AUTH_NULL"
	case AuthDigitalSign:
		return "digital signature"
	}
	return fmt.Sprintf("AUTH method %d", m)
}
