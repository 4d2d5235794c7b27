package tunnel

import (
	crand "crypto/rand"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/oevpn/oevpn/esp"
)

// TestCryptWorkersEachOnce runs batches of every size through the workers
// with more helpers than cores and checks that each packet's work is done
// exactly once, before run returns.
func TestCryptWorkersEachOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	const maxBatch = 200
	var counts [maxBatch]atomic.Int32
	w := newCryptWorkers(func(lo, hi int) {
		for i := lo; i < hi; i++ {
			counts[i].Add(1)
		}
	})
	defer w.stop()
	if w.helpers != 3 {
		t.Fatalf("%d helpers with GOMAXPROCS 4", w.helpers)
	}
	for round := range 20000 {
		n := rand.IntN(maxBatch + 1)
		if round < maxBatch {
			n = round
		}
		w.run(n)
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

// BenchmarkCryptWorkers seals batches of 64 packets of 1400 octets with
// one AES-GCM-256 SA through the workers, as the outbound routine does:
// with -cpu 1,2,4 it shows how one SA's crypto scales with idle cores.
func BenchmarkCryptWorkers(b *testing.B) {
	const n, size = 64, 1400
	tr := esp.AESGCM256
	key := make([]byte, tr.KeyLen())
	crand.Read(key)
	sa, err := esp.NewSA(esp.Config{Transform: tr, SPI: 0x1000, Key: key, ESN: true})
	if err != nil {
		b.Fatal(err)
	}
	bufs := newOutboundBuffers(n, size)
	frames := make([]esp.Outbound, n)
	w := newCryptWorkers(func(lo, hi int) {
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
		for j := range frames {
			if err := sa.Frame(&frames[j], bufs[j], esp.Headroom, size, 4); err != nil {
				b.Fatal(err)
			}
		}
		w.run(n)
	}
}
