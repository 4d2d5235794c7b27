package ipview

import "golang.org/x/sys/cpu"

// blockSize is the run of octets the vector loop takes at once.
const blockSize = 64

var useAVX2 = cpu.X86.HasAVX2

// maxRun is the most octets one call of the vector loop sums: each 64-bit
// lane adds a 32-bit word per block, so 2^30 octets keep the lanes and
// their total far from overflowing. A variable for the test.
var maxRun = 1 << 30

// addBlocks returns the sum of src[:n] (n a multiple of blockSize),
// copying it to dst when dst is not nil.
func addBlocks(dst, src []byte, n int) uint64 {
	if n == 0 {
		return 0
	}
	if !useAVX2 {
		if dst != nil {
			copy(dst, src[:n])
		}
		return addTail(src[:n])
	}
	var s Sum
	for n > 0 {
		m := min(n, maxRun)
		if dst != nil {
			s = s.plus(copySumAVX2(&dst[0], &src[0], m))
			dst = dst[m:]
		} else {
			s = s.plus(sumAVX2(&src[0], m))
		}
		src, n = src[m:], n-m
	}
	return uint64(s)
}

// sumAVX2 returns the sum of the n octets at src as 32-bit words in host
// byte order, n a multiple of 64 and below 2^31.
//
//go:noescape
func sumAVX2(src *byte, n int) uint64

// copySumAVX2 is sumAVX2 that also copies the octets to dst.
//
//go:noescape
func copySumAVX2(dst, src *byte, n int) uint64
