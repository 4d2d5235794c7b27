package tunnel

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/policy"
)

type testEndpoint struct {
	eng  *Engine
	net  *Netstack
	addr netip.Addr
	ike  chan []byte
	ctl  testControl // what the engine hands its control plane (see route)
}

func newTestEndpoint(t testing.TB, addr netip.Addr) *testEndpoint {
	t.Helper()
	dev, tnet, err := NewNetstack([]netip.Addr{addr}, 1400)
	if err != nil {
		t.Fatal(err)
	}
	te := &testEndpoint{net: tnet, addr: addr, ike: make(chan []byte, 16)}
	te.eng, err = New(Config{Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	te.route(func(c *testControl) {
		c.ike = func(msg []byte, _ netip.AddrPort, _ netip.Addr, natt bool) {
			m := append([]byte(nil), msg...)
			if natt {
				m = append([]byte("natt:"), m...)
			}
			te.ike <- m
		}
	})
	t.Cleanup(func() { te.eng.Close() })
	return te
}

func (te *testEndpoint) nattAddr() netip.AddrPort {
	_, natt := te.eng.Ports()
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), natt)
}

func hostSel(a netip.Addr) policy.Selectors {
	return policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(a, a.BitLen()))}
}

// connect installs statically keyed SA pairs between a and b.
func connect(t *testing.T, a, b *testEndpoint, tr esp.Transform) (ab, ba *SAPair) {
	t.Helper()
	k1, k2 := make([]byte, tr.KeyLen()), make([]byte, tr.KeyLen())
	crand.Read(k1)
	crand.Read(k2)
	spi1, spi2 := 0x1000+rand.Uint32()%0x10000, 0x20000+rand.Uint32()%0x10000
	var err error
	// b's pair first: a's install may flush packets a held, and b must
	// know their SPI by then.
	ba, err = b.eng.Install(PairConfig{Peer: a.nattAddr(), Local: hostSel(b.addr), Remote: hostSel(a.addr),
		Out: esp.Config{Transform: tr, SPI: spi2, Key: k2, ESN: true}, In: esp.Config{Transform: tr, SPI: spi1, Key: k1, ESN: true}})
	if err != nil {
		t.Fatal(err)
	}
	ab, err = a.eng.Install(PairConfig{Peer: b.nattAddr(), Local: hostSel(a.addr), Remote: hostSel(b.addr),
		Out: esp.Config{Transform: tr, SPI: spi1, Key: k1, ESN: true}, In: esp.Config{Transform: tr, SPI: spi2, Key: k2, ESN: true}})
	if err != nil {
		t.Fatal(err)
	}
	return ab, ba
}

// ping sends up to three echo requests (datagrams may be lost, as on any
// network) and succeeds on the first reply.
func ping(t *testing.T, from *testEndpoint, to netip.Addr, seq int) error {
	t.Helper()
	var err error
	for try := 0; try < 3; try++ {
		if err = pingOnce(from, to, seq*3+try); err == nil {
			return nil
		}
	}
	return err
}

func pingOnce(from *testEndpoint, to netip.Addr, seq int) error {
	c, err := from.net.DialPingAddr(from.addr, to)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 1234, Seq: seq, Data: []byte("oevpn ping")}}
	b, _ := msg.Marshal(nil)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(b); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	reply, err := icmp.ParseMessage(1, buf[:n])
	if err != nil {
		return err
	}
	if reply.Type != ipv4.ICMPTypeEchoReply {
		return errors.New("not an echo reply")
	}
	return nil
}

// sinkResult is what a hashing TCP sink received.
type sinkResult struct {
	sum [32]byte
	n   int64
	err error
}

// hashSink accepts one TCP connection on b's port and reports the SHA-256
// and length of everything it receives. The listener closes with the test.
func hashSink(t *testing.T, b *testEndpoint, port uint16) <-chan sinkResult {
	t.Helper()
	ln, err := b.net.ListenTCPAddrPort(netip.AddrPortFrom(b.addr, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan sinkResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- sinkResult{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		done <- sinkResult{sum: [32]byte(h.Sum(nil)), n: n, err: err}
	}()
	return done
}

// transfer sends size pseudo-random octets over TCP from a to b and checks
// that the SHA-256 of what arrived matches.
func transfer(t *testing.T, a, b *testEndpoint, size int64) {
	t.Helper()
	done := hashSink(t, b, 5001)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(b.addr, 5001))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), size), h)
	start := time.Now()
	if _, err := io.Copy(c, src); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.n != size || r.sum != [32]byte(h.Sum(nil)) {
			t.Fatalf("received %d octets with hash %x; sent %d with %x", r.n, r.sum, size, h.Sum(nil))
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("transfer did not finish")
	}
	t.Logf("%d MB in %v", size>>20, time.Since(start).Round(time.Millisecond))
}

func TestNetstackEndToEnd(t *testing.T) {
	for _, tr := range esp.Transforms {
		t.Run(tr.String(), func(t *testing.T) {
			a := newTestEndpoint(t, netip.MustParseAddr("10.99.0.1"))
			b := newTestEndpoint(t, netip.MustParseAddr("10.99.0.2"))
			ab, ba := connect(t, a, b, tr)
			for i := 0; i < 3; i++ {
				if err := ping(t, a, b.addr, i); err != nil {
					t.Fatalf("ping %d: %v", i, err)
				}
			}
			size := int64(4 << 20)
			if tr == esp.AESGCM128 {
				size = 100 << 20
			}
			if raceEnabled || testing.Short() {
				size = 4 << 20
			}
			transfer(t, a, b, size)
			// b opens what a sealed: wait for the last packets in flight;
			// a full socket buffer on loopback may still have lost a few.
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) &&
				ba.In.Counters().Packets != ab.Out.Counters().Packets; {
				time.Sleep(10 * time.Millisecond)
			}
			if sealed, opened := ab.Out.Counters().Packets, ba.In.Counters().Packets; sealed == 0 || opened > sealed || opened*100 < sealed*99 {
				t.Fatalf("a→b: %d sealed, %d opened", sealed, opened)
			}
			for _, e := range []*Engine{a.eng, b.eng} {
				if s := e.Stats(); s.DecryptErrors+s.SelectorDrops+s.Malformed+s.UnknownSPI != 0 {
					t.Fatalf("unexpected drops: %+v", s)
				}
			}
		})
	}
}

// TestOutboundOutsideSelectors checks that a packet whose source is outside
// the SA's local selectors is not sent through it.
func TestOutboundOutsideSelectors(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.1.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.1.2"))
	tr := esp.AESGCM256
	k1, k2 := make([]byte, tr.KeyLen()), make([]byte, tr.KeyLen())
	// a's SA covers 10.99.1.66 only; its stack sends from 10.99.1.1.
	if _, err := a.eng.Install(PairConfig{Peer: b.nattAddr(), Local: hostSel(netip.MustParseAddr("10.99.1.66")), Remote: hostSel(b.addr),
		Out: esp.Config{Transform: tr, SPI: 0x5001, Key: k1}, In: esp.Config{Transform: tr, SPI: 0x5002, Key: k2}}); err != nil {
		t.Fatal(err)
	}
	c, err := a.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(b.addr, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	waitFor(t, func() bool { return a.eng.Stats().NoSA > 0 }, "a drops a packet outside its selectors")
	if a.eng.Stats().TxPackets != 0 {
		t.Fatal("a sent a packet outside its selectors")
	}
}

// TestSelectorDropAfterDecrypt has a peer whose SA covers an address the
// receiving side's SA does not: b must decrypt and then drop.
func TestSelectorDropAfterDecrypt(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.2.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.2.2"))
	tr := esp.ChaCha20Poly1305
	k1, k2 := make([]byte, tr.KeyLen()), make([]byte, tr.KeyLen())
	wide := policy.Selectors{policy.PrefixSelector(netip.MustParsePrefix("10.99.2.0/24"))}
	if _, err := a.eng.Install(PairConfig{Peer: b.nattAddr(), Local: wide, Remote: hostSel(b.addr),
		Out: esp.Config{Transform: tr, SPI: 0x6001, Key: k1}, In: esp.Config{Transform: tr, SPI: 0x6002, Key: k2}}); err != nil {
		t.Fatal(err)
	}
	other := netip.MustParseAddr("10.99.2.99") // b accepts only this source
	pb, err := b.eng.Install(PairConfig{Peer: a.nattAddr(), Local: hostSel(b.addr), Remote: hostSel(other),
		Out: esp.Config{Transform: tr, SPI: 0x6002, Key: k2}, In: esp.Config{Transform: tr, SPI: 0x6001, Key: k1}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(b.addr, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	waitFor(t, func() bool { return b.eng.Stats().SelectorDrops > 0 }, "b drops the decrypted packet")
	if pb.In.Counters().Packets != 1 || b.eng.Stats().RxPackets != 0 {
		t.Fatalf("b delivered a packet outside its selectors: %+v", b.eng.Stats())
	}
}

func TestControlDemux(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.3.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.3.2"))
	ikePort, nattPort := b.eng.Ports()
	lo := netip.MustParseAddr("127.0.0.1")
	if err := a.eng.SendIKE([]byte("ike on 500"), netip.AddrPortFrom(lo, ikePort), false); err != nil {
		t.Fatal(err)
	}
	if err := a.eng.SendIKE([]byte("ike on 4500"), netip.AddrPortFrom(lo, nattPort), true); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		select {
		case m := <-b.ike:
			got[string(m)] = true
		case <-time.After(5 * time.Second):
			t.Fatal("IKE message not delivered")
		}
	}
	if !got["ike on 500"] || !got["natt:ike on 4500"] {
		t.Fatalf("delivered %v", got)
	}
	// A keepalive and a datagram for an unknown SPI are counted and dropped.
	ep, _ := a.eng.natt.ParseEndpoint(netip.AddrPortFrom(lo, nattPort).String())
	a.eng.natt.Send([][]byte{{0xff}}, ep)
	a.eng.natt.Send([][]byte{{0, 0, 0x12, 0x34, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26}}, ep)
	waitFor(t, func() bool { s := b.eng.Stats(); return s.Keepalives == 1 && s.UnknownSPI == 1 }, "keepalive and unknown SPI counted")
}

func TestRemoveStopsTraffic(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.4.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.4.2"))
	ab, _ := connect(t, a, b, esp.AESGCM128)
	if err := ping(t, a, b.addr, 1); err != nil {
		t.Fatal(err)
	}
	if !a.eng.Remove(ab) || a.eng.Remove(ab) {
		t.Fatal("Remove")
	}
	if err := ping(t, a, b.addr, 2); err == nil {
		t.Fatal("ping succeeded without an SA")
	}
	if a.eng.Stats().NoSA == 0 {
		t.Fatal("no NoSA drop counted")
	}
}

// TestRetiredPairAcceptsInFlight: a pair replaced by a rekey and retired
// takes no outbound traffic, but what the peer still sends on it (the
// peer has not switched yet, or its packets crossed the Delete) arrives
// until the linger ends; then its SPI is unknown.
func TestRetiredPairAcceptsInFlight(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.6.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.6.2"))
	tr := esp.AESGCM128
	old, _ := connect(t, a, b, tr) // b keeps sending on the old pair
	k := make([]byte, tr.KeyLen())
	succ, err := a.eng.Install(PairConfig{Peer: b.nattAddr(), Local: hostSel(a.addr), Remote: hostSel(b.addr),
		Out: esp.Config{Transform: tr, SPI: 0x7101, Key: k}, In: esp.Config{Transform: tr, SPI: 0x7102, Key: k}})
	if err != nil {
		t.Fatal(err)
	}
	const linger = 500 * time.Millisecond
	if !a.eng.Retire(old, linger) || a.eng.Retire(old, linger) {
		t.Fatal("Retire: want true once, then the pair no longer installed")
	}
	if l := a.eng.Pairs(); len(l) != 1 || l[0] != succ {
		t.Fatalf("pairs after Retire: %v, want the successor alone", l)
	}
	l, c := udpFlow(t, b, a, 7200)
	buf := make([]byte, 64)
	c.Write([]byte("in flight"))
	l.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := l.Read(buf); err != nil || string(buf[:n]) != "in flight" {
		t.Fatalf("a datagram on the retired pair within the linger: %q, %v", buf[:n], err)
	}
	// a's own traffic goes on the successor, whose SPI b does not know.
	r, err := a.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(b.addr, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Write([]byte("out"))
	waitFor(t, func() bool { return b.eng.Stats().UnknownSPI == 1 }, "a's packet sent on the successor")

	time.Sleep(linger + 100*time.Millisecond)
	c.Write([]byte("too late"))
	waitFor(t, func() bool { return a.eng.Stats().UnknownSPI == 1 }, "the retired SPI unknown after the linger")
	l.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := l.Read(buf); err == nil {
		t.Fatalf("received %q on a retired pair after its linger", buf[:n])
	}
}

// udpFlow returns a UDP listener on to's port and a socket of from's
// connected to it, closed when the test ends.
func udpFlow(t *testing.T, from, to *testEndpoint, port uint16) (l, c *gonet.UDPConn) {
	t.Helper()
	l, err := to.net.ListenUDPAddrPort(netip.AddrPortFrom(to.addr, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, err = from.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(to.addr, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c
}

// TestRemoveEndsLinger: Remove of a retired pair (its peer went) ends its
// linger at once.
func TestRemoveEndsLinger(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.7.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.7.2"))
	old, _ := connect(t, a, b, esp.AESGCM128)
	l, c := udpFlow(t, b, a, 7200)
	a.eng.Retire(old, time.Hour)
	c.Write([]byte("lingering"))
	buf := make([]byte, 64)
	l.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := l.Read(buf); err != nil {
		t.Fatalf("nothing on the retired pair within its linger: %v", err)
	}
	if a.eng.Remove(old) {
		t.Fatal("Remove of a retired pair reported it installed")
	}
	c.Write([]byte("after Remove"))
	waitFor(t, func() bool { return a.eng.Stats().UnknownSPI == 1 }, "the retired SPI unknown after Remove")
	l.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := l.Read(buf); err == nil {
		t.Fatalf("received %q on a retired pair after Remove", buf[:n])
	}
}

func TestHardExpiryRemovesPair(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("10.99.5.1"))
	b := newTestEndpoint(t, netip.MustParseAddr("10.99.5.2"))
	tr := esp.AESGCM128
	k := make([]byte, tr.KeyLen())
	var mu sync.Mutex
	var events []esp.Event
	a.route(func(c *testControl) {
		c.saEvent = func(_ *SAPair, ev esp.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }
	})
	_, err := a.eng.Install(PairConfig{Peer: b.nattAddr(), Local: hostSel(a.addr), Remote: hostSel(b.addr),
		Out: esp.Config{Transform: tr, SPI: 0x7001, Key: k, Soft: esp.Lifetime{Packets: 2}, Hard: esp.Lifetime{Packets: 3}},
		In:  esp.Config{Transform: tr, SPI: 0x7002, Key: k}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := a.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(b.addr, 9))
	defer c.Close()
	for i := 0; i < 5; i++ {
		c.Write([]byte("x"))
	}
	waitFor(t, func() bool { return len(a.eng.Pairs()) == 0 }, "pair removed after hard expiry")
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || events[0] != esp.EventSoftExpire || events[1] != esp.EventHardExpire {
		t.Fatalf("events %v", events)
	}
}

func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNetstackIPv6(t *testing.T) {
	a := newTestEndpoint(t, netip.MustParseAddr("fd00:99::1"))
	b := newTestEndpoint(t, netip.MustParseAddr("fd00:99::2"))
	// Outer IPv6 on loopback.
	lo6 := netip.MustParseAddr("::1")
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	_, an := a.eng.Ports()
	_, bn := b.eng.Ports()
	tr := esp.AESGCM128
	k1, k2 := make([]byte, tr.KeyLen()), make([]byte, tr.KeyLen())
	crand.Read(k1)
	crand.Read(k2)
	if _, err := a.eng.Install(PairConfig{Peer: netip.AddrPortFrom(lo6, bn), Local: hostSel(a.addr), Remote: hostSel(b.addr),
		Out: esp.Config{Transform: tr, SPI: 0x8001, Key: k1}, In: esp.Config{Transform: tr, SPI: 0x8002, Key: k2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.eng.Install(PairConfig{Peer: netip.AddrPortFrom(lo6, an), Local: hostSel(b.addr), Remote: hostSel(a.addr),
		Out: esp.Config{Transform: tr, SPI: 0x8002, Key: k2}, In: esp.Config{Transform: tr, SPI: 0x8001, Key: k1}}); err != nil {
		t.Fatal(err)
	}
	transfer(t, a, b, 4<<20)
}
