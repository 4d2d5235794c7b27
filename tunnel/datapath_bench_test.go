package tunnel

import (
	crand "crypto/rand"
	"fmt"

	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/esp"
)

// pumpDevice is a tun.Device for the datapath benchmarks: Read hands out
// copies of its packets, in turn, in batches, as fast as the receiving end takes them
// (at most window packets ahead of what the peers' pumpDevices counted;
// a stall of stallTimeout counts the missing packets as lost and goes on);
// Write counts the packets written. Neither allocates.
type pumpDevice struct {
	pkts   [][]byte
	next   int // the packet Read copies next
	batch  int
	window int64
	peers  []*pumpDevice // whose written counts pace Read

	sent    atomic.Int64 // packets handed out by Read
	lost    atomic.Int64 // packets given up on after a stall
	written atomic.Int64 // packets written
	octets  atomic.Int64 // octets written
	room    atomic.Int64 // the least room behind offset of a buffer in the last Write
	seen    func([]byte) // if set, Write shows it each packet
	wake    chan struct{}
	start   chan struct{} // closed when Read may hand out packets
	stall   *time.Timer
	stop    chan struct{}
	events  chan tun.Event
	closed  atomic.Bool
}

const stallTimeout = 50 * time.Millisecond

func newPumpDevice(pkts [][]byte, batch int, window int64) *pumpDevice {
	d := &pumpDevice{pkts: pkts, batch: batch, window: window, wake: make(chan struct{}, 1), start: make(chan struct{}),
		stop: make(chan struct{}), events: make(chan tun.Event), stall: time.NewTimer(time.Hour)}
	d.stall.Stop()
	return d
}

func (d *pumpDevice) File() *os.File           { return nil }
func (d *pumpDevice) MTU() (int, error)        { return 1500, nil }
func (d *pumpDevice) Name() (string, error)    { return "pump", nil }
func (d *pumpDevice) Events() <-chan tun.Event { return d.events }
func (d *pumpDevice) BatchSize() int           { return d.batch }

func (d *pumpDevice) Close() error {
	if d.closed.CompareAndSwap(false, true) {
		close(d.stop)
	}
	return nil
}

func (d *pumpDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.pkts == nil {
		<-d.stop
		return 0, os.ErrClosed
	}
	select {
	case <-d.start:
	case <-d.stop:
		return 0, os.ErrClosed
	}
	for {
		ahead := d.sent.Load() - d.lost.Load()
		for _, p := range d.peers {
			ahead -= p.written.Load()
		}
		if ahead+int64(d.batch) <= d.window {
			break
		}
		d.stall.Reset(stallTimeout)
		select {
		case <-d.stop:
			return 0, os.ErrClosed
		case <-d.peers[0].wake:
			d.stall.Stop()
		case <-d.stall.C:
			d.lost.Add(ahead) // lost on the way (a full socket buffer)
		}
	}
	n := min(d.batch, len(bufs))
	for i := range n {
		sizes[i] = copy(bufs[i][offset:], d.pkts[d.next])
		d.next = (d.next + 1) % len(d.pkts)
	}
	d.sent.Add(int64(n))
	return n, nil
}

func (d *pumpDevice) Write(bufs [][]byte, offset int) (int, error) {
	var octets int
	room := int64(maxPacket)
	for _, b := range bufs {
		if d.seen != nil {
			d.seen(b[offset:])
		}
		octets += len(b) - offset
		room = min(room, int64(cap(b)-offset))
	}
	d.room.Store(room)
	d.octets.Add(int64(octets))
	d.written.Add(int64(len(bufs)))
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return len(bufs), nil
}

// pumpPair is two engines on pumpDevices joined by SA pairs of one
// transform over loopback UDP: src's device sends packets of size octets
// to dst, whose device counts them.
type pumpPair struct {
	src, dst       *Engine
	srcDev, dstDev *pumpDevice
}

func newPumpPair(tb testing.TB, tr esp.Transform, size, batch int, window int64) *pumpPair {
	tb.Helper()
	addrA, addrB := netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("10.97.0.2")
	pkt := scalePacket(addrA, addrB, size)
	srcDev, dstDev := newPumpDevice([][]byte{pkt}, batch, window), newPumpDevice(nil, batch, window)
	srcDev.peers = []*pumpDevice{dstDev}
	a, err := New(Config{Device: srcDev})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	b, err := New(Config{Device: dstDev})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	lo := netip.MustParseAddr("127.0.0.1")
	_, nattA := a.Ports()
	_, nattB := b.Ports()
	key := make([]byte, tr.KeyLen())
	crand.Read(key)
	const spi = 0x3003
	if _, err := b.Install(PairConfig{Peer: netip.AddrPortFrom(lo, nattA), Local: hostSel(addrB), Remote: hostSel(addrA),
		Out: esp.Config{Transform: tr, SPI: spi + 1, Key: key, ESN: true}, In: esp.Config{Transform: tr, SPI: spi, Key: key, ESN: true}}); err != nil {
		tb.Fatal(err)
	}
	if _, err := a.Install(PairConfig{Peer: netip.AddrPortFrom(lo, nattB), Local: hostSel(addrA), Remote: hostSel(addrB),
		Out: esp.Config{Transform: tr, SPI: spi, Key: key, ESN: true}, In: esp.Config{Transform: tr, SPI: spi + 1, Key: key, ESN: true}}); err != nil {
		tb.Fatal(err)
	}
	close(srcDev.start)
	return &pumpPair{src: a, dst: b, srcDev: srcDev, dstDev: dstDev}
}

// waitWritten waits until the destination's device has counted n packets.
func (p *pumpPair) waitWritten(tb testing.TB, n int64) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for p.dstDev.written.Load() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d packets arrived (stats %+v, %+v)", p.dstDev.written.Load(), n, p.src.Stats(), p.dst.Stats())
		}
		time.Sleep(time.Millisecond) // allocates nothing, unlike time.After
	}
}

// BenchmarkDatapath measures one SA's throughput through two engines in
// this process: packets read in batches from the source's device, looked
// up, sealed and sent over loopback UDP; received, looked up by SPI,
// opened, checked and written to the destination's device (which only
// counts them). An op is one packet delivered; allocs/op are the whole
// process's. Run with -cpu 1,2,4 to see how the path scales with cores.
func BenchmarkDatapath(b *testing.B) {
	for _, tr := range []esp.Transform{esp.AESGCM128, esp.AESGCM256, esp.ChaCha20Poly1305} {
		b.Run(tr.String(), func(b *testing.B) { benchDatapath(b, tr) })
	}
}

// BenchmarkDatapathHelpers is BenchmarkDatapath with the crypto workers'
// helpers (GOMAXPROCS-1 per routine) taking part and without, in turns.
func BenchmarkDatapathHelpers(b *testing.B) {
	for _, tr := range []esp.Transform{esp.AESGCM256, esp.ChaCha20Poly1305} {
		for _, help := range []bool{false, true} {
			b.Run(fmt.Sprintf("%v/help=%v", tr, help), func(b *testing.B) {
				var s spareCores = never{}
				if help {
					s = always{}
				}
				withSpare(b, s, runtime.GOMAXPROCS(0), false)
				benchDatapath(b, tr)
			})
		}
	}
}

func benchDatapath(b *testing.B, tr esp.Transform) {
	const size = 1400
	p := newPumpPair(b, tr, size, 64, 1024)
	p.waitWritten(b, 4096) // warm up: buffers, the first allocations of each path
	w0, lost0 := p.dstDev.written.Load(), p.srcDev.lost.Load()
	cpu0 := cpuTime()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	p.waitWritten(b, w0+int64(b.N))
	b.StopTimer()
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)*size/1e6/cpu.Seconds(), "MB/cpu-s")
	}
	b.ReportMetric(float64(p.srcDev.lost.Load()-lost0)/float64(b.N), "lost/op")
}

// TestDatapathAllocatesNothing sends packets through both engines' packet
// paths (device batch read, route lookup, Seal, batched UDP send; UDP
// receive, SPI lookup, Open, selector check, device write) with every
// transform and checks that the steady state allocates nothing per packet.
// TestInboundRoomToCoalesce: a device that coalesces a TCP stream's
// segments in place (Linux TUN GRO) gets buffers with room for a whole
// super-packet once ESP flows; with a receive buffer's 16 KiB each write
// carried a third as much, and at MTU 9000 nothing was coalesced at all.
func TestInboundRoomToCoalesce(t *testing.T) {
	p := newPumpPair(t, esp.AESGCM256, 1400, 64, 256)
	if !coalescesInPlace(p.dstDev) {
		t.Fatal("a batching device that is not the netstack's: coalesces in place")
	}
	p.waitWritten(t, 2048)
	w := p.dstDev.written.Load()
	p.waitWritten(t, w+256) // written after the first ESP batch
	if room := p.dstDev.room.Load(); room < maxPacket {
		t.Errorf("receive buffers have %d octets of room; want a super-packet's %d", room, maxPacket)
	}
	if coalescesInPlace(&netstackDevice{}) {
		t.Error("the netstack device copies: its buffers need no room")
	}
}

func TestDatapathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tr := range esp.Transforms {
		t.Run(tr.String(), func(t *testing.T) {
			p := newPumpPair(t, tr, 1400, 64, 256)
			p.waitWritten(t, 4096)
			// Collections (the control plane causes them) do not make
			// the path allocate again: a sync.Pool drops what it holds
			// on the second.
			runtime.GC()
			runtime.GC()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			w0 := p.dstDev.written.Load()
			const packets = 50000
			p.waitWritten(t, w0+packets)
			runtime.ReadMemStats(&m1)
			n := p.dstDev.written.Load() - w0
			allocs := m1.Mallocs - m0.Mallocs
			t.Logf("%d allocations for %d packets", allocs, n)
			// The odd allocation of the runtime or of a timer tick
			// (once a second) is not per packet.
			if allocs > uint64(n)/1000 {
				t.Errorf("%d allocations for %d packets: %.3f per packet", allocs, n, float64(allocs)/float64(n))
			}
			if s := p.dst.Stats(); s.DecryptErrors+s.SelectorDrops+s.Malformed+s.UnknownSPI != 0 {
				t.Errorf("receiver dropped packets: %+v", s)
			}
			if s := p.src.Stats(); s.SealErrors+s.SendErrors+s.NoSA != 0 {
				t.Errorf("sender dropped packets: %+v", s)
			}
		})
	}
}
