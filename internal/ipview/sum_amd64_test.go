package ipview

import (
	"bytes"
	"testing"
)

// setVector turns the vector loop off (where the CPU has it, it stays on
// for true) and returns what restores it.
func setVector(on bool) (restore func()) {
	was := useAVX2
	useAVX2 = was && on
	return func() { useAVX2 = was }
}

// TestSumLongRuns cuts the vector loop's runs short, so that sums longer
// than a run (2^30 octets in use) are checked without a gigabyte.
func TestSumLongRuns(t *testing.T) {
	defer func(m int) { maxRun = m }(maxRun)
	maxRun = 128
	b := bytes.Repeat([]byte{0xff, 0xfe, 0x01, 0x80}, 1000)
	for _, n := range []int{128, 129, 256, 1000, 4000} {
		if got, want := Sum(0).Add(b[:n]).Fold(), refSum(b[:n]); got != want {
			t.Fatalf("%d octets in runs of 128: %#04x, want %#04x", n, got, want)
		}
		dst := make([]byte, n)
		if got, want := Sum(0).CopyAdd(dst, b[:n]).Fold(), refSum(b[:n]); got != want || !bytes.Equal(dst, b[:n]) {
			t.Fatalf("CopyAdd of %d octets in runs of 128: %#04x, want %#04x", n, got, want)
		}
	}
}
