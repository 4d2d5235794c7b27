package tunnel

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/ike"
	conn "github.com/oevpn/oevpn/internal/wgconn"
	"github.com/oevpn/oevpn/policy"
)

// ikeEnd is one endpoint of the IKE tests, assembled as the command
// assembles one: a netstack node (NewNode) with one configured peer. Its
// ports are chosen before the node starts, so that two ends can each be
// configured with the other's.
type ikeEnd struct {
	*testEndpoint // set by startDaemon
	d             *ike.Daemon
	peer          *ike.PeerConfig
	node          *Node

	ikePort, nattPort uint16
	bind              func() conn.Bind // nil: UDP sockets on loopback
	// onTraffic brings the peer up when traffic for it comes (a trap);
	// otherwise it is brought up at once if peer.AutoStart, else only
	// when the test initiates.
	onTraffic bool
}

// newIKEEnd prepares an endpoint at addr on free loopback ports.
func newIKEEnd(t testing.TB, addr netip.Addr) *ikeEnd {
	t.Helper()
	e := &ikeEnd{testEndpoint: &testEndpoint{addr: addr}}
	e.ikePort, e.nattPort = freePorts(t)
	return e
}

// freePorts returns two UDP ports that were free on every address.
func freePorts(t testing.TB) (uint16, uint16) {
	t.Helper()
	var ports [2]uint16
	var binds []conn.Bind
	for i := range ports {
		b := conn.NewStdNetBind()
		_, p, err := b.Open(0)
		if err != nil {
			t.Fatal(err)
		}
		binds = append(binds, b)
		ports[i] = p
	}
	for _, b := range binds {
		b.Close()
	}
	return ports[0], ports[1]
}

// ports returns the endpoint's IKE and NAT-T ports.
func (e *ikeEnd) ports() (ikePort, nattPort uint16) { return e.ikePort, e.nattPort }

func startDaemon(t testing.TB, e *ikeEnd, peer *ike.PeerConfig) {
	t.Helper()
	startDaemonCfg(t, e, peer, ike.Config{})
}

// startDaemonCfg starts e's node with peer. Of cfg, the Logger (default:
// the test's log, shown if it fails), Authorizer (default: the node's,
// from the peer's identity) and CookieThreshold count.
func startDaemonCfg(t testing.TB, e *ikeEnd, peer *ike.PeerConfig, cfg ike.Config) {
	t.Helper()
	start := StartNever
	switch {
	case e.onTraffic:
		start = StartOnTraffic
	case peer.AutoStart:
		start = StartNow
	}
	nc := NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(e.addr, e.addr.BitLen())},
		IKEPort: e.ikePort, NATTPort: e.nattPort, Bind: e.bind, Peers: []Peer{{IKE: peer, Start: start}}, Logger: cfg.Logger}
	if nc.Logger == nil {
		// Keep the node's log, and show it if the test fails.
		nc.Logger = testLog(t, "node "+e.addr.String())
	}
	if cfg.Authorizer != nil || cfg.CookieThreshold != 0 {
		nc.ikeConfig = func(c *ike.Config) {
			if cfg.Authorizer != nil {
				c.Authorizer = cfg.Authorizer
			}
			if cfg.CookieThreshold != 0 {
				c.CookieThreshold = cfg.CookieThreshold
			}
		}
	}
	n, err := NewNode(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e.node, e.d, e.peer = n, n.IKE(), peer
	e.eng, e.net = n.Engine(), n.Net()
}

type authCase struct {
	name        string
	credA       ike.Credential
	credB       ike.Credential
	authA       ike.PeerAuth // how B checks A
	authB       ike.PeerAuth // how A checks B
	ikeProps    string
	espProps    string
	ikePropsB   string           // the responder's, when it differs
	childLife   [2]time.Duration // a's and b's Child SA lifetimes (0: default)
	ikeLife     [2]time.Duration
	startOnNATT bool // the initiator sends IKE_SA_INIT to the NAT-T port
	keepalive   time.Duration
	fragSize    int  // both ends' fragment size
	cookies     bool // the responder demands a COOKIE
	authorizer  ike.Authorizer
}

// selfSigned makes an ECDSA P-256 certificate for name, signed by parent
// (self-signed when parent is nil).
func selfSigned(t testing.TB, name string, parent *x509.Certificate, parentKey crypto.Signer) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: parent == nil}
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return k, c
}

func keyPair(t testing.TB, kind string) (crypto.Signer, crypto.PublicKey) {
	switch kind {
	case "ed25519":
		pub, priv, _ := ed25519.GenerateKey(crand.Reader)
		return priv, pub
	default:
		k, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
		return k, &k.PublicKey
	}
}

func connectIKE(t *testing.T, tc authCase, n int) (a, b *ikeEnd) {
	t.Helper()
	a = newIKEEnd(t, netip.MustParseAddr("10.98.0.1"))
	b = newIKEEnd(t, netip.MustParseAddr("10.98.0.2"))
	lo := netip.MustParseAddr("127.0.0.1")
	aIKE, aNATT := a.ports()
	bIKE, bNATT := b.ports()
	mk := func(props string, p ike.ProtocolID) []ike.Proposal {
		if props == "" {
			return nil
		}
		l, err := ike.ParseProposals(props, p)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	idA, _ := ike.ParseIdentity("a.oevpn.test")
	idB, _ := ike.ParseIdentity("b.oevpn.test")
	if tc.startOnNATT {
		bIKE = bNATT
	}
	startDaemon(t, a, &ike.PeerConfig{Name: "b", Addr: lo, IKEPort: bIKE, NATTPort: bNATT, LocalID: idA, RemoteID: idB,
		Auth: tc.credA, PeerAuth: tc.authB, IKEProposals: mk(tc.ikeProps, ike.ProtoIKE), ESPProposals: mk(tc.espProps, ike.ProtoESP),
		LocalTS: hostSel(a.addr), RemoteTS: hostSel(b.addr), ChildLifetime: tc.childLife[0], IKELifetime: tc.ikeLife[0], Keepalive: tc.keepalive, FragmentSize: tc.fragSize})
	bcfg := ike.Config{Authorizer: tc.authorizer}
	if tc.cookies {
		bcfg.CookieThreshold = -1
	}
	startDaemonCfg(t, b, &ike.PeerConfig{Name: "a", Addr: lo, IKEPort: aIKE, NATTPort: aNATT, LocalID: idB, RemoteID: idA,
		Auth: tc.credB, PeerAuth: tc.authA, IKEProposals: mk(tc.ikePropsB, ike.ProtoIKE), ESPProposals: mk(tc.espProps, ike.ProtoESP),
		LocalTS: hostSel(b.addr), RemoteTS: hostSel(a.addr), ChildLifetime: tc.childLife[1], IKELifetime: tc.ikeLife[1], FragmentSize: tc.fragSize}, bcfg)
	if err := a.d.Initiate("b"); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func waitChild(t testing.TB, e *ikeEnd) {
	t.Helper()
	waitFor(t, func() bool {
		for _, sa := range e.d.SAs() {
			if sa.State == "established" && len(sa.Children) > 0 {
				return true
			}
		}
		return false
	}, "IKE SA with a Child SA")
}

func TestIKENetstack(t *testing.T) {
	psk := ike.Credential{PSK: []byte("correct horse battery staple")}
	pskAuth := ike.PeerAuth{PSK: psk.PSK}
	edA, edAPub := keyPair(t, "ed25519")
	edB, edBPub := keyPair(t, "ed25519")
	ecA, ecAPub := keyPair(t, "ecdsa")
	ecB, ecBPub := keyPair(t, "ecdsa")
	cases := []authCase{
		{name: "psk", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth},
		{name: "ed25519", credA: ike.Credential{Signer: edA}, credB: ike.Credential{Signer: edB},
			authA: ike.PeerAuth{PublicKey: edAPub}, authB: ike.PeerAuth{PublicKey: edBPub}},
		{name: "ecdsa-p256", credA: ike.Credential{Signer: ecA}, credB: ike.Credential{Signer: ecB},
			authA: ike.PeerAuth{PublicKey: ecAPub}, authB: ike.PeerAuth{PublicKey: ecBPub}},
		{name: "auth-null", credA: ike.Credential{Null: true}, credB: ike.Credential{Null: true},
			authA: ike.PeerAuth{Null: true}, authB: ike.PeerAuth{Null: true}},
		{name: "chacha20", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth,
			ikeProps: "chacha20poly1305-prfsha256-x25519", espProps: "chacha20poly1305"},
		{name: "legacy-cbc-modp2048", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth,
			ikeProps: "aes256-sha256-prfsha256-modp2048", espProps: "aes256-sha256"},
		{name: "cookie-demanded", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth, cookies: true},
		{name: "allowed-by-policy", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth, authorizer: peerAuthorizer{allowA()}},
		{name: "cookie-and-invalid-ke", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth, cookies: true,
			ikeProps: "aes128gcm16-prfsha256-modp2048-x25519", ikePropsB: "aes128gcm16-prfsha256-x25519"},
		{name: "start-on-natt-port", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth, startOnNATT: true},
		{name: "nat-keepalives", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth, keepalive: 50 * time.Millisecond},
		{name: "invalid-ke-retry-ecp256", credA: psk, credB: psk, authA: pskAuth, authB: pskAuth,
			ikeProps: "aes128gcm16-prfsha384-modp2048-ecp256", ikePropsB: "aes128gcm16-prfsha384-ecp256", espProps: "aes128gcm16-esn"},
	}
	certKeyA, certA := selfSigned(t, "a.oevpn.test", nil, nil)
	certKeyB, certB := selfSigned(t, "b.oevpn.test", nil, nil)
	caKey, ca := selfSigned(t, "oevpn test CA", nil, nil)
	caKeyA, caCertA := selfSigned(t, "a.oevpn.test", ca, caKey)
	caKeyB, caCertB := selfSigned(t, "b.oevpn.test", ca, caKey)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	cases = append(cases,
		authCase{name: "self-signed-certs", credA: ike.Credential{Signer: certKeyA, Cert: certA}, credB: ike.Credential{Signer: certKeyB, Cert: certB},
			authA: ike.PeerAuth{Certs: []*x509.Certificate{certA}}, authB: ike.PeerAuth{Certs: []*x509.Certificate{certB}}},
		authCase{name: "self-signed-certs-fragmented", credA: ike.Credential{Signer: certKeyA, Cert: certA}, credB: ike.Credential{Signer: certKeyB, Cert: certB},
			authA: ike.PeerAuth{Certs: []*x509.Certificate{certA}}, authB: ike.PeerAuth{Certs: []*x509.Certificate{certB}}, fragSize: 200},
		authCase{name: "ca-certs", credA: ike.Credential{Signer: caKeyA, Cert: caCertA}, credB: ike.Credential{Signer: caKeyB, Cert: caCertB},
			authA: ike.PeerAuth{Roots: roots}, authB: ike.PeerAuth{Roots: roots}})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := connectIKE(t, tc, i)
			waitChild(t, a)
			waitChild(t, b)
			for i := 0; i < 2; i++ {
				if err := ping(t, a.testEndpoint, b.addr, i); err != nil {
					t.Fatalf("ping through the negotiated SA: %v", err)
				}
			}
			transfer(t, a.testEndpoint, b.testEndpoint, 2<<20)
			if tc.keepalive != 0 {
				waitFor(t, func() bool { return b.eng.Stats().Keepalives >= 2 }, "NAT-keepalives arrive")
			}
		})
	}
}

func TestIKEAuthFailures(t *testing.T) {
	edA, edAPub := keyPair(t, "ed25519")
	_, otherPub := keyPair(t, "ed25519")
	cases := []authCase{
		{name: "wrong psk", credA: ike.Credential{PSK: []byte("one")}, credB: ike.Credential{PSK: []byte("two")},
			authA: ike.PeerAuth{PSK: []byte("two")}, authB: ike.PeerAuth{PSK: []byte("one")}},
		{name: "unknown key", credA: ike.Credential{Signer: edA}, credB: ike.Credential{PSK: []byte("x")},
			authA: ike.PeerAuth{PublicKey: otherPub}, authB: ike.PeerAuth{PSK: []byte("x")}},
		{name: "null not accepted", credA: ike.Credential{Null: true}, credB: ike.Credential{PSK: []byte("x")},
			authA: ike.PeerAuth{PublicKey: edAPub}, authB: ike.PeerAuth{PSK: []byte("x")}},
	}
	// A certificate that is not the pinned one (same name, other key), and
	// one whose name does not match the identity.
	kA, cA := selfSigned(t, "a.oevpn.test", nil, nil)
	_, other := selfSigned(t, "a.oevpn.test", nil, nil)
	kWrong, wrongName := selfSigned(t, "mallory.oevpn.test", nil, nil)
	var onlyMallory policy.Peers
	onlyMallory.Allow("a", []string{"mallory.oevpn.test"}, false)
	cases = append(cases,
		authCase{name: "refused by policy", credA: ike.Credential{PSK: []byte("y")}, credB: ike.Credential{PSK: []byte("y")},
			authA: ike.PeerAuth{PSK: []byte("y")}, authB: ike.PeerAuth{PSK: []byte("y")}, authorizer: peerAuthorizer{&onlyMallory}},
		authCase{name: "unpinned certificate", credA: ike.Credential{Signer: kA, Cert: cA}, credB: ike.Credential{PSK: []byte("x")},
			authA: ike.PeerAuth{Certs: []*x509.Certificate{other}}, authB: ike.PeerAuth{PSK: []byte("x")}},
		authCase{name: "certificate for another name", credA: ike.Credential{Signer: kWrong, Cert: wrongName}, credB: ike.Credential{PSK: []byte("x")},
			authA: ike.PeerAuth{Certs: []*x509.Certificate{wrongName}}, authB: ike.PeerAuth{PSK: []byte("x")}})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := connectIKE(t, tc, i)
			waitFor(t, func() bool { return len(a.d.SAs()) == 0 }, "initiator gives up after AUTHENTICATION_FAILED")
			time.Sleep(50 * time.Millisecond)
			for _, sa := range b.d.SAs() {
				if sa.State == "established" {
					t.Fatal("responder established an SA with a peer that failed authentication")
				}
			}
			if len(a.eng.Pairs())+len(b.eng.Pairs()) != 0 {
				t.Fatal("Child SAs installed despite the failure")
			}
		})
	}
}

// TestIKERekeyUnderLoad rekeys Child SAs and IKE SAs (from both sides, so
// collisions happen too) during a TCP transfer that must arrive intact.
func TestIKERekeyUnderLoad(t *testing.T) {
	psk := ike.Credential{PSK: []byte("rekey rekey rekey rekey")}
	for _, tc := range []authCase{
		{name: "child-and-ike", credA: psk, credB: psk, authA: ike.PeerAuth{PSK: psk.PSK}, authB: ike.PeerAuth{PSK: psk.PSK},
			childLife: [2]time.Duration{700 * time.Millisecond, 900 * time.Millisecond}, ikeLife: [2]time.Duration{1300 * time.Millisecond, 1700 * time.Millisecond}},
		{name: "pfs-same-lifetimes", credA: psk, credB: psk, authA: ike.PeerAuth{PSK: psk.PSK}, authB: ike.PeerAuth{PSK: psk.PSK},
			espProps: "aes128gcm16-x25519", childLife: [2]time.Duration{600 * time.Millisecond, 600 * time.Millisecond},
			ikeLife: [2]time.Duration{time.Second, time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := connectIKE(t, tc, 0)
			waitChild(t, a)
			waitChild(t, b)
			first := a.d.SAs()[0]
			firstChild := first.Children[0].In.SPI
			transferFor(t, a.testEndpoint, b.testEndpoint, 4*time.Second)
			var after []ike.SAInfo
			for _, sa := range a.d.SAs() {
				if sa.State == "established" { // an old one may still be deleting
					after = append(after, sa)
				}
			}
			if len(after) != 1 || after[0].SPIi == first.SPIi {
				t.Fatalf("IKE SA not rekeyed: before %x, after %+v", first.SPIi, after)
			}
			if len(after[0].Children) == 0 || after[0].Children[0].In.SPI == firstChild {
				t.Fatalf("Child SA not rekeyed")
			}
			// Old SAs leave the datapath: at most the current pair and
			// one being replaced. Rekeys go on meanwhile, and a collision
			// briefly adds a redundant pair, so look for a while: leaked
			// pairs (a rekey every 600 ms) would not go.
			n := len(a.eng.Pairs())
			for deadline := time.Now().Add(3 * time.Second); n > 2 && time.Now().Before(deadline); n = len(a.eng.Pairs()) {
				time.Sleep(20 * time.Millisecond)
			}
			if n > 2 {
				t.Fatalf("%d SA pairs installed after the rekeys", n)
			}
			if err := ping(t, a.testEndpoint, b.addr, 9); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// transferFor sends pseudo-random data over TCP for d and checks its hash.
func transferFor(t *testing.T, a, b *testEndpoint, d time.Duration) {
	t.Helper()
	done := hashSink(t, b, 5002)
	c, err := a.net.DialTCPAddrPort(netip.AddrPortFrom(b.addr, 5002))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	src := rand.NewChaCha8([32]byte{9})
	buf := make([]byte, 32<<10)
	var sent int64
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		src.Read(buf)
		h.Write(buf)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("write after %d octets: %v\na: %s\nb: %s", sent, err, dumpPairs(a.eng), dumpPairs(b.eng))
		}
		sent += int64(len(buf))
	}
	c.Close()
	select {
	case r := <-done:
		if r.err != nil || r.n != sent || r.sum != [32]byte(h.Sum(nil)) {
			t.Fatalf("received %d of %d octets (err %v), hash match %v", r.n, sent, r.err, r.sum == [32]byte(h.Sum(nil)))
		}
	case <-time.After(time.Minute):
		t.Fatal("transfer did not finish")
	}
	t.Logf("%d MB through rekeys in %v", sent>>20, d)
}

// onDemandPair sets up a and b with a trap on a: nothing is negotiated until
// a sends traffic to b.
func onDemandPair(t testing.TB) (a, b *ikeEnd) {
	t.Helper()
	a = newIKEEnd(t, netip.MustParseAddr("10.97.0.1"))
	b = newIKEEnd(t, netip.MustParseAddr("10.97.0.2"))
	a.onTraffic = true // the node sets a trap for b's selectors
	lo := netip.MustParseAddr("127.0.0.1")
	aIKE, aNATT := a.ports()
	bIKE, bNATT := b.ports()
	edA, edAPub := keyPair(t, "ed25519")
	edB, edBPub := keyPair(t, "ed25519")
	idA, _ := ike.ParseIdentity("a.oevpn.test")
	idB, _ := ike.ParseIdentity("b.oevpn.test")
	props, _ := ike.ParseProposals("aes128gcm16-prfsha256-x25519", ike.ProtoIKE)
	startDaemon(t, a, &ike.PeerConfig{Name: "b", Addr: lo, IKEPort: bIKE, NATTPort: bNATT, LocalID: idA, RemoteID: idB,
		Auth: ike.Credential{Signer: edA}, PeerAuth: ike.PeerAuth{PublicKey: edBPub}, IKEProposals: props,
		LocalTS: hostSel(a.addr), RemoteTS: hostSel(b.addr)})
	startDaemon(t, b, &ike.PeerConfig{Name: "a", Addr: lo, IKEPort: aIKE, NATTPort: aNATT, LocalID: idB, RemoteID: idA,
		Auth: ike.Credential{Signer: edB}, PeerAuth: ike.PeerAuth{PublicKey: edAPub}, IKEProposals: props,
		LocalTS: hostSel(b.addr), RemoteTS: hostSel(a.addr)})
	return a, b
}

// TestIKEOnDemand: the first packet to an on-demand peer triggers IKE, is
// held, and is delivered through the new SA; a TCP connect does not wait
// for a SYN retransmission.
func TestIKEOnDemand(t *testing.T) {
	a, b := onDemandPair(t)
	if len(a.d.SAs()) != 0 {
		t.Fatal("SA negotiated before any traffic")
	}
	l, err := b.net.ListenUDPAddrPort(netip.AddrPortFrom(b.addr, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := a.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(b.addr, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("first"))
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, _, err := l.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "first" {
		t.Fatalf("held packet not delivered: %q, %v", buf[:n], err)
	}
	waitChild(t, a)

	// A TCP connect to a peer with no SA yet: the SYN is held and sent as
	// soon as the SA is up, well before a retransmission (1 s).
	a.d.Down("b")
	waitFor(t, func() bool { return len(a.eng.Pairs()) == 0 }, "SAs removed")
	ln, err := b.net.ListenTCPAddrPort(netip.AddrPortFrom(b.addr, 7001))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	start := time.Now()
	tc, err := a.net.DialTCPAddrPort(netip.AddrPortFrom(b.addr, 7001))
	if err != nil {
		t.Fatal(err)
	}
	tc.Close()
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Fatalf("TCP connect through a new on-demand SA took %v: the SYN was not held", d)
	}
}

func allowA() *policy.Peers {
	var p policy.Peers
	p.Allow("a", []string{"a.oevpn.test"}, false)
	return &p
}

// lifecyclePair sets up a (initiator) and b with PSK; tweak edits a's peer
// configuration. It returns b's ports so that b can be brought back.
func lifecyclePair(t *testing.T, tweak func(*ike.PeerConfig)) (a, b *ikeEnd, bIKE, bNATT uint16) {
	t.Helper()
	a = newIKEEnd(t, netip.MustParseAddr("10.95.0.1"))
	b = newIKEEnd(t, netip.MustParseAddr("10.95.0.2"))
	bIKE, bNATT = b.ports()
	pa := lifecyclePeerA(a, bIKE, bNATT)
	if tweak != nil {
		tweak(pa)
	}
	startDaemon(t, a, pa)
	startDaemon(t, b, lifecyclePeerB(a, b))
	return a, b, bIKE, bNATT
}

var lifecyclePSK = []byte("lifecycle lifecycle lifecycle")

func lifecyclePeerA(a *ikeEnd, bIKE, bNATT uint16) *ike.PeerConfig {
	idA, _ := ike.ParseIdentity("a.oevpn.test")
	idB, _ := ike.ParseIdentity("b.oevpn.test")
	return &ike.PeerConfig{Name: "b", Addr: netip.MustParseAddr("127.0.0.1"), IKEPort: bIKE, NATTPort: bNATT, LocalID: idA, RemoteID: idB,
		Auth: ike.Credential{PSK: lifecyclePSK}, PeerAuth: ike.PeerAuth{PSK: lifecyclePSK},
		LocalTS: hostSel(a.addr), RemoteTS: hostSel(netip.MustParseAddr("10.95.0.2"))}
}

func lifecyclePeerB(a, b *ikeEnd) *ike.PeerConfig {
	idA, _ := ike.ParseIdentity("a.oevpn.test")
	idB, _ := ike.ParseIdentity("b.oevpn.test")
	aIKE, aNATT := a.ports()
	return &ike.PeerConfig{Name: "a", Addr: netip.MustParseAddr("127.0.0.1"), IKEPort: aIKE, NATTPort: aNATT, LocalID: idB, RemoteID: idA,
		Auth: ike.Credential{PSK: lifecyclePSK}, PeerAuth: ike.PeerAuth{PSK: lifecyclePSK},
		LocalTS: hostSel(b.addr), RemoteTS: hostSel(a.addr)}
}

// restartB brings b back on the same ports, with no state.
func restartB(t *testing.T, a, b *ikeEnd, bIKE, bNATT uint16) *ikeEnd {
	t.Helper()
	nb := &ikeEnd{testEndpoint: &testEndpoint{addr: b.addr}, ikePort: bIKE, nattPort: bNATT}
	startDaemon(t, nb, lifecyclePeerB(a, nb))
	return nb
}

func TestIKEDeleteFromResponder(t *testing.T) {
	a, b, _, _ := lifecyclePair(t, nil)
	a.d.Initiate("b")
	waitChild(t, a)
	waitChild(t, b)
	if n, err := b.d.Down("a"); n != 1 || err != nil {
		t.Fatalf("Down: %d, %v", n, err)
	}
	waitFor(t, func() bool { return len(a.d.SAs()) == 0 && len(a.eng.Pairs()) == 0 }, "a removes what b deleted")
	a.d.Initiate("b")
	waitChild(t, a)
	if err := ping(t, a.testEndpoint, b.addr, 1); err != nil {
		t.Fatal(err)
	}
}

// TestIKEDeadPeerAndRestart: b vanishes without a word; a finds it dead,
// cleans up, and brings the tunnel back by itself once b runs again.
func TestIKEDeadPeerAndRestart(t *testing.T) {
	a, b, bIKE, bNATT := lifecyclePair(t, func(p *ike.PeerConfig) {
		p.DPD, p.RetransmitBase, p.RetransmitTries, p.AutoStart = 100*time.Millisecond, 50*time.Millisecond, 3, true
	})
	a.d.Initiate("b")
	waitChild(t, a)
	b.eng.Close() // a crash: no Delete
	waitFor(t, func() bool { return len(a.eng.Pairs()) == 0 }, "a removes the dead peer's SAs")
	nb := restartB(t, a, b, bIKE, bNATT)
	waitChild(t, a)
	waitChild(t, nb)
	if err := ping(t, a.testEndpoint, nb.addr, 1); err != nil {
		t.Fatal(err)
	}
}

// TestIKEInitialContact: b loses its state and initiates again; a (which
// does not check liveness here) drops the stale IKE SA on INITIAL_CONTACT.
func TestIKEInitialContact(t *testing.T) {
	a, b, bIKE, bNATT := lifecyclePair(t, func(p *ike.PeerConfig) { p.DPD = -1 })
	a.d.Initiate("b")
	waitChild(t, a)
	b.eng.Close()
	b.d.Close()
	nb := restartB(t, a, b, bIKE, bNATT)
	if err := nb.d.Initiate("a"); err != nil {
		t.Fatal(err)
	}
	waitChild(t, nb)
	waitFor(t, func() bool {
		sas := a.d.SAs()
		return len(sas) == 1 && !sas[0].Initiator && len(a.eng.Pairs()) == 1
	}, "a keeps only the new IKE SA and its Child SA")
	if err := ping(t, nb.testEndpoint, a.addr, 1); err != nil {
		t.Fatal(err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// dumpPairs describes an engine's SA pairs, for failure messages.
func dumpPairs(e *Engine) string {
	var sb strings.Builder
	for _, p := range e.Pairs() {
		fmt.Fprintf(&sb, "\n  seq %d in %08x (%d pkts) out %08x (%d pkts)", p.seq, p.In.SPI(), p.In.Counters().Packets, p.Out.SPI(), p.Out.Counters().Packets)
	}
	fmt.Fprintf(&sb, "\n  %+v", e.Stats())
	return sb.String()
}
