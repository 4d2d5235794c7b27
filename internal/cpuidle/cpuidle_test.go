package cpuidle

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Sample
		err  bool
	}{
		{"linux 5+", "cpu  4705 356 584 3699176 23060 0 277 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n", Sample{Idle: 3699176 + 23060, Total: 4705 + 356 + 584 + 3699176 + 23060 + 277}, false},
		{"guest time not counted twice", "cpu 10 0 0 90 0 0 0 5 7 9\n", Sample{Idle: 90, Total: 105}, false},
		{"old kernel, four fields", "cpu 1 2 3 4", Sample{Idle: 4, Total: 10}, false},
		{"no line break", "cpu 1 1 1 1 1", Sample{Idle: 2, Total: 5}, false},
		{"per-CPU line first", "cpu0 1 2 3 4\ncpu 1 2 3 4\n", Sample{}, true},
		{"empty", "", Sample{}, true},
		{"too few fields", "cpu 1 2 3\n", Sample{}, true},
		{"not a number", "cpu 1 2 x 4\n", Sample{}, true},
		{"negative", "cpu 1 2 -3 4\n", Sample{}, true},
		{"overflow", "cpu 1 2 3 99999999999999999999\n", Sample{}, true},
		{"sum overflows", "cpu 18446744073709551615 0 0 1\n", Sample{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tc.in))
			if tc.err {
				if !errors.Is(err, ErrStat) {
					t.Fatalf("err %v, want ErrStat", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestReadStat reads this machine's /proc/stat: the real format, not only
// the table's.
func TestReadStat(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/stat is Linux's")
	}
	f, err := openStat()
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	a, err := f.read()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	b, err := f.read()
	if err != nil {
		t.Fatal(err)
	}
	if b.Total < a.Total || b.Idle < a.Idle || a.Idle > a.Total {
		t.Fatalf("samples %+v then %+v", a, b)
	}
	if c := IdleCores(a, b, runtime.NumCPU()); c < 0 || c > float64(runtime.NumCPU()) {
		t.Fatalf("%.2f idle cores of %d", c, runtime.NumCPU())
	}
}

// TestReadStatAllocatesNothing: the watcher reads /proc/stat four times a
// second for the life of the process, and garbage at that rate grows an
// otherwise idle daemon's heap by megabytes between collections.
func TestReadStatAllocatesNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/stat is Linux's")
	}
	if raceEnabled {
		t.Skip("the race detector allocates (make e2e runs this without it)")
	}
	f, err := openStat()
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := f.read(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per read", n)
	}
}

func TestIdleCores(t *testing.T) {
	for _, tc := range []struct {
		from, to Sample
		ncpu     int
		want     float64
	}{
		{Sample{0, 0}, Sample{50, 100}, 2, 1},
		{Sample{10, 100}, Sample{10, 200}, 4, 0},
		{Sample{10, 100}, Sample{110, 200}, 4, 4},
		{Sample{10, 100}, Sample{10, 100}, 4, 0}, // no time passed
		{Sample{10, 100}, Sample{5, 50}, 4, 0},   // went backwards
	} {
		if got := IdleCores(tc.from, tc.to, tc.ncpu); got != tc.want {
			t.Errorf("IdleCores(%+v, %+v, %d) = %v, want %v", tc.from, tc.to, tc.ncpu, got, tc.want)
		}
	}
}

// script is a read function that advances a fake machine of two cores by
// 100 ticks per sample, idle as set.
type script struct {
	mu   sync.Mutex
	s    Sample
	idle uint64 // idle ticks of the next 100
	err  error
}

func (sc *script) read() (Sample, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.s.Total += 100
	sc.s.Idle += sc.idle
	return sc.s, sc.err
}

func (sc *script) set(idle uint64, err error) {
	sc.mu.Lock()
	sc.idle, sc.err = idle, err
	sc.mu.Unlock()
}

func waitSpare(t *testing.T, w *Watcher, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for w.Spare() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Spare() stayed %v", !want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWatcher drives the watcher through a machine of two cores whose
// idle time changes: help goes on with nearly a whole core idle, stays on
// while half a core stays idle (the helpers take some), and goes off below
// that until nearly a whole core is idle again.
func TestWatcher(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	sc := &script{}
	w := start(sc.read, 2, time.Millisecond)
	defer w.halt()
	for _, step := range []struct {
		idle uint64 // ticks of 100 on two cores: 50 is one core
		want bool
	}{
		{10, false}, // a busy machine
		{40, false}, // 0.8 cores: not enough to start
		{60, true},  // 1.2 cores
		{30, true},  // 0.6 cores with help: keeps going
		{20, false}, // 0.4 cores: the helpers may be taking time others want
		{40, false},
		{50, true},
		{5, false},
	} {
		sc.set(step.idle, nil)
		if step.want {
			waitSpare(t, w, true)
		}
		// Long enough for many windows: the state holds.
		time.Sleep(20 * time.Millisecond)
		if w.Spare() != step.want {
			t.Fatalf("%.1f of 2 cores idle: Spare() = %v", float64(step.idle)/50, w.Spare())
		}
	}
}

// TestWatcherUnreadable is a machine whose idle time cannot be read: help
// is on, as on systems without /proc/stat, and on with one core never.
func TestWatcherUnreadable(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	sc := &script{err: os.ErrNotExist}
	w := start(sc.read, 2, time.Millisecond)
	waitSpare(t, w, true)
	w.halt()
	runtime.GOMAXPROCS(1)
	sc = &script{idle: 100}
	w = start(sc.read, 2, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if w.Spare() {
		t.Fatal("help on with GOMAXPROCS 1")
	}
	w.halt()
}

// TestAcquireShares checks that users share one watcher, and that the
// last Release stops it and the next Acquire starts another.
func TestAcquireShares(t *testing.T) {
	a, b := Acquire(), Acquire()
	if a != b {
		t.Fatal("two watchers")
	}
	a.Release()
	select {
	case <-b.done:
		t.Fatal("stopped with a user left")
	default:
	}
	b.Release()
	<-b.done
	c := Acquire()
	defer c.Release()
	if c == b {
		t.Fatal("a stopped watcher returned")
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("cpu  4705 356 584 3699176 23060 0 277 0 0 0\ncpu0 1 2 3 4\n"))
	f.Add([]byte("cpu 1 2 3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStat(b)
		if err == nil && s.Idle > s.Total {
			t.Fatalf("%+v: more idle than total", s)
		}
	})
}
