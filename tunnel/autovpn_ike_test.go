package tunnel

import (
	"bytes"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/ike"
)

// autovpnPair is G1 (initiator after a probe) and G2 (responder that
// accepts only the probe's nonce) on netstacks, with self-signed
// certificates trusted by leap of faith.
type autovpnPair struct {
	g1, g2       *ikeEnd
	mu           sync.Mutex
	info1, info2 []ike.EstablishedInfo
}

func (p *autovpnPair) infos() (a, b []ike.EstablishedInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ike.EstablishedInfo(nil), p.info1...), append([]ike.EstablishedInfo(nil), p.info2...)
}

type autovpnCase struct {
	nonce, accept []byte
	trust2        func(*x509.Certificate) error // G2's leap of faith
	secret1       []byte                        // G1 authenticates with this shared secret
	secret2       func(ike.Identity) []byte     // G2's kept secrets
	askSecret     bool
}

func startAutoVPN(t *testing.T, c autovpnCase, k1 ike.Credential, k2 ike.Credential) *autovpnPair {
	t.Helper()
	p := &autovpnPair{g1: newIKEEnd(t, netip.MustParseAddr("10.98.0.1")), g2: newIKEEnd(t, netip.MustParseAddr("10.98.0.2"))}
	lo := netip.MustParseAddr("127.0.0.1")
	g2IKE, g2NATT := p.g2.eng.Ports()
	g1IKE, g1NATT := p.g1.eng.Ports()
	logger := func(name string) *slog.Logger {
		var buf lockedBuffer
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("IKE log of %s:\n%s", name, buf.String())
			}
		})
		return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d2, err := ike.New(ike.Config{Datapath: p.g2.eng, Logger: logger("G2"), Responder: func(from netip.AddrPort, _ netip.Addr, nonce []byte) *ike.PeerConfig {
		if nonce == nil || !bytes.Equal(nonce, c.accept) {
			return nil
		}
		return &ike.PeerConfig{Name: "av-in", Addr: from.Addr(), IKEPort: g1IKE, NATTPort: g1NATT, Auth: k2,
			PeerAuth: ike.PeerAuth{LeapOfFaith: c.trust2, SharedSecret: c.secret2},
			LocalTS:  hostSel(p.g2.addr), RemoteTS: hostSel(p.g1.addr), Contact: "G2, operated by Example B",
			OnEstablished: func(i ike.EstablishedInfo) { p.mu.Lock(); p.info2 = append(p.info2, i); p.mu.Unlock() }}
	}})
	if err != nil {
		t.Fatal(err)
	}
	p.g2.d = d2
	p.g2.eng.SetIKEHandler(d2.HandlePacketTo)
	t.Cleanup(d2.Close)
	d1, err := ike.New(ike.Config{Datapath: p.g1.eng, Logger: logger("G1")})
	if err != nil {
		t.Fatal(err)
	}
	p.g1.d = d1
	p.g1.eng.SetIKEHandler(d1.HandlePacketTo)
	t.Cleanup(d1.Close)
	pa1 := ike.PeerAuth{LeapOfFaith: func(*x509.Certificate) error { return nil }}
	if c.secret1 != nil {
		// With a shared secret we authenticate with it, and so does the peer.
		k1.PSK = c.secret1
		pa1.SharedSecret = func(ike.Identity) []byte { return c.secret1 }
	}
	err = d1.AddPeer(&ike.PeerConfig{Name: "av-out", Addr: lo, IKEPort: g2IKE, NATTPort: g2NATT, Auth: k1,
		PeerAuth: pa1, AutoVPNNonce: c.nonce,
		LocalTS: hostSel(p.g1.addr), RemoteTS: hostSel(p.g2.addr), Contact: "G1 — call 555-0101", SendSharedSecret: c.askSecret,
		RetransmitBase: 50 * time.Millisecond, RetransmitTries: 3,
		OnEstablished: func(i ike.EstablishedInfo) { p.mu.Lock(); p.info1 = append(p.info1, i); p.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func certCred(t *testing.T, name string) ike.Credential {
	k, c := selfSigned(t, name, nil, nil)
	return ike.Credential{Signer: k, Cert: c}
}

func TestAutoVPNIKE(t *testing.T) {
	nonce := bytes.Repeat([]byte{0xab}, 17)
	k1, k2 := certCred(t, "g1.autovpn.test"), certCred(t, "g2.autovpn.test")
	p := startAutoVPN(t, autovpnCase{nonce: nonce, accept: nonce, trust2: func(*x509.Certificate) error { return nil }, askSecret: true}, k1, k2)
	waitChild(t, p.g1)
	if err := ping(t, p.g1.testEndpoint, p.g2.addr, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { a, b := p.infos(); return len(a) == 1 && len(b) == 1 }, "both sides to report")
	a, b := p.infos()
	if a[0].Cert == nil || !bytes.Equal(a[0].Cert.Raw, k2.Cert.Raw) || b[0].Cert == nil || !bytes.Equal(b[0].Cert.Raw, k1.Cert.Raw) {
		t.Fatal("the peers' certificates were not reported")
	}
	if a[0].Contact != "G2, operated by Example B" || b[0].Contact != "G1 — call 555-0101" {
		t.Fatalf("contact details %q %q", a[0].Contact, b[0].Contact)
	}
	if len(a[0].SharedSecret) == 0 || !bytes.Equal(a[0].SharedSecret, b[0].SharedSecret) {
		t.Fatalf("shared secrets differ or are missing: %x %x", a[0].SharedSecret, b[0].SharedSecret)
	}
}

func TestAutoVPNIKERefusals(t *testing.T) {
	k1, k2 := certCred(t, "g1.autovpn.test"), certCred(t, "g2.autovpn.test")
	nonce := bytes.Repeat([]byte{0xab}, 17)
	// A wrong AutoVPN nonce: G2 does not answer at all.
	p := startAutoVPN(t, autovpnCase{nonce: bytes.Repeat([]byte{0xcd}, 17), accept: nonce, trust2: func(*x509.Certificate) error { return nil }}, k1, k2)
	time.Sleep(600 * time.Millisecond)
	if sas := p.g2.d.SAs(); len(sas) != 0 {
		t.Fatalf("G2 made an IKE SA on a wrong nonce: %+v", sas)
	}
	// An untrusted certificate: AUTHENTICATION_FAILED.
	p = startAutoVPN(t, autovpnCase{nonce: nonce, accept: nonce, trust2: func(*x509.Certificate) error { return errors.New("untrusted") }}, k1, k2)
	waitFor(t, func() bool { return len(p.g1.d.SAs()) == 0 && len(p.g2.d.SAs()) == 0 }, "the refused IKE SA to go")
	if a, b := p.infos(); len(a)+len(b) != 0 {
		t.Fatal("an untrusted peer was reported established")
	}
}

// TestAutoVPNIKESharedSecret: G1 rolled its certificate (same DN, new key);
// it authenticates with the shared secret, and G2 learns the new
// certificate.
func TestAutoVPNIKESharedSecret(t *testing.T) {
	nonce := bytes.Repeat([]byte{0xab}, 17)
	secret := bytes.Repeat([]byte{0x5e}, 32)
	rolled, k2 := certCred(t, "g1.autovpn.test"), certCred(t, "g2.autovpn.test")
	refuseCerts := func(*x509.Certificate) error { return errors.New("conflict: another certificate is known for this DN") }
	kept := func(id ike.Identity) []byte {
		if id.String() == rolled.Cert.Subject.String() {
			return secret
		}
		return nil
	}
	p := startAutoVPN(t, autovpnCase{nonce: nonce, accept: nonce, trust2: refuseCerts, secret1: secret, secret2: kept}, rolled, k2)
	waitChild(t, p.g1)
	waitFor(t, func() bool { _, b := p.infos(); return len(b) == 1 }, "G2 to report")
	_, b := p.infos()
	if !b[0].BySharedSecret || b[0].Cert == nil || !bytes.Equal(b[0].Cert.Raw, rolled.Cert.Raw) {
		t.Fatalf("G2: %+v", b[0])
	}
	// A wrong secret fails.
	p = startAutoVPN(t, autovpnCase{nonce: nonce, accept: nonce, trust2: refuseCerts, secret1: bytes.Repeat([]byte{1}, 32), secret2: kept}, rolled, k2)
	waitFor(t, func() bool { return len(p.g1.d.SAs()) == 0 }, "the IKE SA with a wrong secret to fail")
}
