package ike

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// memDatapath joins two daemons in memory for protocol tests that need
// exact timing (the end-to-end tests with real engines are in tunnel).
type memDatapath struct {
	mu       sync.Mutex
	self     netip.AddrPort
	peer     *Daemon
	nextSPI  uint32
	children map[uint32]bool // by inbound SPI
	sent     [][]byte        // what the daemon sent, in order
	// in and heard are how many ESP packets each Child SA accepted, and
	// when the last (hear).
	in    map[uint32]uint64
	heard map[uint32]time.Time
	// retired are the inbound SPIs of the Child SAs removed by
	// RetireChild, in order.
	retired []uint32
	// lingering are the inbound SPIs of retired Child SAs whose linger
	// RemoveChild has not ended.
	lingering map[uint32]bool
	// beforeSend, if set, sees each message before it goes, on the
	// sending daemon's goroutine.
	beforeSend func(msg []byte)
}

// hear records an ESP packet accepted by c now.
func (m *memDatapath) hear(c *ChildSA) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.in == nil {
		m.in, m.heard = map[uint32]uint64{}, map[uint32]time.Time{}
	}
	m.in[c.In.SPI]++
	m.heard[c.In.SPI] = time.Now()
}

func (m *memDatapath) ChildHeard(spi uint32) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heard[spi]
}

func (m *memDatapath) SendIKE(msg []byte, to netip.AddrPort, natt bool) error {
	m.mu.Lock()
	p, f := m.peer, m.beforeSend
	m.sent = append(m.sent, append([]byte(nil), msg...))
	m.mu.Unlock()
	if f != nil {
		f(msg)
	}
	p.HandlePacket(msg, m.self, natt)
	return nil
}
func (m *memDatapath) ReserveSPI() (uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextSPI++
	return m.nextSPI, nil
}
func (m *memDatapath) ReleaseSPI(uint32) {}
func (m *memDatapath) InstallChild(c *ChildSA) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.children[c.In.SPI] = true
	return nil
}
func (m *memDatapath) RetireChild(spi uint32, linger time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.children[spi] && linger == rekeyedLinger {
		m.retired = append(m.retired, spi)
		if m.lingering == nil {
			m.lingering = map[uint32]bool{}
		}
		m.lingering[spi] = true
	}
	delete(m.children, spi)
}
func (m *memDatapath) lingers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.lingering)
}
func (m *memDatapath) retiredSAs() []uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]uint32(nil), m.retired...)
}
func (m *memDatapath) RemoveChild(spi uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.children, spi)
	delete(m.lingering, spi)
}
func (m *memDatapath) ChildInPackets(spi uint32) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.in[spi]
}
func (m *memDatapath) SendKeepalive(netip.AddrPort) error { return nil }
func (m *memDatapath) sends() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([][]byte(nil), m.sent...)
}
func (m *memDatapath) installed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.children)
}

// syncBuffer collects log output from both daemons.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func memPair(t *testing.T) (d1, d2 *Daemon, dp1, dp2 *memDatapath) {
	return memPairLog(t, nil)
}

func memPairLog(t *testing.T, log *syncBuffer) (d1, d2 *Daemon, dp1, dp2 *memDatapath) {
	t.Helper()
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	dp1 = &memDatapath{self: netip.AddrPortFrom(a1, 4500), nextSPI: 0x1000, children: map[uint32]bool{}}
	dp2 = &memDatapath{self: netip.AddrPortFrom(a2, 4500), nextSPI: 0x2000, children: map[uint32]bool{}}
	psk := []byte("collisions collisions")
	ts1 := Selectors{mustSelector(t, "10.0.0.1")}
	ts2 := Selectors{mustSelector(t, "10.0.0.2")}
	mk := func(name string, self, addr netip.Addr, local, remote Selectors) *PeerConfig {
		return &PeerConfig{Name: name, Addr: addr, NATTPort: 4500, IKEPort: 4500, Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk},
			LocalID: IdentityOf(self), RemoteID: IdentityOf(addr), LocalTS: local, RemoteTS: remote, DPD: -1}
	}
	var logger *slog.Logger
	if log != nil {
		logger = slog.New(slog.NewTextHandler(log, nil))
	}
	var err error
	if d1, err = New(Config{Datapath: dp1, Peers: []*PeerConfig{mk("two", a1, a2, ts1, ts2)}, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	if d2, err = New(Config{Datapath: dp2, Peers: []*PeerConfig{mk("one", a2, a1, ts2, ts1)}, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	dp1.peer, dp2.peer = d2, d1
	t.Cleanup(func() { d1.Close(); d2.Close() })
	if err := d1.Initiate("two"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return oneEstablished(d1) && oneEstablished(d2) }, "IKE SA up")
	return d1, d2, dp1, dp2
}

func mustSelector(t *testing.T, s string) Selector {
	sel, err := policy.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// oneEstablished reports whether d has exactly one established IKE SA
// (not counting one being replaced) with one Child SA.
func oneEstablished(d *Daemon) bool {
	n := 0
	ok := true
	d.call(func() {
		for _, sa := range d.sas {
			if sa.state == stateEstablished && !sa.rekeyed {
				n++
				ok = ok && len(sa.children) == 1
			}
		}
	})
	return n == 1 && ok
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
	}
}

func current(d *Daemon) (sa *ikeSA) {
	d.call(func() {
		for _, s := range d.sas {
			if s.state == stateEstablished && !s.rekeyed {
				sa = s
			}
		}
	})
	return sa
}

// TestSimultaneousIKERekey starts an IKE SA rekey on both ends at once:
// both must end up on the same new IKE SA, with the Child SA moved to it
// and no other IKE SA left (RFC 7296 §2.8.2).
func TestSimultaneousIKERekey(t *testing.T) {
	for i := 0; i < 20; i++ {
		var log syncBuffer
		d1, d2, _, _ := memPairLog(t, &log)
		s1, s2 := current(d1), current(d2)
		crossed(d1, d2, func() { d1.rekeyIKE(s1) }, func() { d2.rekeyIKE(s2) })
		waitUntil(t, func() bool {
			n1, n2 := current(d1), current(d2)
			return n1 != nil && n2 != nil && n1 != s1 && n2 != s2 && n1.spiI == n2.spiI && n1.spiR == n2.spiR &&
				len(d1.SAs()) == 1 && len(d2.SAs()) == 1
		}, "both ends on the same new IKE SA, the others gone")
		if !oneEstablished(d1) || !oneEstablished(d2) {
			t.Fatal("Child SA not moved to the surviving IKE SA")
		}
		checkAddrIndex(t, d1)
		checkAddrIndex(t, d2)
		if n := strings.Count(log.String(), "IKE SA rekey collision"); n != 2 {
			t.Fatalf("%d ends saw the collision, want 2:\n%s", n, log.String())
		}
	}
}

// TestSimultaneousChildRekey rekeys the Child SA from both ends at once:
// each end must keep exactly one Child SA, the same one (§2.8.1).
func TestSimultaneousChildRekey(t *testing.T) {
	for i := 0; i < 20; i++ {
		var log syncBuffer
		d1, d2, dp1, dp2 := memPairLog(t, &log)
		s1, s2 := current(d1), current(d2)
		var c1, c2 *ChildSA
		d1.call(func() { c1 = s1.children[0] })
		d2.call(func() { c2 = s2.children[0] })
		crossed(d1, d2, func() { d1.rekeyChild(c1) }, func() { d2.rekeyChild(c2) })
		waitUntil(t, func() bool {
			if dp1.installed() != 1 || dp2.installed() != 1 {
				return false
			}
			var n1, n2 *ChildSA
			d1.call(func() { n1 = s1.children[0] })
			d2.call(func() { n2 = s2.children[0] })
			return n1 != c1 && n2 != c2 && n1.Out.SPI == n2.In.SPI && n2.Out.SPI == n1.In.SPI
		}, "one common Child SA left on each end")
		if n := strings.Count(log.String(), "deleting our redundant Child SA"); n != 1 {
			t.Fatalf("%d ends deleted a redundant Child SA, want 1:\n%s", n, log.String())
		}
	}
}

// TestRekeyRetiresReplacedChild: after a Child SA rekey, both ends retire
// the replaced Child SA (its inbound SA lingers for what is in flight)
// instead of removing it at once; a Child SA deleted for good, with no
// successor, is removed at once.
func TestRekeyRetiresReplacedChild(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	s1, s2 := current(d1), current(d2)
	var c1, c2 *ChildSA
	d1.call(func() { c1 = s1.children[0] })
	d2.call(func() { c2 = s2.children[0] })
	d1.call(func() { d1.rekeyChild(c1) })
	waitUntil(t, func() bool { return len(dp1.retiredSAs()) == 1 && len(dp2.retiredSAs()) == 1 }, "the replaced Child SA retired on both ends")
	if r1, r2 := dp1.retiredSAs()[0], dp2.retiredSAs()[0]; r1 != c1.In.SPI || r2 != c2.In.SPI {
		t.Fatalf("retired SPIs %#x and %#x, want the replaced %#x and %#x", r1, r2, c1.In.SPI, c2.In.SPI)
	}
	if dp1.installed() != 1 || dp2.installed() != 1 {
		t.Fatalf("%d and %d Child SAs installed, want the successor alone", dp1.installed(), dp2.installed())
	}

	// Deleting the successor, which nothing replaced, removes it at once.
	var n1 *ChildSA
	d1.call(func() { n1 = s1.children[0]; d1.deleteChild(n1) })
	waitUntil(t, func() bool { return dp1.installed() == 0 && dp2.installed() == 0 }, "the last Child SA removed on both ends")
	if len(dp1.retiredSAs()) != 1 || len(dp2.retiredSAs()) != 1 {
		t.Fatal("a Child SA without a successor was retired, not removed")
	}
}

// TestIKEDownEndsLinger: the retired Child SAs' inbound SAs, which still
// accept packets after a rekey, go with their IKE SA, at both ends (a peer
// taken down or removed by a reload sends nothing more that is accepted),
// also after an IKE SA rekey moved them.
func TestIKEDownEndsLinger(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	s1 := current(d1)
	var c1 *ChildSA
	d1.call(func() { c1 = s1.children[0] })
	d1.call(func() { d1.rekeyChild(c1) })
	waitUntil(t, func() bool { return dp1.lingers() == 1 && dp2.lingers() == 1 }, "the replaced Child SA lingering on both ends")
	d1.call(func() { d1.rekeyIKE(s1) })
	waitUntil(t, func() bool { n := current(d1); return n != nil && n != s1 && len(d1.SAs()) == 1 && len(d2.SAs()) == 1 }, "the IKE SA rekeyed")
	if dp1.lingers() != 1 || dp2.lingers() != 1 {
		t.Fatal("the IKE SA rekey ended the linger")
	}
	if n, err := d1.Down("two"); err != nil || n != 1 {
		t.Fatalf("Down: %d, %v", n, err)
	}
	waitUntil(t, func() bool { return dp1.lingers() == 0 && dp2.lingers() == 0 }, "the linger ended with the IKE SA at both ends")
}

// crossed runs f1 on d1 and f2 on d2 so that each one's request reaches
// the other end while that end's own request is outstanding.
func crossed(d1, d2 *Daemon, f1, f2 func()) {
	gate := make(chan struct{})
	d2.post(func() { <-gate }) // hold d2
	d2.post(f2)                // runs before d1's request, queued next
	d1.call(f1)
	close(gate)
}

// TestNewChildAfterPeerDeletedIt: the peer deletes the only Child SA but
// keeps the IKE SA; traffic (an acquire) creates a new one with
// CREATE_CHILD_SA.
func TestNewChildAfterPeerDeletedIt(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	s2 := current(d2)
	d2.call(func() { d2.deleteChild(s2.children[0]) })
	waitUntil(t, func() bool { return dp1.installed() == 0 && dp2.installed() == 0 }, "Child SA deleted on both ends")
	d1.Acquire("two")
	waitUntil(t, func() bool {
		return dp1.installed() == 1 && dp2.installed() == 1 && oneEstablished(d1) && oneEstablished(d2)
	},
		"a new Child SA in the same IKE SA")
	if current(d2) != s2 {
		t.Fatal("a new IKE SA was made instead of a Child SA")
	}
}

// TestChildHardLifetime: at its hard lifetime a Child SA leaves the
// datapath and the peer is told with a Delete, though nothing rekeyed it.
func TestChildHardLifetime(t *testing.T) {
	d1, _, dp1, dp2 := memPair(t)
	s1 := current(d1)
	var c *ChildSA
	d1.call(func() { c = s1.children[0] })
	d1.ChildEvent(c.In.SPI, true)
	waitUntil(t, func() bool { return dp1.installed() == 0 && dp2.installed() == 0 }, "the Child SA removed on both ends")
}

// recordingDatapath records what a daemon sends.
type recordingDatapath struct {
	memDatapath
	sent chan []byte
}

func (r *recordingDatapath) SendIKE(msg []byte, _ netip.AddrPort, _ bool) error {
	r.sent <- append([]byte(nil), msg...)
	return nil
}

// TestUnsupportedCriticalPayload: an IKE_SA_INIT with a critical payload
// oevpn does not know is answered with UNSUPPORTED_CRITICAL_PAYLOAD naming
// its type (RFC 7296 §2.5).
func TestUnsupportedCriticalPayload(t *testing.T) {
	from := netip.MustParseAddr("192.0.2.1")
	dp := &recordingDatapath{memDatapath: memDatapath{children: map[uint32]bool{}}, sent: make(chan []byte, 4)}
	d, err := New(Config{Datapath: dp, Peers: []*PeerConfig{{Name: "p", Addr: from, Auth: Credential{PSK: []byte("x")},
		LocalTS: Selectors{mustSelector(t, "10.0.0.1")}, RemoteTS: Selectors{mustSelector(t, "10.0.0.2")}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	m := &Message{Header: Header{SPIi: 77, Exchange: IKE_SA_INIT, Flags: FlagInitiator},
		Payloads: []Payload{&rawPayload{pt: 222, body: []byte{1, 2, 3}}}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b[HeaderLen+1] |= criticalBit
	d.HandlePacket(b, netip.AddrPortFrom(from, 500), false)
	select {
	case out := <-dp.sent:
		r, err := Parse(out)
		if err != nil {
			t.Fatal(err)
		}
		n := r.Notify(UNSUPPORTED_CRITICAL_PAYLOAD)
		if n == nil || len(n.Data) != 1 || n.Data[0] != 222 || r.SPIi != 77 || !r.IsResponse() {
			t.Fatalf("answer %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
}

func TestRawPublicKeyCert(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	spki := func(k ed25519.PublicKey) []byte { b, _ := x509.MarshalPKIXPublicKey(k); return b }
	pa := &PeerAuth{PublicKey: pub}
	if k, err := peerKey(pa, Identity{}, []*CertPayload{{Encoding: CertRawPublicKey, Data: spki(pub)}}); err != nil || k == nil {
		t.Fatalf("the pinned key sent as RFC 7670 CERT: %v", err)
	}
	if _, err := peerKey(pa, Identity{}, []*CertPayload{{Encoding: CertRawPublicKey, Data: spki(other)}}); !errors.Is(err, ErrAuth) {
		t.Fatalf("another key sent: %v", err)
	}
	if _, err := peerKey(pa, Identity{}, []*CertPayload{{Encoding: CertRawPublicKey, Data: []byte{1, 2}}}); !errors.Is(err, ErrAuth) {
		t.Fatalf("garbage sent: %v", err)
	}
}

// deafDatapath sends nothing anywhere: a peer that never answers.
type deafDatapath struct{ memDatapath }

func (*deafDatapath) SendIKE([]byte, netip.AddrPort, bool) error { return nil }

// TestDownStopsNegotiation: Down during a negotiation tells OnChange with
// ErrDown (those waiting for it stop waiting), and an auto-start peer is
// not restarted: the operator asked for it to stop.
func TestDownStopsNegotiation(t *testing.T) {
	type change struct {
		peer string
		up   bool
		err  error
	}
	changes := make(chan change, 4)
	dp := &deafDatapath{memDatapath{nextSPI: 0x1000, children: map[uint32]bool{}}}
	psk := []byte("nobody answers nobody answers")
	p := &PeerConfig{Name: "deaf", Addr: netip.MustParseAddr("192.0.2.9"), NATTPort: 4500, IKEPort: 500,
		Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk}, LocalTS: Selectors{mustSelector(t, "10.0.0.1")},
		RemoteTS: Selectors{mustSelector(t, "10.0.0.9")}, DPD: -1, AutoStart: true,
		RetransmitBase: 20 * time.Millisecond}
	d, err := New(Config{Datapath: dp, Peers: []*PeerConfig{p},
		OnChange: func(peer string, up bool, err error) { changes <- change{peer, up, err} }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Initiate("deaf"); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Down("deaf"); n != 1 || err != nil {
		t.Fatalf("Down = %d, %v; want one negotiation stopped", n, err)
	}
	select {
	case c := <-changes:
		if c.peer != "deaf" || c.up || !errors.Is(c.err, ErrDown) {
			t.Fatalf("OnChange(%q, %v, %v); want (deaf, false, ErrDown)", c.peer, c.up, c.err)
		}
	case <-time.After(time.Second):
		t.Fatal("OnChange was not told that the negotiation stopped")
	}
	time.Sleep(300 * time.Millisecond) // a restart would come after 4 × 20 ms
	n := 0
	d.call(func() { n = len(d.sas) })
	if n != 0 {
		t.Fatalf("%d IKE SAs after Down: the stopped negotiation was restarted", n)
	}
}
