package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/probe"
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
	trust2        func(*x509.Certificate) error                // G2's leap of faith
	secret1       []byte                                       // G1 authenticates with this shared secret
	secret2       func(ike.Identity, *x509.Certificate) []byte // G2's kept secrets
	askSecret     bool
}

func startAutoVPN(t *testing.T, c autovpnCase, k1 ike.Credential, k2 ike.Credential) *autovpnPair {
	t.Helper()
	p := &autovpnPair{g1: &ikeEnd{testEndpoint: newTestEndpoint(t, netip.MustParseAddr("10.98.0.1"))},
		g2: &ikeEnd{testEndpoint: newTestEndpoint(t, netip.MustParseAddr("10.98.0.2"))}}
	lo := netip.MustParseAddr("127.0.0.1")
	g2IKE, g2NATT := p.g2.eng.Ports()
	g1IKE, g1NATT := p.g1.eng.Ports()
	logger := func(name string) *slog.Logger { return testLog(t, name) }
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
	p.g2.route(func(c *testControl) { c.ike = d2.HandlePacketTo })
	t.Cleanup(d2.Close)
	d1, err := ike.New(ike.Config{Datapath: p.g1.eng, Logger: logger("G1")})
	if err != nil {
		t.Fatal(err)
	}
	p.g1.d = d1
	p.g1.route(func(c *testControl) { c.ike = d1.HandlePacketTo })
	t.Cleanup(d1.Close)
	pa1 := ike.PeerAuth{LeapOfFaith: func(*x509.Certificate) error { return nil }}
	if c.secret1 != nil {
		// With a shared secret we authenticate with it, and so does the peer.
		k1.PSK = c.secret1
		pa1.SharedSecret = func(ike.Identity, *x509.Certificate) []byte { return c.secret1 }
	}
	err = d1.AddPeer(&ike.PeerConfig{Name: "av-out", Addr: lo, IKEPort: g2IKE, NATTPort: g2NATT, Auth: k1,
		PeerAuth: pa1, AutoVPNNonce: c.nonce,
		LocalTS: hostSel(p.g1.addr), RemoteTS: hostSel(p.g2.addr), Contact: "G1 — call 555-0101", SendSharedSecret: c.askSecret,
		RetransmitBase: 250 * time.Millisecond, RetransmitTries: 4,
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
	kept := func(id ike.Identity, _ *x509.Certificate) []byte {
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

// probeLink runs the probe exchange in memory between G1's and G2's
// probe gateways: G2 probes H1 (intercepted by G1, which stands at
// 127.0.0.1, the address its IKE packets come from), G1 answers to H2
// (intercepted by G2), and G2's Probe Complete reaches G1.
type probeLink struct {
	g1, g2 *probe.Gateway
	done   chan probe.Completed
}

type probeEnd struct {
	l    *probeLink
	self netip.Addr
}

// SendICMP carries a Probe Request or Complete: G2's, to G1.
func (e probeEnd) SendICMP(dst netip.Addr, icmp []byte) error {
	go e.l.g1.HandleICMP(icmp, e.self, dst)
	return nil
}

// SendUDP carries a Probe Response: G1's, to G2.
func (e probeEnd) SendUDP(dst netip.AddrPort, msg []byte) error {
	go e.l.g2.HandleUDP(msg, netip.AddrPortFrom(e.self, 4500), dst.Addr())
	return nil
}

// completeProbe runs a probe for H2's reply to H1 and returns G2's probe
// gateway, holding the completed probe, and the Nonce-R G1 got.
func completeProbe(t *testing.T, h1, h2 netip.Addr) (*probe.Gateway, []byte) {
	t.Helper()
	l := &probeLink{done: make(chan probe.Completed, 1)}
	l.g1 = probe.NewGateway(probe.Config{Sender: probeEnd{l, netip.MustParseAddr("127.0.0.1")},
		OnComplete: func(c probe.Completed) { l.done <- c }})
	l.g2 = probe.NewGateway(probe.Config{Sender: probeEnd{l, netip.MustParseAddr("127.0.0.2")}})
	t.Cleanup(l.g1.Close)
	t.Cleanup(l.g2.Close)
	if err := l.g2.Probe(tcpSynAck(h2, h1), 1<<20); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-l.done:
		return l.g2, c.NonceR
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not complete")
	}
	return nil, nil
}

// tcpSynAck is a SYN+ACK from src:80 to dst:40000.
func tcpSynAck(src, dst netip.Addr) []byte {
	p := make([]byte, 40)
	p[0], p[9], p[3] = 0x45, 6, 40
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	p[20], p[21], p[22], p[23] = 0, 80, 0x9c, 0x40
	p[33] = 0x12
	return p
}

// realG2 is G2 run by the AutoVPN code itself (probe gateway, trust store,
// Responder and ClaimNonce), and G1 an IKE initiator carrying the probe's
// Nonce-R.
type realG2 struct {
	av     *AutoVPN
	g1, g2 *ikeEnd
	store  *policy.TrustStore
	nonce  []byte // the probe's Nonce-R
}

// g1Opts adjusts G1's peer before it starts.
type g1Opts func(*ike.PeerConfig)

func startRealG2(t *testing.T, store *policy.TrustStore, k1, k2 ike.Credential, g2Proposals string, opts ...g1Opts) *realG2 {
	t.Helper()
	r := &realG2{g1: &ikeEnd{testEndpoint: newTestEndpoint(t, netip.MustParseAddr("10.98.0.1"))},
		g2: &ikeEnd{testEndpoint: newTestEndpoint(t, netip.MustParseAddr("10.98.0.2"))}, store: store}
	gw, nonceR := completeProbe(t, r.g1.addr, r.g2.addr)
	r.nonce = nonceR
	logger := func(name string) *slog.Logger { return testLog(t, name) }
	r.av = &AutoVPN{cfg: AutoVPNConfig{Signer: k2, Cert: k2.Cert, Store: store, Contact: "G2"}, gw: gw, log: logger("G2 AutoVPN"),
		stop: make(chan struct{}), flows: map[flowKey]*flowState{}, initiated: map[string]probe.Completed{}}
	t.Cleanup(r.av.wg.Wait)
	g1IKE, g1NATT := r.g1.eng.Ports()
	g2IKE, g2NATT := r.g2.eng.Ports()
	var props []ike.Proposal
	if g2Proposals != "" {
		var err error
		if props, err = ike.ParseProposals(g2Proposals, ike.ProtoIKE); err != nil {
			t.Fatal(err)
		}
	}
	d2, err := ike.New(ike.Config{Datapath: r.g2.eng, Logger: logger("G2"),
		Responder: func(from netip.AddrPort, _ netip.Addr, nonce []byte) *ike.PeerConfig {
			pc := r.av.Responder(from, nonce)
			if pc != nil {
				pc.IKEPort, pc.NATTPort, pc.IKEProposals = g1IKE, g1NATT, props
			}
			return pc
		},
		ClaimAutoVPNNonce: r.av.ClaimNonce})
	if err != nil {
		t.Fatal(err)
	}
	r.g2.d = d2
	r.av.ike = d2
	r.g2.route(func(c *testControl) { c.ike = d2.HandlePacketTo })
	t.Cleanup(d2.Close)
	d1, err := ike.New(ike.Config{Datapath: r.g1.eng, Logger: logger("G1")})
	if err != nil {
		t.Fatal(err)
	}
	r.g1.d = d1
	r.g1.route(func(c *testControl) { c.ike = d1.HandlePacketTo })
	t.Cleanup(d1.Close)
	pc := &ike.PeerConfig{Name: "av-out", Addr: netip.MustParseAddr("127.0.0.1"), IKEPort: g2IKE, NATTPort: g2NATT, Auth: k1,
		PeerAuth: ike.PeerAuth{LeapOfFaith: func(*x509.Certificate) error { return nil }}, AutoVPNNonce: nonceR,
		LocalTS: hostSel(r.g1.addr), RemoteTS: hostSel(r.g2.addr), RetransmitBase: 250 * time.Millisecond, RetransmitTries: 4}
	for _, o := range opts {
		o(pc)
	}
	if err := d1.AddPeer(pc); err != nil {
		t.Fatal(err)
	}
	return r
}

func openStore(t *testing.T) *policy.TrustStore {
	t.Helper()
	s, err := policy.OpenTrustStore(filepath.Join(t.TempDir(), "peers"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAutoVPNIKEInvalidKERetry performs issue 10 item 12: G1 opens with a
// KE group G2 does not want; G2 answers INVALID_KE_PAYLOAD, and G1's
// retry with the right group, carrying the same probe nonce, must still
// be accepted (the nonce is spent only by an acceptable IKE_SA_INIT).
func TestAutoVPNIKEInvalidKERetry(t *testing.T) {
	k1, k2 := certCred(t, "g1.autovpn.test"), certCred(t, "g2.autovpn.test")
	g1Props, err := ike.ParseProposals("aes256gcm16-prfsha256-ecp256-x25519", ike.ProtoIKE)
	if err != nil {
		t.Fatal(err)
	}
	r := startRealG2(t, openStore(t), k1, k2, "aes256gcm16-prfsha256-x25519", func(pc *ike.PeerConfig) { pc.IKEProposals = g1Props })
	waitChild(t, r.g1)
	if err := ping(t, r.g1.testEndpoint, r.g2.addr, 1); err != nil {
		t.Fatal(err)
	}
	// Spent now: the same nonce starts no second IKE SA.
	if _, ok := r.av.gw.Lookup(r.nonce, netip.MustParseAddr("127.0.0.1")); ok {
		t.Fatal("the probe nonce is still good after the IKE SA it started")
	}
}

// TestAutoVPNIKERefusedSharedSecret performs issue 10 item 11: G1 has a
// shared secret with G2, and G2's operator untrusts G1, or G1's CA
// revokes its certificate. G1 authenticating with the shared secret must
// be refused like its certificate would be.
func TestAutoVPNIKERefusedSharedSecret(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "AutoVPN lab CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(crand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	secret := bytes.Repeat([]byte{0x5e}, 32)
	for _, tc := range []struct {
		name  string
		mark  func(t *testing.T, s *policy.TrustStore, g1 *x509.Certificate)
		refus bool
	}{
		{"kept", func(*testing.T, *policy.TrustStore, *x509.Certificate) {}, false},
		{"untrusted", func(t *testing.T, s *policy.TrustStore, g1 *x509.Certificate) {
			if _, err := s.SetState(g1.Subject.String(), policy.Untrusted); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"revoked", func(t *testing.T, s *policy.TrustStore, g1 *x509.Certificate) {
			der, err := x509.CreateRevocationList(crand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(),
				NextUpdate:                time.Now().Add(time.Hour),
				RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: g1.SerialNumber, RevocationTime: time.Now()}}}, ca, caKey)
			if err != nil {
				t.Fatal(err)
			}
			crl, _ := x509.ParseRevocationList(der)
			s.CRLs = []*x509.RevocationList{crl}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, c := selfSigned(t, "g1.autovpn.test", ca, caKey)
			k1, k2 := ike.Credential{Signer: k, Cert: c}, certCred(t, "g2.autovpn.test")
			store := openStore(t)
			if _, err := store.Seen(c, "G1", netip.Addr{}, false, time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := store.SetSharedSecret(c.Subject.String(), secret); err != nil {
				t.Fatal(err)
			}
			tc.mark(t, store, c)
			r := startRealG2(t, store, k1, k2, "", func(pc *ike.PeerConfig) {
				pc.Auth.PSK = secret
				pc.PeerAuth.SharedSecret = func(ike.Identity, *x509.Certificate) []byte { return secret }
			})
			if !tc.refus {
				waitChild(t, r.g2)
				return
			}
			waitFor(t, func() bool { return len(r.g1.d.SAs()) == 0 }, "G1's refused IKE SA to go")
			for _, sa := range r.g2.d.SAs() {
				if sa.State == "established" {
					t.Fatalf("G2 let a peer with a %s certificate in by its shared secret: %+v", tc.name, sa)
				}
			}
			if p, ok := store.ByDN(c.Subject.String()); tc.name == "revoked" && ok {
				t.Fatalf("the revoked peer is still in the trust store: %+v", p)
			}
		})
	}
}

// flowStep is a packet of a flow: the peer host's (n bytes), or our
// host's with TCP flags.
type flowStep struct {
	inbound bool
	n       int
	flags   byte
}

// TestAutoVPNFlowPays: what a flow has paid for a probe (issue 10 item
// 10), in gateway mode (G2 sees the peer's packets) and host mode (it
// sees only its host's).
func TestAutoVPNFlowPays(t *testing.T) {
	now := time.Now()
	k := flowKey{Proto: 6, Src: netip.MustParseAddr("10.2.0.2"), Dst: netip.MustParseAddr("198.18.0.1"), SrcPort: 80, DstPort: 40000}
	for _, c := range []struct {
		name  string
		steps []flowStep
		reply bool
		paid  int
	}{
		{"spoofed SYN, our SYN+ACK", []flowStep{{true, 60, 0}, {false, 0, tcpSYN | tcpACK}}, true, 60},
		{"spoofed SYN, our SYN+ACK twice, then RST", []flowStep{{true, 60, 0}, {false, 0, tcpSYN | tcpACK}, {false, 0, tcpSYN | tcpACK}, {false, 0, tcpRST | tcpACK}}, true, 60},
		{"host mode: our SYN+ACK", []flowStep{{false, 0, tcpSYN | tcpACK}}, true, 0},
		{"host mode: handshake completed", []flowStep{{false, 0, tcpSYN | tcpACK}, {false, 0, tcpACK}}, true, probe.ProvenPeer},
		{"gateway mode: the peer sent data", []flowStep{{true, 60, 0}, {false, 0, tcpSYN | tcpACK}, {true, 1500, 0}, {true, 1500, 0}, {false, 0, tcpRST}}, true, 3060},
		{"a flow our host opened", []flowStep{{false, 0, tcpSYN}, {true, 60, 0}, {false, 0, tcpACK}}, false, 60},
	} {
		a := &AutoVPN{flows: map[flowKey]*flowState{}}
		var reply bool
		var paid int
		for _, s := range c.steps {
			r, p := a.noteFlow(k, s.inbound, s.n, s.flags, now)
			if !s.inbound {
				reply, paid = r, p
			}
		}
		if reply != c.reply || paid != c.paid {
			t.Errorf("%s: reply %v paid %d, want %v %d", c.name, reply, paid, c.reply, c.paid)
		}
	}
}
