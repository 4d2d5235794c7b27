package tunnel

import (
	"context"
	crand "crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
)

// BenchmarkNetstackTCP measures one TCP stream from one netstack node to
// another in this process, through statically keyed ESP (AES-GCM-128, as
// the lab's TUN figure) over loopback UDP: the userspace mode's
// throughput. Besides MB/s it reports MB per CPU-second of the whole
// process (user + system), which depends less on what else runs on the
// machine, and the allocations of the whole process per 64 KiB written.
func BenchmarkNetstackTCP(b *testing.B) {
	const chunk = 64 << 10
	a, bb := netstackNodePair(b, esp.AESGCM128)
	ln, err := bb.Listen("tcp", "10.95.0.2:5201")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		buf := make([]byte, chunk)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				got <- n
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "10.95.0.2:5201")
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, chunk)
	crand.Read(buf)
	// Warm up: window growth, buffers, the first allocations of each path.
	for range 256 {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(chunk)
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	var n int64
	select {
	case n = <-got:
	case <-time.After(time.Minute):
		b.Fatal("the receiver did not see the end of the stream")
	}
	b.StopTimer()
	if want := int64(b.N+256) * chunk; n != want {
		b.Fatalf("received %d octets, sent %d", n, want)
	}
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)*chunk/1e6/cpu.Seconds(), "MB/cpu-s")
	}
}

// netstackNodePair starts two netstack nodes, 10.95.0.1 and 10.95.0.2,
// joined by statically keyed SA pairs of transform tr over loopback UDP.
func netstackNodePair(t testing.TB, tr esp.Transform) (a, b *Node) {
	t.Helper()
	addrA, addrB := netip.MustParseAddr("10.95.0.1"), netip.MustParseAddr("10.95.0.2")
	node := func(addr netip.Addr) *Node {
		n, err := NewNode(NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addr, 32)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	a, b = node(addrA), node(addrB)
	lo := netip.MustParseAddr("127.0.0.1")
	_, nattA := a.Engine().Ports()
	_, nattB := b.Engine().Ports()
	k1, k2 := make([]byte, tr.KeyLen()), make([]byte, tr.KeyLen())
	crand.Read(k1)
	crand.Read(k2)
	const spi1, spi2 = 0x1001, 0x2002
	if _, err := b.Engine().Install(PairConfig{Peer: netip.AddrPortFrom(lo, nattA), Local: hostSel(addrB), Remote: hostSel(addrA),
		Out: esp.Config{Transform: tr, SPI: spi2, Key: k2, ESN: true}, In: esp.Config{Transform: tr, SPI: spi1, Key: k1, ESN: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Engine().Install(PairConfig{Peer: netip.AddrPortFrom(lo, nattB), Local: hostSel(addrA), Remote: hostSel(addrB),
		Out: esp.Config{Transform: tr, SPI: spi1, Key: k1, ESN: true}, In: esp.Config{Transform: tr, SPI: spi2, Key: k2, ESN: true}}); err != nil {
		t.Fatal(err)
	}
	return a, b
}
