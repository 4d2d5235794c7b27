package ike

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// Tests that perform the attacks of issue 10 against the daemon.

// initRequest builds an IKE_SA_INIT request with the default proposals, an
// X25519 KE, nonce ni, an optional COOKIE and pad octets of an unknown,
// non-critical payload.
func initRequest(tb testing.TB, spi uint64, ni, cookie []byte, pad int) []byte {
	tb.Helper()
	g, _ := newDH(DH_CURVE25519)
	_, ke, err := g.generate()
	if err != nil {
		tb.Fatal(err)
	}
	props, _ := ParseProposals(DefaultIKEProposals, ProtoIKE)
	m := &Message{Header: Header{SPIi: spi, Exchange: IKE_SA_INIT, Flags: FlagInitiator}}
	if cookie != nil {
		m.Payloads = append(m.Payloads, &NotifyPayload{NotifyType: COOKIE, Data: cookie})
	}
	m.Payloads = append(m.Payloads, &SAPayload{Proposals: props}, &KEPayload{Group: DH_CURVE25519, Data: ke}, &NoncePayload{Data: ni})
	if pad > 0 {
		m.Payloads = append(m.Payloads, &rawPayload{pt: 150, body: make([]byte, pad)})
	}
	b, err := m.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// sinkDatapath counts what a responder sends by destination and keeps the
// last message to each; messages to fwdTo go to the daemon fwd (a real
// initiator), the others nowhere (spoofed sources).
type sinkDatapath struct {
	memDatapath
	self  netip.AddrPort
	fwdTo netip.Addr
	fwd   *Daemon
	smu   sync.Mutex
	count map[netip.Addr]int
	last  map[netip.Addr][]byte
}

func newSink() *sinkDatapath {
	return &sinkDatapath{memDatapath: memDatapath{nextSPI: 0x2000, children: map[uint32]bool{}},
		count: map[netip.Addr]int{}, last: map[netip.Addr][]byte{}}
}

func (s *sinkDatapath) SendIKE(msg []byte, to netip.AddrPort, natt bool) error {
	s.smu.Lock()
	s.count[to.Addr()]++
	s.last[to.Addr()] = append([]byte(nil), msg...)
	fwd := s.fwd
	s.smu.Unlock()
	if fwd != nil && to.Addr() == s.fwdTo {
		fwd.HandlePacket(msg, s.self, natt)
	}
	return nil
}

func (s *sinkDatapath) lastTo(a netip.Addr) (*Message, int) {
	s.smu.Lock()
	defer s.smu.Unlock()
	b, n := s.last[a], s.count[a]
	if b == nil {
		return nil, n
	}
	m, _ := Parse(b)
	return m, n
}

// anyResponder answers an IKE_SA_INIT from any address, as the
// opportunistic responder does.
func anyResponder(tb *testing.T) func(netip.AddrPort, netip.Addr, []byte) *PeerConfig {
	local := Selectors{mustSelector(tb, "10.0.0.1")}
	return func(from netip.AddrPort, _ netip.Addr, _ []byte) *PeerConfig {
		remote, _ := policy.ParseSelector(from.Addr().String())
		return &PeerConfig{Name: from.Addr().String(), Addr: from.Addr(), Auth: Credential{Null: true},
			PeerAuth: PeerAuth{Null: true}, LocalTS: local, RemoteTS: Selectors{remote}, DPD: -1}
	}
}

func halfOpen(d *Daemon) (total int, byAddr map[netip.Addr]int) {
	byAddr = map[netip.Addr]int{}
	d.call(func() {
		total = len(d.half)
		for k := range d.half {
			byAddr[k.from.Addr()]++
		}
	})
	return total, byAddr
}

// TestForgedCookieRefused (issue 10, item 5): after the first cookie was
// handed out, the previous secret was all zeros and version 0 (or the
// version before the current one) was accepted, so anyone could compute a
// valid cookie for a spoofed source. The attacker learns the current
// version from a cookie sent to itself, forges cookies with a zero secret
// for a victim address it does not receive at, and must get only COOKIE
// demands, and no half-open SA.
func TestForgedCookieRefused(t *testing.T) {
	sink := newSink()
	d, err := New(Config{Datapath: sink, CookieThreshold: -1, Responder: anyResponder(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	attacker := netip.MustParseAddrPort("198.51.100.7:500")
	victim := netip.MustParseAddrPort("203.0.113.9:500")

	ni := seq(1, 32)
	d.call(func() { d.receive(initRequest(t, 1, ni, nil, 0), attacker, netip.Addr{}, false) })
	m, _ := sink.lastTo(attacker.Addr())
	c := m.Notify(COOKIE)
	if c == nil || len(c.Data) != 20 {
		t.Fatalf("no cookie demanded: %v", m)
	}
	v := binary.BigEndian.Uint32(c.Data)
	var zero [32]byte
	var forger cookieJar
	for i, version := range []uint32{0, v - 1, v, v + 1} {
		spi := uint64(100 + i)
		forged := forger.compute(version, zero[:], ni, victim.Addr(), spi)
		d.call(func() { d.receive(initRequest(t, spi, ni, forged, 0), victim, netip.Addr{}, false) })
		m, n := sink.lastTo(victim.Addr())
		if n != i+1 || m == nil || m.Notify(COOKIE) == nil || Get[*SAPayload](m) != nil {
			t.Fatalf("forged cookie of version %d (current %d): answered %v", version, v, m)
		}
	}
	if n, _ := halfOpen(d); n != 0 {
		t.Fatalf("%d half-open IKE SAs made with forged cookies", n)
	}
	// A real cookie still works, after a rotation too.
	real := func() []byte {
		var b []byte
		d.call(func() { b = d.cookies.make(ni, attacker.Addr(), 7) })
		return b
	}()
	d.call(func() { // age the secret: the next cookie rotates it
		j := *d.cookies.jar.Load()
		j.made = time.Now().Add(-2 * cookieSecretLifetime)
		d.cookies.jar.Store(&j)
	})
	d.call(func() { d.receive(initRequest(t, 7, ni, real, 0), attacker, netip.Addr{}, false) })
	if m, _ := sink.lastTo(attacker.Addr()); m == nil || Get[*SAPayload](m) == nil {
		t.Fatalf("a genuine cookie from before one rotation refused: %v", m)
	}
}

// TestHalfOpenFlood (issue 10, item 6): one source that receives its
// cookies sends 2,000 IKE_SA_INIT (half of them 60 KiB), thousands of
// spoofed sources flood while a real initiator connects, then 3,000
// sources that do answer cookies flood. The half-open SAs per source and
// in all, and the heap, must stay bounded, and the real initiator must
// come up.
func TestHalfOpenFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods")
	}
	rAddr := netip.MustParseAddrPort("192.0.2.2:500")
	lAddr := netip.MustParseAddrPort("192.0.2.1:500")
	sink := newSink()
	sink.self, sink.fwdTo = rAddr, lAddr.Addr()
	psk := []byte("legitimate legitimate legitimate")
	ts1, ts2 := Selectors{mustSelector(t, "10.0.0.1")}, Selectors{mustSelector(t, "10.0.0.2")}
	d2, err := New(Config{Datapath: sink, Responder: anyResponder(t), Peers: []*PeerConfig{{Name: "legit", Addr: lAddr.Addr(),
		IKEPort: 500, NATTPort: 500, LocalID: IdentityOf(rAddr.Addr()), Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk}, LocalTS: ts2, RemoteTS: ts1, DPD: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	dp1 := &memDatapath{self: lAddr, nextSPI: 0x1000, children: map[uint32]bool{}, peer: d2}
	d1, err := New(Config{Datapath: dp1, Peers: []*PeerConfig{{Name: "resp", Addr: rAddr.Addr(), IKEPort: 500, NATTPort: 500, LocalID: IdentityOf(lAddr.Addr()),
		Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk}, LocalTS: ts1, RemoteTS: ts2, DPD: -1, RetransmitBase: 50 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Close()
	sink.smu.Lock()
	sink.fwd = d1
	sink.smu.Unlock()

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc

	// flood sends n requests from the sources from(i), computing valid
	// cookies for them when withCookie (the sources receive).
	flood := func(n int, from func(int) netip.AddrPort, withCookie bool, pad func(int) int) {
		for i := 0; i < n; i += 50 {
			d2.call(func() {
				for j := i; j < min(i+50, n); j++ {
					ni := make([]byte, 32)
					rand.Read(ni)
					spi := uint64(j + 1)
					var c []byte
					if withCookie {
						c = d2.cookies.make(ni, from(j).Addr(), spi)
					}
					d2.receive(initRequest(t, spi, ni, c, pad(j)), from(j), netip.Addr{}, false)
				}
			})
		}
	}
	one := netip.MustParseAddrPort("198.51.100.7:500")
	flood(2000, func(int) netip.AddrPort { return one }, true, func(j int) int { return []int{60 << 10, 6 << 10}[j%2] })
	if _, by := halfOpen(d2); by[one.Addr()] > MaxHalfOpenPerAddr {
		t.Fatalf("%d half-open IKE SAs from one source, cap %d", by[one.Addr()], MaxHalfOpenPerAddr)
	}

	// Spoofed sources, which never see their cookies, while the real
	// initiator connects.
	if err := d1.Initiate("resp"); err != nil {
		t.Fatal(err)
	}
	spoofed := func(j int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)}), 500)
	}
	deadline := time.Now().Add(10 * time.Second)
	for k := 0; !oneEstablished(d1); k++ {
		if time.Now().After(deadline) {
			t.Fatal("the real initiator did not connect during the flood")
		}
		flood(200, func(j int) netip.AddrPort { return spoofed(k*200 + j) }, false, func(int) int { return 6 << 10 })
		time.Sleep(time.Millisecond)
	}
	if !oneEstablished(d2) {
		waitUntil(t, func() bool { return oneEstablished(d2) }, "the responder's IKE SA with the real initiator")
	}

	// Many sources that do receive, and answer, cookies.
	flood(3000, func(j int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, byte(j >> 8), byte(j)}), 500)
	}, true, func(int) int { return 6 << 10 })
	total, by := halfOpen(d2)
	if total > MaxHalfOpen {
		t.Fatalf("%d half-open IKE SAs, cap %d", total, MaxHalfOpen)
	}
	for a, n := range by {
		if n > MaxHalfOpenPerAddr {
			t.Fatalf("%d half-open IKE SAs from %v, cap %d", n, a, MaxHalfOpenPerAddr)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	grown := int64(ms.HeapAlloc) - int64(before)
	t.Logf("after the floods: %d half-open IKE SAs, heap grown by %.1f MiB", total, float64(grown)/(1<<20))
	if grown > 24<<20 {
		t.Fatalf("heap grew by %.1f MiB", float64(grown)/(1<<20))
	}
}

// TestChildSACap (issue 10, item 7): one authenticated peer asks for
// Child SA after Child SA in its IKE SA; beyond MaxChildSAs it must get
// NO_ADDITIONAL_SAS and we must hold no more.
func TestChildSACap(t *testing.T) {
	d1, d2, _, dp2 := memPair(t)
	s1 := current(d1)
	var mu sync.Mutex
	refused, done := 0, 0
	const asks = MaxChildSAs + 10
	d1.call(func() {
		for i := 0; i < asks; i++ {
			d1.requestChild(s1, nil, s1.peer.LocalTS, s1.peer.RemoteTS, func(nc *ChildSA, m *Message) {
				mu.Lock()
				defer mu.Unlock()
				done++
				if n := m.Notify(NO_ADDITIONAL_SAS); n != nil && nc == nil {
					refused++
				}
			})
		}
	})
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return done == asks }, "all CREATE_CHILD_SA answered")
	var n int
	s2 := current(d2)
	d2.call(func() { n = len(s2.children) })
	if n > MaxChildSAs || dp2.installed() > MaxChildSAs {
		t.Fatalf("the responder holds %d Child SAs (%d installed), cap %d", n, dp2.installed(), MaxChildSAs)
	}
	if want := asks + 1 - MaxChildSAs; refused != want {
		t.Fatalf("%d requests refused with NO_ADDITIONAL_SAS, want %d", refused, want)
	}
}

// TestIKESAsPerAddrCap (issue 10, item 7): one peer address opens IKE SA
// after IKE SA (an AUTH_NULL peer could, with nothing to prove); we must
// hold no more than MaxIKESAsPerAddr.
func TestIKESAsPerAddrCap(t *testing.T) {
	d1, d2, _, _ := memPair(t)
	var p *PeerConfig
	d1.call(func() {
		p = d1.peerByName("two")
		p.RetransmitBase, p.RetransmitTries = 20*time.Millisecond, 2
		// AUTH_NULL: a peer that proves nothing, whose IKE SAs are not
		// taken for duplicates of each other (authenticated ones are).
		p.Auth, p.PeerAuth.Null = Credential{Null: true}, true
	})
	d2.call(func() {
		q := d2.peerByName("one")
		q.Auth, q.PeerAuth.Null = Credential{Null: true}, true
	})
	responderSAs := func() (n int) {
		d2.call(func() {
			for _, sa := range d2.sas {
				if sa.state != stateDead {
					n++
				}
			}
		})
		return n
	}
	for i := 0; i < MaxIKESAsPerAddr+4; i++ {
		d1.call(func() { d1.startInitiator(p) })
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if n := responderSAs(); n > MaxIKESAsPerAddr || n < MaxIKESAsPerAddr-1 {
		t.Fatalf("the responder holds %d IKE SAs with one address, want the cap %d", n, MaxIKESAsPerAddr)
	}
}

// TestForgedRetransmissionGetsNothing (issue 10, item 17): a packet with
// the SPIs and message ID of the last request answered, but not its bytes,
// made the responder send its cached response (up to 64 fragments) again.
func TestForgedRetransmissionGetsNothing(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	s2 := current(d2)
	var authReq []byte
	for _, b := range dp1.sends() {
		if h, err := ParseHeader(b); err == nil && h.Exchange == IKE_AUTH && !h.IsResponse() {
			authReq = b
		}
	}
	if authReq == nil {
		t.Fatal("no IKE_AUTH request captured")
	}
	from := netip.MustParseAddrPort("192.0.2.1:4500")
	sent := func() int { return len(dp2.sends()) }
	base := sent()

	forge := func(skType PayloadType, body []byte) []byte {
		h := Header{SPIi: s2.spiI, SPIr: s2.spiR, NextPayload: skType, Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: 1,
			Length: uint32(HeaderLen + payloadHeaderLen + len(body))}
		b := h.marshal(nil)
		b = append(b, byte(PayloadIDi), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(payloadHeaderLen+len(body)))
		return append(b, body...)
	}
	junk := make([]byte, 200)
	rand.Read(junk)
	frag1 := append([]byte{0, 1, 0, 2}, junk...)
	altered := bytes.Clone(authReq)
	altered[len(altered)-1] ^= 1
	for name, b := range map[string][]byte{
		"forged SK":          forge(PayloadSK, junk),
		"forged fragment 1":  forge(PayloadSKF, frag1),
		"altered IKE_AUTH":   altered,
		"truncated IKE_AUTH": authReq[:len(authReq)-1],
	} {
		d2.HandlePacket(b, from, true)
		settle(d2)
		if n := sent(); n != base {
			t.Fatalf("%s: the responder sent %d messages", name, n-base)
		}
	}
	d2.HandlePacket(authReq, from, true)
	settle(d2)
	if n := sent(); n != base+1 {
		t.Fatalf("the genuine retransmission got %d messages, want the cached response", n-base)
	}
	_ = d1
}

// settle waits until d has handled the packets queued so far: control
// work runs before packets, so d.call alone does not wait for them.
func settle(d *Daemon) {
	for len(d.known)+len(d.inits)+len(d.bulk) > 0 {
		time.Sleep(time.Millisecond)
	}
	d.call(func() {}) // the packet taken last has been handled
}

// hugeRSAKey is an RSA public key with a random odd modulus of bits bits:
// enough to test refusal, without generating primes.
func hugeRSAKey(t *testing.T, bits int) *rsa.PublicKey {
	b := make([]byte, bits/8)
	rand.Read(b)
	b[0] |= 0x80
	b[len(b)-1] |= 1
	return &rsa.PublicKey{N: new(big.Int).SetBytes(b), E: 65537}
}

// TestHugeRSAKeyRefused (issue 10, item 8): a peer's key (pinned, from
// DNS or from its certificate) with a 16384-bit modulus or a huge exponent
// is refused before any verification.
func TestHugeRSAKeyRefused(t *testing.T) {
	p := mustPRF(t, PRF_HMAC_SHA2_256)
	auth := &AuthPayload{Method: AuthDigitalSign, Data: append(append([]byte{byte(len(algRSASHA256))}, algRSASHA256...), make([]byte, 2048)...)}
	for name, k := range map[string]*rsa.PublicKey{
		"16384-bit modulus": hugeRSAKey(t, 16384),
		"exponent 2^33+1":   {N: hugeRSAKey(t, 2048).N, E: 1<<33 + 1},
	} {
		start := time.Now()
		err := verifyAuth(p, &PeerAuth{PublicKey: k}, auth, []byte("octets"))
		if !errors.Is(err, ErrKeyTooLarge) || !errors.Is(err, ErrAuth) {
			t.Errorf("%s: %v", name, err)
		}
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Errorf("%s: refusal took %v", name, d)
		}
	}
	if err := CheckPublicKey(hugeRSAKey(t, MaxRSAModulusBits)); err != nil {
		t.Errorf("%d-bit key refused: %v", MaxRSAModulusBits, err)
	}

	// The same key in a certificate from a trusted CA.
	ca, caKey := testCA(t)
	leaf := testCert(t, ca, caKey, hugeRSAKey(t, 16384), "huge", []net.IP{net.ParseIP("192.0.2.9")}, nil)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := peerKey(&PeerAuth{Roots: roots}, IdentityOf(netip.MustParseAddr("192.0.2.9")),
		[]*CertPayload{{Encoding: CertX509Signature, Data: leaf.Raw}})
	if !errors.Is(err, ErrKeyTooLarge) {
		t.Fatalf("certificate with a 16384-bit key: %v", err)
	}
}

// testCA makes a self-signed Ed25519 CA.
func testCA(t *testing.T) (*x509.Certificate, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, priv
}

// testCert has ca certify pub for common name cn, IP addresses ips and
// DNS names dns.
func testCert(t *testing.T, ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, cn string, ips []net.IP, dns []string) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, IPAddresses: ips, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCertWithoutRemoteIDIsTheAddress (issue 10, item 4): a configured
// peer with a CA and no remote ID accepted any certificate the CA issued,
// for any identity. The peer must now be its address: a certificate that
// names the address is accepted, one from the same CA for another identity
// refused.
func TestCertWithoutRemoteIDIsTheAddress(t *testing.T) {
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	ca, caKey := testCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	key := func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }
	k2 := key()
	c2 := testCert(t, ca, caKey, k2.Public(), "responder", []net.IP{a2.AsSlice()}, nil)
	for _, tt := range []struct {
		name  string
		id    Identity
		ips   []net.IP
		dns   []string
		works bool
	}{
		{"certificate for the peer's address", IdentityOf(a1), []net.IP{a1.AsSlice()}, nil, true},
		{"certificate for another name", Identity{Type: IDFQDN, Data: []byte("evil.example")}, nil, []string{"evil.example"}, false},
		{"certificate for another address", IdentityOf(netip.MustParseAddr("198.51.100.66")), []net.IP{net.ParseIP("198.51.100.66")}, nil, false},
		{"address claimed, certificate for another name", IdentityOf(a1), nil, []string{"evil.example"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k1 := key()
			c1 := testCert(t, ca, caKey, k1.Public(), "initiator", tt.ips, tt.dns)
			dp1 := &memDatapath{self: netip.AddrPortFrom(a1, 4500), nextSPI: 0x1000, children: map[uint32]bool{}}
			dp2 := &memDatapath{self: netip.AddrPortFrom(a2, 4500), nextSPI: 0x2000, children: map[uint32]bool{}}
			ts1, ts2 := Selectors{mustSelector(t, "10.0.0.1")}, Selectors{mustSelector(t, "10.0.0.2")}
			d1, err := New(Config{Datapath: dp1, Peers: []*PeerConfig{{Name: "two", Addr: a2, IKEPort: 4500, NATTPort: 4500,
				LocalID: tt.id, RemoteID: IdentityOf(a2), Auth: Credential{Signer: k1, Cert: c1}, PeerAuth: PeerAuth{Roots: roots},
				LocalTS: ts1, RemoteTS: ts2, DPD: -1, RetransmitBase: 20 * time.Millisecond, RetransmitTries: 2}}})
			if err != nil {
				t.Fatal(err)
			}
			defer d1.Close()
			// The responder: a CA and no remote ID.
			d2, err := New(Config{Datapath: dp2, Peers: []*PeerConfig{{Name: "one", Addr: a1, IKEPort: 4500, NATTPort: 4500,
				LocalID: IdentityOf(a2), Auth: Credential{Signer: k2, Cert: c2}, PeerAuth: PeerAuth{Roots: roots},
				LocalTS: ts2, RemoteTS: ts1, DPD: -1}}})
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			dp1.peer, dp2.peer = d2, d1
			if err := d1.Initiate("two"); err != nil {
				t.Fatal(err)
			}
			if tt.works {
				waitUntil(t, func() bool { return oneEstablished(d1) && oneEstablished(d2) }, "IKE SA up")
				return
			}
			time.Sleep(200 * time.Millisecond)
			if oneEstablished(d2) || dp2.installed() != 0 {
				t.Fatal("the responder accepted the peer")
			}
		})
	}
}

// TestHalfOpenReassemblyBounded (issue 10, item 6): a peer that completed
// IKE_SA_INIT, and proved nothing else, has its fragmented IKE_AUTH
// reassembled up to MaxHalfOpenReassembly octets only, not 64 KiB.
func TestHalfOpenReassemblyBounded(t *testing.T) {
	i, r := newTestSAPair(t, 0)
	i.fragOK, i.peer = true, &PeerConfig{FragmentSize: 1200}
	r.halfKey = &halfKey{}
	frags, err := i.encryptFrags(IKE_AUTH, 1, false, []Payload{&NotifyPayload{NotifyType: 40000, Data: make([]byte, 40<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for _, fr := range frags {
		m, err := Parse(fr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.reassemble(m); err != nil {
			last = err
		}
		if r.frags != nil && r.frags.size > MaxHalfOpenReassembly {
			t.Fatalf("half-open SA holds %d octets of fragments", r.frags.size)
		}
	}
	if !errors.Is(last, ErrMalformed) {
		t.Fatalf("reassembly of 40 KiB in a half-open SA: %v", last)
	}
	// Established, the same message is reassembled.
	r.halfKey, r.frags = nil, nil
	var full *Message
	for _, fr := range frags {
		m, _ := Parse(fr)
		if full, err = r.reassemble(m); err != nil {
			t.Fatal(err)
		}
	}
	if full == nil {
		t.Fatal("established SA did not reassemble 40 KiB")
	}
}

// TestTooManyPeerCerts: a peer that sends a pile of certificates, each a
// candidate for costly chain building, is refused before any check.
func TestTooManyPeerCerts(t *testing.T) {
	ca, caKey := testCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	var sent []*CertPayload
	for range MaxPeerCerts + 1 {
		c := testCert(t, ca, caKey, caKey.Public(), "x", []net.IP{net.ParseIP("192.0.2.9")}, nil)
		sent = append(sent, &CertPayload{Encoding: CertX509Signature, Data: c.Raw})
	}
	if _, err := peerKey(&PeerAuth{Roots: roots}, IdentityOf(netip.MustParseAddr("192.0.2.9")), sent); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("%d certificates: %v", len(sent), err)
	}
	if _, err := peerKey(&PeerAuth{Roots: roots}, IdentityOf(netip.MustParseAddr("192.0.2.9")), sent[:MaxPeerCerts]); err != nil {
		t.Fatalf("%d certificates: %v", MaxPeerCerts, err)
	}
}
