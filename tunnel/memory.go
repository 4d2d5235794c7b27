package tunnel

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Memory is the process's memory use.
type Memory struct {
	// HeapLive is the heap that the last garbage collection kept.
	HeapLive uint64 `json:"heap_live"`
	// HeapInUse is the heap taken by objects now (live or not yet
	// collected).
	HeapInUse uint64 `json:"heap_in_use"`
	// Runtime is all the memory the Go runtime has mapped.
	Runtime uint64 `json:"runtime"`
	// RSS is the resident set size (0 where unknown).
	RSS uint64 `json:"rss"`
	// Goroutines is the number of goroutines.
	Goroutines int `json:"goroutines"`
}

var memoryMetrics = []string{"/gc/heap/live:bytes", "/memory/classes/heap/objects:bytes", "/memory/classes/total:bytes"}

// ReadMemory returns the process's memory use; it does not stop the world.
func ReadMemory() Memory {
	s := make([]metrics.Sample, len(memoryMetrics))
	for i, name := range memoryMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	u := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return Memory{HeapLive: u(0), HeapInUse: u(1), Runtime: u(2), RSS: rss(), Goroutines: runtime.NumGoroutine()}
}

// rss reads the resident set size from /proc (Linux).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// Trimming after bursts. The garbage of a burst of work (a flood of
// spoofed IKE_SA_INIT answered with cookies, a wave of handshakes) grows
// the heap to the collector's goal, twice the live heap, and the runtime
// keeps those pages resident: its scavenger only returns what is above the
// goal. Once a burst has passed, TrimAfterBursts hands them back.
const (
	// trimInterval is how often the allocation rate is looked at.
	trimInterval = 10 * time.Second
	// trimBurst is how much must have been allocated since the last trim
	// for a trim to be worth its cost (one garbage collection).
	trimBurst = 32 << 20
	// trimQuiet is the most that may have been allocated in the last
	// interval: the burst has passed.
	trimQuiet = 1 << 20
)

// memTrimmer decides when to trim, from the cumulative bytes allocated.
type memTrimmer struct {
	last, atTrim uint64
}

// due reports whether to trim now that allocs bytes have been allocated
// in all, one interval after the previous call.
func (m *memTrimmer) due(allocs uint64) bool {
	quiet := allocs-m.last < trimQuiet
	m.last = allocs
	if quiet && allocs-m.atTrim >= trimBurst {
		m.atTrim = allocs
		return true
	}
	return false
}

// TrimAfterBursts returns the heap's free pages to the operating system
// once a burst of allocation has passed (at most once per 32 MiB
// allocated, in an interval of 10 s that allocated less than 1 MiB), until
// stop is closed. The daemon runs it; a trim costs one garbage collection.
func TrimAfterBursts(stop <-chan struct{}) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocs := func() uint64 { metrics.Read(s); return s[0].Value.Uint64() }
	m := memTrimmer{}
	m.last = allocs()
	m.atTrim = m.last
	t := time.NewTicker(trimInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if m.due(allocs()) {
				debug.FreeOSMemory()
			}
		}
	}
}
