package tunnel

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/oevpn/oevpn/internal/cpuidle"
)

// minShare is the fewest packets a crypto worker claims at a time: a
// batch of no more (interactive traffic) stays with its routine.
const minShare = 16

// helperSpin is how long a helper that just did shares watches for its
// routine's next batch before it parks: under load a batch follows within
// tens of microseconds, and waking a parked goroutine on another core
// takes about as long as sealing a batch. (Tests that need helpers to
// take part in every batch make it long.)
var helperSpin = 50 * time.Microsecond

const (
	// finishSpin bounds the routine's watch for a helper's last share
	// (a few microseconds) before it parks.
	finishSpin = 1 << 14
	// busyOn and busyOff are the routine's busy shares (of 1024: time
	// not spent waiting for its next batch) at which helpers start and
	// stop taking part. A routine with time to spare is not what limits
	// the traffic, and helpers that watch for its batches would only
	// burn a core: at 1 Gbit/s offered, CPU per GB rose by a fifth.
	busyOn, busyOff = 820, 512
)

// cryptWorkers seal or open the packets of one batch on several cores, as
// wireguard-go's per-CPU workers do, while the order stays the batch's:
// the routine that owns the batch numbers (or replay-checks) its packets
// in order, runs the crypto with the help of spare cores, and then sends
// (or accepts) the packets in order. So an SA's sequence numbers go on the
// wire in the order they were taken and its replay window keeps one
// writer.
//
// The batch is cut into one share for the owner and one for each helper
// (at least minShare packets each), which they claim with an atomic
// counter: few large shares keep a packet's cache lines on one core and
// the claims few. The owner claims shares until none is left and then
// waits only for a share a helper claimed and is still sealing, so a
// helper that comes late costs nothing but its wake-up. A helper that did
// a batch watches for the next one for helperSpin rather than park, as
// the next one is likely to come sooner than a wake-up would reach it.
// Helpers take part only while the routine is busy (it, not what feeds
// it, limits the traffic) and cpuidle says a core is spare: when the
// applications and the kernel keep every core busy, hand-offs cost more
// than they give, and the owner does it all. Nothing allocates and no
// lock is taken.
type cryptWorkers struct {
	work    func(lo, hi int) // the crypto of packets lo to hi-1
	helpers int
	spare   spareCores
	release func()         // of spare
	helped  *atomic.Uint64 // packets done by helpers
	spin    time.Duration  // helperSpin when started
	busyAll bool           // testBusy when started
	wake    chan struct{}
	done    chan struct{} // a helper finished the batch's last share

	// state is the batch: its number (bits 32–63), its packets (16–31)
	// and its next unclaimed share (0–15), in one word so that a claim
	// sees the batch it claims in.
	state     atomic.Uint64
	completed atomic.Uint32 // shares done in the batch
	parked    atomic.Int32  // helpers waiting to be woken
	stopped   atomic.Bool

	// The routine's own: its busy share (an average over the last
	// batches, of 1024), when it last started waiting for a batch and
	// when the last one came, and whether helpers take part.
	busy            int
	waited, arrived time.Time
	helping         bool
}

// spareCores says whether a core is spare: a cpuidle.Watcher, or the
// tests' own.
type spareCores interface{ Spare() bool }

// always is a spareCores that says yes.
type always struct{}

func (always) Spare() bool { return true }

// cryptHelpers is how many helpers a routine starts: one per further core
// Go runs on, as far as the machine has the cores (spinning helpers
// beyond them only take turns).
func cryptHelpers() int { return min(runtime.GOMAXPROCS(0), runtime.NumCPU()) - 1 }

// newCryptWorkers starts helpers that run work while cpuidle says a core
// is spare; stop ends them.
func newCryptWorkers(helpers int, helped *atomic.Uint64, work func(lo, hi int)) *cryptWorkers {
	if helpers <= 0 {
		return startCryptWorkers(0, always{}, helped, work)
	}
	if testSpare != nil {
		return startCryptWorkers(helpers, testSpare, helped, work)
	}
	spare := cpuidle.Acquire()
	w := startCryptWorkers(helpers, spare, helped, work)
	w.release = spare.Release
	return w
}

// testSpare, when set, stands for cpuidle in the workers tests start;
// testBusy makes every routine count as busy.
var (
	testSpare spareCores
	testBusy  bool
)

// startCryptWorkers starts helpers that run work while spare says so.
func startCryptWorkers(helpers int, spare spareCores, helped *atomic.Uint64, work func(lo, hi int)) *cryptWorkers {
	w := &cryptWorkers{
		work: work, helpers: helpers, spare: spare, helped: helped, spin: helperSpin, busyAll: testBusy,
		wake: make(chan struct{}, helpers), done: make(chan struct{}, 1),
	}
	for range helpers {
		go w.help()
	}
	return w
}

// help is a helper: woken, it does shares of batches for as long as
// batches keep coming within helperSpin, whether or not it got a share
// of the last one (a helper that parked whenever it came too late would
// come too late again), then parks again.
func (w *cryptWorkers) help() {
	for {
		w.parked.Add(1)
		_, ok := <-w.wake
		w.parked.Add(-1)
		if !ok {
			return
		}
		for {
			last, did := w.claim()
			if did > 0 {
				w.helped.Add(uint64(did))
			}
			if last {
				w.done <- struct{}{}
			}
			if !w.next() {
				break
			}
		}
	}
}

// next watches for a batch with shares left for up to helperSpin, while
// a core is spare, and reports whether one came.
func (w *cryptWorkers) next() bool {
	var deadline time.Time
	for i := 0; ; i++ {
		s := w.state.Load()
		if n, k := uint32(s>>16)&0xffff, uint32(s)&0xffff; k < w.shares(n) {
			return true
		}
		if i%1024 == 0 {
			if w.stopped.Load() || !w.spare.Spare() {
				return false
			}
			now := time.Now()
			if deadline.IsZero() {
				deadline = now.Add(w.spin)
			} else if now.After(deadline) {
				return false
			}
			runtime.Gosched() // the P's other goroutines first
		}
	}
}

// shares is how many shares a batch of n packets is cut into: one for
// the routine and one for each helper, as far as each gets minShare
// packets. Few large shares keep each packet's cache lines on one core
// and the claims few: measured on 2 cores, 2 shares of 32 packets got
// 1.29 times one core's throughput and 8 shares of 8 packets 1.03.
func (w *cryptWorkers) shares(n uint32) uint32 {
	return max(min(uint32(w.helpers)+1, n/minShare), 1)
}

// claim does shares of the current batch until none is left. It reports
// whether it completed the batch's last share and how many packets it
// did.
func (w *cryptWorkers) claim() (last bool, did int) {
	for {
		s := w.state.Load()
		n, k := uint32(s>>16)&0xffff, uint32(s)&0xffff
		shares := w.shares(n)
		if k >= shares {
			return last, did
		}
		if !w.state.CompareAndSwap(s, s+1) {
			continue
		}
		size := (n + shares - 1) / shares
		lo, hi := k*size, min((k+1)*size, n)
		w.work(int(lo), int(hi))
		did += int(hi - lo)
		if w.completed.Add(1) == shares {
			last = true
		}
	}
}

// waiting marks the routine starting to wait for its next batch.
func (w *cryptWorkers) waiting() {
	if w.helpers > 0 {
		w.waited = time.Now()
	}
}

// batch marks the routine's next batch arriving: the time since the last
// one that it did not wait is its busy share.
func (w *cryptWorkers) batch() {
	if w.helpers == 0 {
		return
	}
	now := time.Now()
	if cycle := now.Sub(w.arrived); cycle > 0 && !w.arrived.IsZero() {
		share := int(1024 * (cycle - min(now.Sub(w.waited), cycle)) / cycle)
		w.busy += (share - w.busy) / 8
	}
	w.arrived = now
	switch {
	case w.busyAll:
		w.helping = true
	case !w.helping && w.busy >= busyOn:
		w.helping = true
	case w.helping && w.busy < busyOff:
		w.helping = false
	}
}

// run does the crypto of packets 0 to n-1 (at most 65535) and returns
// when it is done. Helpers take part only when more than minShare of them
// (costly) use a transform worth sharing (esp.Transform.Wide says which
// is not).
func (w *cryptWorkers) run(n, costly int) {
	if w.helpers == 0 || costly <= minShare || !w.helping || !w.spare.Spare() {
		w.work(0, n)
		return
	}
	// Every share of the last batch is done: no helper counts any more.
	w.completed.Store(0)
	w.state.Store((w.state.Load()>>32+1)<<32 | uint64(n)<<16)
	shares := w.shares(uint32(n))
	for range min(int(w.parked.Load()), int(shares)-1) {
		select {
		case w.wake <- struct{}{}:
		default: // awake already
		}
	}
	if last, _ := w.claim(); !last {
		// A helper is sealing a share: watch for it rather than park,
		// which costs a wake-up of its own.
		for i := 0; i < finishSpin && w.completed.Load() != shares; i++ {
		}
		<-w.done // the helper completes the last share
	}
}

// stop ends the helpers.
func (w *cryptWorkers) stop() {
	w.stopped.Store(true)
	close(w.wake)
	if w.release != nil {
		w.release()
	}
}
