package tunnel

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	conn "github.com/oevpn/oevpn/internal/wgconn"
)

// never is a spareCores that says no.
type never struct{}

func (never) Spare() bool { return false }

// flipping is a spareCores that a test turns on and off.
type flipping struct{ on atomic.Bool }

func (f *flipping) Spare() bool { return f.on.Load() }

// withSpare makes the workers the engines start use s instead of cpuidle
// and count their routines as busy, with GOMAXPROCS procs, for the rest
// of the test. With spin, helpers watch for batches until they stop,
// rather than for helperSpin, so that they take part in batches that come
// one by one.
func withSpare(t testing.TB, s spareCores, procs int, spin bool) {
	old, oldSpin := runtime.GOMAXPROCS(procs), helperSpin
	testSpare, testBusy = s, true
	if spin {
		helperSpin = time.Hour
	}
	t.Cleanup(func() {
		testSpare, testBusy, helperSpin = nil, false, oldSpin
		runtime.GOMAXPROCS(old)
	})
}

// TestCryptWorkersEachOnce runs batches of every size through the workers
// with more helpers than cores, while help is turned on and off at random,
// and checks that each packet's work is done exactly once, before run
// returns.
func TestCryptWorkersEachOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	const maxBatch = 200
	var counts [maxBatch]atomic.Int32
	spare := &flipping{}
	var helped atomic.Uint64
	w := startCryptWorkers(3, spare, &helped, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			counts[i].Add(1)
		}
	})
	defer w.stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(rand.IntN(200)) * time.Microsecond):
				spare.on.Store(!spare.on.Load())
			}
		}
	}()
	for round := range 20000 {
		n := rand.IntN(maxBatch + 1)
		if round < maxBatch {
			n = round
		}
		w.waiting()
		w.batch()
		w.run(n, n)
		for i := range maxBatch {
			want := int32(0)
			if i < n {
				want = 1
			}
			if got := counts[i].Swap(0); got != want {
				t.Fatalf("batch of %d: packet %d done %d times", n, i, got)
			}
		}
	}
}

// TestCryptWorkersHelp checks who does the work: helpers share a busy
// routine's batches (shares run at the same time) while a core is spare;
// a routine that waits most of the time for its batches, one with no
// core to spare, or one whose batch is mostly packets of a wide-vector
// transform (too fast to be worth moving) does every batch alone, in one
// piece.
func TestCryptWorkersHelp(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	for _, tc := range []struct {
		name   string
		spare  spareCores
		wait   time.Duration // for each batch
		costly int           // packets of 64 worth sharing
		help   bool
	}{
		{"busy, a core spare", always{}, 0, 64, true},
		{"busy, no core spare", never{}, 0, 64, false},
		{"waiting, a core spare", always{}, 2 * time.Millisecond, 64, false},
		{"busy, a core spare, wide-vector crypto", always{}, 0, minShare, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inFlight, most, calls atomic.Int32
			var helped atomic.Uint64
			const n, batches = 64, 300
			w := startCryptWorkers(1, tc.spare, &helped, func(lo, hi int) {
				calls.Add(1)
				if f := inFlight.Add(1); f > most.Load() {
					most.Store(f)
				}
				for t0 := time.Now(); time.Since(t0) < 20*time.Microsecond; {
				}
				inFlight.Add(-1)
			})
			for range batches {
				w.waiting()
				time.Sleep(tc.wait)
				w.batch()
				w.run(n, tc.costly)
			}
			w.stop()
			switch {
			case tc.help && (helped.Load() == 0 || most.Load() < 2):
				t.Errorf("%d packets helped, at most %d shares at once", helped.Load(), most.Load())
			case !tc.help && (helped.Load() != 0 || calls.Load() != batches):
				t.Errorf("%d packets helped, %d calls for %d batches", helped.Load(), calls.Load(), batches)
			}
		})
	}
}

// numbered returns an IPv4 UDP packet from src to dst whose payload
// starts with i.
func numbered(src, dst netip.Addr, size int, i uint32) []byte {
	p := scalePacket(src, dst, size)
	binary.BigEndian.PutUint32(p[28:], i)
	return p
}

// TestParallelSealWireOrder sends batches through an engine whose helpers
// seal with it, and reads the ESP it sends: the sequence numbers go on
// the wire in order, without a gap, and each carries the packet the
// device gave in that place. AES-GCM on wide vectors is sealed by the
// routine alone.
func TestParallelSealWireOrder(t *testing.T) {
	for _, tr := range []esp.Transform{esp.ChaCha20Poly1305, esp.AESGCM256} {
		t.Run(tr.String(), func(t *testing.T) { testParallelSealWireOrder(t, tr) })
	}
}

func testParallelSealWireOrder(t *testing.T, tr esp.Transform) {
	withSpare(t, always{}, 4, true)
	addrA, addrB := netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("10.97.0.2")
	const kinds, size = 1000, 300
	pkts := make([][]byte, kinds)
	for i := range pkts {
		pkts[i] = numbered(addrA, addrB, size, uint32(i))
	}
	// The sink stands for the peer's device: the test counts what it
	// reads into it, which paces the source.
	sink := newPumpDevice(nil, 64, 0)
	src := newPumpDevice(pkts, 64, 128)
	src.peers = []*pumpDevice{sink}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	a, _, in := peeredEngine(t, src, tr, 0x6006, addrA, addrB, peer.LocalAddr().(*net.UDPAddr).AddrPort())
	close(src.start)
	buf := make([]byte, esp.Headroom+maxDatagram)
	const total = 20000
	for i := range total {
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := peer.Read(buf[esp.Headroom:])
		if err != nil {
			t.Fatalf("datagram %d: %v (stats %+v)", i, err, a.Stats())
		}
		if seq := esp.Header(buf[esp.Headroom:]).Seq(); seq != uint32(i+1) {
			t.Fatalf("datagram %d has sequence number %d, want %d", i, seq, i+1)
		}
		inner, _, err := in.Open(buf, esp.Headroom, n)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(inner[28:]); got != uint32(i%kinds) {
			t.Fatalf("datagram %d carries packet %d, want %d", i, got, i%kinds)
		}
		sink.written.Add(1)
		select {
		case sink.wake <- struct{}{}:
		default:
		}
	}
	switch s := a.Stats(); {
	case !tr.Wide() && s.Helped == 0:
		t.Errorf("no packet sealed on a helper core: %+v", s)
	case tr.Wide() && s.Helped != 0:
		t.Errorf("%d packets of a wide-vector transform sealed on a helper core", s.Helped)
	}
}

// TestParallelOpenOrder sends an engine whose helpers open with it bursts
// of ESP in which a packet comes twice, back to back, so that both copies
// share a batch and are decrypted at once: the device gets every packet
// once, in the order sent, and the copy is dropped as a replay. AES-GCM on
// wide vectors is opened by the routine alone.
func TestParallelOpenOrder(t *testing.T) {
	for _, tr := range []esp.Transform{esp.ChaCha20Poly1305, esp.AESGCM256} {
		t.Run(tr.String(), func(t *testing.T) { testParallelOpenOrder(t, tr) })
	}
}

func testParallelOpenOrder(t *testing.T, tr esp.Transform) {
	withSpare(t, always{}, 4, true)
	addrA, addrB := netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("10.97.0.2")
	dev := newPumpDevice(nil, 64, 0)
	var order []uint32
	var bad atomic.Int32
	dev.seen = func(pkt []byte) {
		i := binary.BigEndian.Uint32(pkt[28:])
		if len(order) > 0 && i != order[len(order)-1]+1 {
			bad.Add(1)
		}
		order = append(order, i)
	}
	b, out, _ := peeredEngine(t, dev, tr, 0x7007, addrB, addrA, netip.MustParseAddrPort("127.0.0.1:9"))
	// The peer sends as the datapath does (sendmmsg, UDP GSO), so that
	// whole bursts arrive in one received batch.
	snd := conn.NewStdNetBind()
	if _, _, err := snd.Open(0); err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	_, natt := b.Ports()
	to, err := snd.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), natt).String())
	if err != nil {
		t.Fatal(err)
	}
	// Bursts of 60 and a copy, each waited for: a socket buffer that
	// overflows would lose some.
	const bursts, burst = 100, 60
	deadline := time.Now().Add(20 * time.Second)
	for k := range bursts {
		var send [][]byte
		for j := range burst {
			pkt := sealed(t, out, numbered(addrA, addrB, 300, uint32(k*burst+j)))
			copies := 1
			if j == burst-1 {
				copies = 2
			}
			for range copies {
				send = append(send, pkt)
			}
		}
		if err := snd.Send(send, to); err != nil {
			t.Fatal(err)
		}
		for (dev.written.Load() < int64((k+1)*burst) || b.Stats().DecryptErrors < uint64(k+1)) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	s := b.Stats()
	if dev.written.Load() != bursts*burst || bad.Load() != 0 || s.DecryptErrors != bursts {
		t.Fatalf("%d packets delivered (%d out of order), %d dropped; want %d, none, %d (stats %+v)",
			dev.written.Load(), bad.Load(), s.DecryptErrors, bursts*burst, bursts, s)
	}
	switch {
	case !tr.Wide() && s.Helped == 0:
		t.Errorf("no packet opened on a helper core: %+v", s)
	case tr.Wide() && s.Helped != 0:
		t.Errorf("%d packets of a wide-vector transform opened on a helper core", s.Helped)
	}
}

// BenchmarkCryptWorkers seals batches of 64 packets of 1400 octets with
// one SA through the workers, as the outbound routine does, with a core
// taken to be spare, at GOMAXPROCS 1, 2 and 4: how one SA's crypto scales
// with idle cores. ChaCha20-Poly1305 is shared; AES-GCM on wide vectors
// (esp.Transform.Wide) stays with its routine.
func BenchmarkCryptWorkers(b *testing.B) {
	for _, tr := range []esp.Transform{esp.AESGCM256, esp.ChaCha20Poly1305} {
		for _, procs := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("%s/gomaxprocs=%d", tr, procs), func(b *testing.B) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				benchCryptWorkers(b, tr)
			})
		}
	}
}

func benchCryptWorkers(b *testing.B, tr esp.Transform) {
	const n, size = 64, 1400
	key := make([]byte, tr.KeyLen())
	crand.Read(key)
	sa, err := esp.NewSA(esp.Config{Transform: tr, SPI: 0x1000, Key: key, ESN: true})
	if err != nil {
		b.Fatal(err)
	}
	bufs := newBuffers(n, size, 0)
	frames := make([]esp.Outbound, n)
	var helped atomic.Uint64
	w := startCryptWorkers(cryptHelpers(), always{}, &helped, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			if _, err := frames[j].Seal(); err != nil {
				panic(err)
			}
		}
	})
	defer w.stop()
	b.SetBytes(n * size)
	b.ReportAllocs()
	for b.Loop() {
		w.waiting() // a routine that never waits: as busy as can be
		w.batch()
		for j := range frames {
			if err := sa.Frame(&frames[j], bufs[j], esp.Headroom, size, 4); err != nil {
				b.Fatal(err)
			}
		}
		costly := n
		if tr.Wide() {
			costly = 0
		}
		w.run(n, costly)
	}
	b.ReportMetric(float64(helped.Load())/float64(b.N*n), "helped/packet")
}
