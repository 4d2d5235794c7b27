package tunnel

import (
	"runtime"
	"sync/atomic"
)

// share is how many packets of a batch a crypto worker claims at a time.
const share = 8

// cryptWorkers seal or open the packets of one batch on several cores, as
// wireguard-go's per-CPU workers do, while the order stays the batch's:
// the routine that owns the batch numbers (or replay-checks) its packets
// in order, runs the crypto with the help of idle cores, and then sends
// (or accepts) the packets in order. So an SA's sequence numbers go on the
// wire in the order they were taken and its replay window keeps one
// writer.
//
// The batch is cut into shares of a few packets, which the owner and its
// helpers (GOMAXPROCS-1 goroutines per routine) claim with an atomic
// counter. The owner wakes the helpers and claims shares itself until none
// is left; it waits only for shares a helper claimed and is still
// sealing. So when no core is idle (a helper is not scheduled before the
// owner is through) the owner does it all, at the cost of a wake-up per
// batch; a batch of one share (interactive traffic) never leaves its
// routine. Nothing allocates and no lock is taken.
type cryptWorkers struct {
	work    func(lo, hi int) // the crypto of packets lo to hi-1
	helpers int
	wake    chan struct{}
	done    chan struct{} // a helper finished the batch's last share

	// state is the batch: its number (bits 32–63), its packets (16–31)
	// and its next unclaimed share (0–15), in one word so that a claim
	// sees the batch it claims in.
	state     atomic.Uint64
	completed atomic.Uint32 // shares done in the batch
}

// cryptHelpers is how many helpers each routine starts (benchmarks
// compare it with none).
var cryptHelpers = func() int { return runtime.GOMAXPROCS(0) - 1 }

// newCryptWorkers starts the helpers that run work; stop ends them.
func newCryptWorkers(work func(lo, hi int)) *cryptWorkers {
	n := max(cryptHelpers(), 0)
	w := &cryptWorkers{work: work, helpers: n, wake: make(chan struct{}, n), done: make(chan struct{}, 1)}
	for range n {
		go func() {
			for range w.wake {
				if w.claim() {
					w.done <- struct{}{}
				}
			}
		}()
	}
	return w
}

// claim does shares of the current batch until none is left and reports
// whether it completed the batch's last one.
func (w *cryptWorkers) claim() (last bool) {
	for {
		s := w.state.Load()
		n, k := uint32(s>>16)&0xffff, uint32(s)&0xffff
		shares := (n + share - 1) / share
		if k >= shares {
			return last
		}
		if !w.state.CompareAndSwap(s, s+1) {
			continue
		}
		lo := k * share
		w.work(int(lo), int(min(lo+share, n)))
		if w.completed.Add(1) == shares {
			last = true
		}
	}
}

// run does the crypto of packets 0 to n-1 (at most 65535) and returns
// when it is done.
func (w *cryptWorkers) run(n int) {
	if w.helpers == 0 || n <= share {
		w.work(0, n)
		return
	}
	// Every share of the last batch is done: no helper counts any more.
	w.completed.Store(0)
	w.state.Store((w.state.Load()>>32+1)<<32 | uint64(n)<<16)
	for range min(w.helpers, (n-1)/share) {
		select {
		case w.wake <- struct{}{}:
		default: // awake already
		}
	}
	if !w.claim() {
		<-w.done // a helper completes the last share
	}
}

// stop ends the helpers.
func (w *cryptWorkers) stop() { close(w.wake) }
