package tunnel

import (
	crand "crypto/rand"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/esp"
)

// TestInboundSelectorsPerPacket performs the attack on the inbound
// selector check that the datapath does once per run of one flow: a peer
// sends, on its SA, packets it may send interleaved with packets from an
// address outside the SA's remote selectors, back to back so that they
// share received batches. Each spoofed packet must be dropped and each
// allowed one delivered.
func TestInboundSelectorsPerPacket(t *testing.T) {
	addrA, addrB, spoofed := netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("10.97.0.2"), netip.MustParseAddr("10.97.0.3")
	dev := newPumpDevice(nil, 64, 0)
	snd, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	b, out, _ := peeredEngine(t, dev, esp.AESGCM256, 0x4004, addrB, addrA, snd.LocalAddr().(*net.UDPAddr).AddrPort())
	_, natt := b.Ports()
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), natt)
	// Bursts of 50, each waited for: a socket buffer that overflows
	// would lose some.
	const pairs, burst = 500, 50
	delivered := func() uint64 { return b.Stats().SelectorDrops + uint64(dev.written.Load()) }
	for i := range 2 * pairs {
		src := addrA
		if i%2 == 1 {
			src = spoofed
		}
		if _, err := snd.WriteToUDPAddrPort(sealed(t, out, scalePacket(src, addrB, 200)), to); err != nil {
			t.Fatal(err)
		}
		if (i+1)%burst == 0 {
			deadline := time.Now().Add(10 * time.Second)
			for delivered() < uint64(i+1) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	if s := b.Stats(); s.SelectorDrops != pairs || dev.written.Load() != pairs {
		t.Fatalf("%d packets delivered and %d dropped by the selectors, want %d each (stats %+v)", dev.written.Load(), s.SelectorDrops, pairs, s)
	}
}

// peeredEngine starts an engine on dev with one SA pair of transform tr,
// from local to remote, whose peer is at peer, and returns it with the
// peer's side of the pair: toEngine seals what the peer sends (the
// engine's inbound SPI, spi), fromEngine opens what the engine sends
// (spi+1).
func peeredEngine(t *testing.T, dev tun.Device, tr esp.Transform, spi uint32, local, remote netip.Addr, peer netip.AddrPort) (e *Engine, toEngine, fromEngine *esp.SA) {
	t.Helper()
	e, err := New(Config{Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	key := make([]byte, tr.KeyLen())
	crand.Read(key)
	cfg := func(spi uint32) esp.Config { return esp.Config{Transform: tr, SPI: spi, Key: key} }
	if _, err := e.Install(PairConfig{Peer: peer, Local: hostSel(local), Remote: hostSel(remote), Out: cfg(spi + 1), In: cfg(spi)}); err != nil {
		t.Fatal(err)
	}
	if toEngine, err = esp.NewSA(cfg(spi)); err != nil {
		t.Fatal(err)
	}
	if fromEngine, err = esp.NewSA(cfg(spi + 1)); err != nil {
		t.Fatal(err)
	}
	return e, toEngine, fromEngine
}

// sealed returns the IPv4 packet inner sealed by sa, in a buffer of its
// own.
func sealed(t *testing.T, sa *esp.SA, inner []byte) []byte {
	t.Helper()
	buf := make([]byte, esp.Headroom+len(inner)+esp.Tailroom)
	copy(buf[esp.Headroom:], inner)
	pkt, err := sa.Seal(buf, esp.Headroom, len(inner), 4)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// TestOutboundLookupPerFlow sends batches whose packets go in turn to two
// peers, each with its own SA pair: the lookup the datapath does once per
// run of one flow must still send each packet to its own peer.
func TestOutboundLookupPerFlow(t *testing.T) {
	addrA, addrB, addrC := netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("10.97.0.2"), netip.MustParseAddr("10.97.0.4")
	pkts := [][]byte{scalePacket(addrA, addrB, 300), scalePacket(addrA, addrB, 300), scalePacket(addrA, addrC, 300)}
	devB, devC := newPumpDevice(nil, 64, 0), newPumpDevice(nil, 64, 0)
	srcDev := newPumpDevice(pkts, 64, 256)
	srcDev.peers = []*pumpDevice{devB, devC}
	engine := func(dev *pumpDevice) *Engine {
		e, err := New(Config{Device: dev})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	a, b, c := engine(srcDev), engine(devB), engine(devC)
	lo := netip.MustParseAddr("127.0.0.1")
	tr := esp.AESGCM128
	for i, peer := range []struct {
		e    *Engine
		addr netip.Addr
	}{{b, addrB}, {c, addrC}} {
		key := make([]byte, tr.KeyLen())
		crand.Read(key)
		spi := uint32(0x5000 + 2*i)
		_, nattA := a.Ports()
		_, nattP := peer.e.Ports()
		if _, err := peer.e.Install(PairConfig{Peer: netip.AddrPortFrom(lo, nattA), Local: hostSel(peer.addr), Remote: hostSel(addrA),
			Out: esp.Config{Transform: tr, SPI: spi + 1, Key: key}, In: esp.Config{Transform: tr, SPI: spi, Key: key}}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Install(PairConfig{Peer: netip.AddrPortFrom(lo, nattP), Local: hostSel(addrA), Remote: hostSel(peer.addr),
			Out: esp.Config{Transform: tr, SPI: spi, Key: key}, In: esp.Config{Transform: tr, SPI: spi + 1, Key: key}}); err != nil {
			t.Fatal(err)
		}
	}
	close(srcDev.start)
	deadline := time.Now().Add(10 * time.Second)
	for devB.written.Load() < 2000 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	srcDev.Close()
	time.Sleep(50 * time.Millisecond)
	nb, nc := devB.written.Load(), devC.written.Load()
	// Two to one, less what loopback may lose under load.
	if nb < 2000 || nc < nb/4 || nc > nb {
		t.Errorf("b got %d packets and c %d: want 2 to 1", nb, nc)
	}
	for _, e := range []*Engine{b, c} {
		if s := e.Stats(); s.SelectorDrops+s.DecryptErrors+s.UnknownSPI != 0 {
			t.Errorf("a packet went to the wrong peer: %+v", s)
		}
	}
}
