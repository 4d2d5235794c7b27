package tunnel

import "testing"

// TestMemTrimmer checks when TrimAfterBursts hands the heap's free pages
// back: once per burst of allocation, after it has passed.
func TestMemTrimmer(t *testing.T) {
	const mib = 1 << 20
	m := memTrimmer{}
	for i, c := range []struct {
		allocs uint64 // in all, at the end of an interval
		want   bool
	}{
		{0, false},
		{10 * mib, false},        // busy, and no burst yet
		{10*mib + 1000, false},   // quiet, but 10 MiB is no burst
		{60 * mib, false},        // a burst, under way
		{100 * mib, false},       // still
		{100*mib + 1000, true},   // it has passed
		{100*mib + 2000, false},  // trimmed already
		{140 * mib, false},       // another burst
		{140*mib + 999999, true}, // passed
	} {
		if got := m.due(c.allocs); got != c.want {
			t.Errorf("interval %d (%d allocated in all): trim %v, want %v", i, c.allocs, got, c.want)
		}
	}
}
