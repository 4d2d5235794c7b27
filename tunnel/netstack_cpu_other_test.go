//go:build !unix

package tunnel

import "time"

// cpuTime returns 0: the benchmark reports no per-CPU-second figure here.
func cpuTime() time.Duration { return 0 }
