package tunnel

import (
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
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
