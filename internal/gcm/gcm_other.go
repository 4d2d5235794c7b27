//go:build !amd64 || purego

package gcm

const accelerated = false

func expandKey128(key *byte, keys *[15 * 16]byte) { panic("gcm: no vector code here") }

func expandKey256(key *byte, keys *[15 * 16]byte) { panic("gcm: no vector code here") }

func ctr(rounds int, keys *[15 * 16]byte, j0 *[16]byte, dst, src []byte, mask *[16]byte) {
	panic("gcm: no vector code here")
}

func ghash(powers *[32 * 16]byte, y *[16]byte, data []byte) { panic("gcm: no vector code here") }
