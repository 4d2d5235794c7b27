//go:build amd64 && !purego

package chachapoly

import "golang.org/x/sys/cpu"

// accelerated needs AVX-512 Foundation (512-bit registers, VPROLD and the
// lane shuffles of ChaCha20's transposition) and IFMA (Poly1305's 52-bit
// multiplies).
var accelerated = cpu.X86.HasAVX512F && cpu.X86.HasAVX512IFMA

// blocks writes ChaCha20 blocks st[12] ... st[12]+15 (the counter wraps
// at 2^32, as RFC 8439's does) of state st to ks.
//
//go:noescape
func blocks(st *[16]uint32, ks *[batch]byte)

// polyRun adds the run of 8-block groups that is front (with the 2^128
// bits in pad, lane by lane), midGroups groups at mid, and last to the
// lanes' accumulators acc (limb by limb), using the powers in pw (see
// poly.go); the lanes' sum comes back in acc[0][0], acc[1][0] and
// acc[2][0], each below 2^48.
//
//go:noescape
func polyRun(acc *[3][8]uint64, front *[128]byte, pad *[8]uint64, mid *byte, midGroups int, last *[128]byte, pw *polyPowers)

// polyMulLanes multiplies a by b lane by lane (limbs as mul takes and
// leaves them; see poly.go), into a.
//
//go:noescape
func polyMulLanes(a, b *[3][8]uint64)
