// Package cpuidle tells the datapath whether the machine has a core to
// spare: parallel crypto is worth its hand-offs only when a core would
// otherwise sit idle, and costs throughput when every core is busy (the
// applications, the kernel's network stack and oevpn's own routines share
// them).
//
// A Watcher samples the machine's idle time (Linux: /proc/stat) every
// Window. Help goes on when at least SpareCores were idle over a window,
// and off when less than BusyCores were: the helpers take part of the idle
// time they were given, so help needs nearly a whole idle core to start
// and keeps going while half a core stays idle. A machine that runs the
// applications, the kernel's network stack and oevpn on every core keeps
// help off: there, the idle time that the hand-offs between them leave
// (a third of a core on the 2-core lab) is no core to spare. Where the
// idle time cannot be read, help is on whenever Go runs on more than one
// core.
package cpuidle

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// Window is how long one measurement of the idle time lasts.
	Window = 250 * time.Millisecond
	// SpareCores is how many cores must have been idle over a window
	// for help to go on.
	SpareCores = 0.9
	// BusyCores is how many cores must stay idle over a window for help
	// to stay on.
	BusyCores = 0.5
)

// ErrStat is returned for a /proc/stat whose cpu line cannot be read.
var ErrStat = errors.New("cpuidle: malformed /proc/stat")

// Sample is the machine's CPU time so far, in clock ticks: all of it and
// the idle part of it (idle and iowait).
type Sample struct {
	Idle, Total uint64
}

// ParseStat reads the aggregate "cpu" line of Linux's /proc/stat, the
// first. It allocates nothing: the watcher reads it four times a second
// for the life of the process.
func ParseStat(b []byte) (Sample, error) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if !bytes.HasPrefix(b, []byte("cpu ")) {
		return Sample{}, fmt.Errorf("%w: no aggregate cpu line", ErrStat)
	}
	// user nice system idle iowait irq softirq steal; guest and
	// guest_nice are counted in user and nice already.
	var s Sample
	field := 0
	for b = b[4:]; len(b) > 0; field++ {
		for len(b) > 0 && b[0] == ' ' {
			b = b[1:]
		}
		if len(b) == 0 {
			break
		}
		var v uint64
		for ; len(b) > 0 && b[0] != ' '; b = b[1:] {
			d := uint64(b[0] - '0')
			if b[0] < '0' || b[0] > '9' {
				return Sample{}, fmt.Errorf("%w: field %d is not a number", ErrStat, field+1)
			}
			if v > (math.MaxUint64-d)/10 {
				return Sample{}, fmt.Errorf("%w: field %d overflows", ErrStat, field+1)
			}
			v = v*10 + d
		}
		if field >= 8 {
			continue
		}
		if s.Total+v < s.Total {
			return Sample{}, fmt.Errorf("%w: the fields overflow", ErrStat)
		}
		s.Total += v
		if field == 3 || field == 4 {
			s.Idle += v
		}
	}
	if field < 4 {
		return Sample{}, fmt.Errorf("%w: %d fields", ErrStat, field)
	}
	return s, nil
}

// IdleCores is how many cores of ncpu were idle on average between two
// samples (0 if no time passed).
func IdleCores(from, to Sample, ncpu int) float64 {
	if to.Total <= from.Total || to.Idle < from.Idle {
		return 0
	}
	return float64(to.Idle-from.Idle) / float64(to.Total-from.Total) * float64(ncpu)
}

// Watcher says whether help is on. Acquire returns the process's one
// Watcher.
type Watcher struct {
	on   atomic.Bool
	stop chan struct{}
	done chan struct{}
	refs int // under mu

	read      func() (Sample, error)
	closeRead func() // what read reads, if set
	ncpu      int
	window    time.Duration
}

var (
	mu      sync.Mutex
	watcher *Watcher
)

// Acquire returns the process's Watcher, starting it for the first user;
// each Acquire is matched by a Release.
func Acquire() *Watcher {
	mu.Lock()
	defer mu.Unlock()
	if watcher == nil {
		f, err := openStat()
		read := func() (Sample, error) { return Sample{}, err }
		if err == nil {
			read = f.read
		}
		watcher = start(read, runtime.NumCPU(), Window)
		if err == nil {
			watcher.closeRead = f.close
		}
	}
	watcher.refs++
	return watcher
}

// start starts a Watcher that reads the CPU time of ncpu cores with read.
func start(read func() (Sample, error), ncpu int, window time.Duration) *Watcher {
	w := &Watcher{stop: make(chan struct{}), done: make(chan struct{}), read: read, ncpu: ncpu, window: window}
	go w.run()
	return w
}

// Release ends a user's use of w; the last one stops it.
func (w *Watcher) Release() {
	mu.Lock()
	defer mu.Unlock()
	if w.refs--; w.refs > 0 {
		return
	}
	if watcher == w {
		watcher = nil
	}
	w.halt()
}

// halt stops w's sampling.
func (w *Watcher) halt() {
	close(w.stop)
	<-w.done
	if w.closeRead != nil {
		w.closeRead()
	}
}

// Spare reports whether a core is spare, so help is on. It is one atomic
// load, for the datapath.
func (w *Watcher) Spare() bool { return w.on.Load() }

func (w *Watcher) run() {
	defer close(w.done)
	if runtime.GOMAXPROCS(0) < 2 {
		return // nowhere to help
	}
	prev, err := w.read()
	if err != nil {
		w.on.Store(true) // idle time unknown: help on several cores
		return
	}
	t := time.NewTicker(w.window)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		cur, err := w.read()
		if err != nil {
			w.on.Store(true)
			return
		}
		idle := IdleCores(prev, cur, w.ncpu)
		prev = cur
		if w.on.Load() {
			w.on.Store(idle >= BusyCores)
		} else {
			w.on.Store(idle >= SpareCores)
		}
	}
}
