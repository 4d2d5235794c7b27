//go:build !amd64 || purego

package chachapoly

// accelerated is false: New returns x/crypto's ChaCha20-Poly1305, and
// Poly1305 here (tested against x/crypto's) takes every block alone.
const accelerated = false

func blocks(st *[16]uint32, ks *[batch]byte) { panic("chachapoly: no vector code here") }

func polyRun(acc *[3][8]uint64, front *[128]byte, pad *[8]uint64, mid *byte, midGroups int, last *[128]byte, pw *polyPowers) {
	panic("chachapoly: no vector code here")
}

func polyMulLanes(a, b *[3][8]uint64) { panic("chachapoly: no vector code here") }
