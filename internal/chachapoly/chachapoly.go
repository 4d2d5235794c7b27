// Package chachapoly is ChaCha20-Poly1305 (RFC 8439) for ESP (RFC 7634):
// a 12-octet nonce and a 16-octet tag, sealed and opened in place.
//
// On amd64 processors with AVX-512 and its 52-bit multiplies (IFMA),
// messages longer than smallMax take the vector code here: ChaCha20 makes
// sixteen blocks at once, one per 32-bit lane of sixteen 512-bit
// registers, and Poly1305 takes eight blocks at once, one per 64-bit lane
// with numbers in limbs of 44 bits (poly.go). x/crypto's
// ChaCha20-Poly1305 interleaves two ChaCha20 blocks per 256-bit register
// with a one-block-at-a-time Poly1305, which bounds it at about 3.3 GB/s;
// it still takes the short messages (up to smallMax), where its fixed
// costs are lower, and everything on other processors.
//
// Open checks the tag before it decrypts anything; on the vector path a
// forged packet leaves its buffer as it was (x/crypto's zeroes it).
package chachapoly

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/oevpn/oevpn/internal/alias"
)

// Sizes of the key, the nonce and the tag.
const (
	KeySize   = 32
	NonceSize = 12
	TagSize   = 16
)

// maxPlaintext is RFC 8439's limit: the 32-bit block counter starts at 1.
const maxPlaintext = (1<<32 - 1) * 64

// batch is the key stream one call of the vector code makes: 16 blocks.
const batch = 16 * 64

var errOpen = errors.New("chachapoly: message authentication failed")

// New returns ChaCha20-Poly1305 keyed with a 32-octet key.
func New(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("chachapoly: key of %d octets, want %d", len(key), KeySize)
	}
	if !accelerated {
		return chacha20poly1305.New(key)
	}
	small, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	w := &wide{small: small}
	for i := range w.key {
		w.key[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	return w, nil
}

// smallMax is the longest message x/crypto's ChaCha20-Poly1305 takes:
// below it, its interleaved 256-bit code wins over a 16-block key stream
// and the powers of r.
const smallMax = 640

// Accelerated reports whether New returns the wide implementation here.
func Accelerated() bool { return accelerated }

// wide is ChaCha20-Poly1305 on 512-bit vectors.
type wide struct {
	key   [8]uint32
	small cipher.AEAD // x/crypto's, for messages up to smallMax
}

// NonceSize returns the size of the nonce, 12 octets.
func (w *wide) NonceSize() int { return NonceSize }

// Overhead returns the size of the tag, 16 octets.
func (w *wide) Overhead() int { return TagSize }

// start returns the ChaCha20 state for nonce at block 0 and fills ks with
// blocks 0-15: block 0 keys Poly1305, the rest encrypt.
func (w *wide) start(nonce []byte, ks *[batch]byte) (st [16]uint32) {
	st[0], st[1], st[2], st[3] = 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574
	copy(st[4:12], w.key[:])
	st[13] = binary.LittleEndian.Uint32(nonce[0:])
	st[14] = binary.LittleEndian.Uint32(nonce[4:])
	st[15] = binary.LittleEndian.Uint32(nonce[8:])
	blocks(&st, ks)
	return st
}

// xor XORs src with the key stream from block 1 on into dst; ks holds
// blocks 0-15 of st on entry.
func xor(st *[16]uint32, ks *[batch]byte, dst, src []byte) {
	n := subtle.XORBytes(dst, src, ks[64:])
	for n < len(src) {
		st[12] += 16
		blocks(st, ks)
		n += subtle.XORBytes(dst[n:], src[n:], ks[:])
	}
}

// Seal encrypts and authenticates plaintext, authenticates additionalData
// and appends the result to dst. To seal in place, plaintext must be
// dst[len(dst):len(dst)+len(plaintext)].
func (w *wide) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != NonceSize {
		panic("chachapoly: nonce of the wrong length")
	}
	if uint64(len(plaintext)) > maxPlaintext {
		panic("chachapoly: message too large")
	}
	if len(plaintext) <= smallMax {
		return w.small.Seal(dst, nonce, plaintext, additionalData)
	}
	ret, out := alias.SliceForAppend(dst, len(plaintext)+TagSize)
	if alias.InexactOverlap(out, plaintext) {
		panic("chachapoly: invalid buffer overlap")
	}
	var ks [batch]byte
	st := w.start(nonce, &ks)
	var polyKey [32]byte
	copy(polyKey[:], ks[:32])
	xor(&st, &ks, out, plaintext)
	var tag [TagSize]byte
	authenticate(&tag, &polyKey, additionalData, out[:len(plaintext)])
	copy(out[len(plaintext):], tag[:])
	return ret
}

// Open authenticates ciphertext and additionalData and, when both are
// intact, decrypts ciphertext and appends the plaintext to dst. To open in
// place, ciphertext must start at dst[len(dst)]. It decrypts nothing when
// the tag does not match.
func (w *wide) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != NonceSize {
		panic("chachapoly: nonce of the wrong length")
	}
	if len(ciphertext) < TagSize || uint64(len(ciphertext)) > maxPlaintext+TagSize {
		return nil, errOpen
	}
	n := len(ciphertext) - TagSize
	if n <= smallMax {
		return w.small.Open(dst, nonce, ciphertext, additionalData)
	}
	ret, out := alias.SliceForAppend(dst, n)
	if alias.InexactOverlap(out, ciphertext) {
		panic("chachapoly: invalid buffer overlap")
	}
	var ks [batch]byte
	st := w.start(nonce, &ks)
	var polyKey [32]byte
	copy(polyKey[:], ks[:32])
	var want [TagSize]byte
	authenticate(&want, &polyKey, additionalData, ciphertext[:n])
	if subtle.ConstantTimeCompare(want[:], ciphertext[n:]) != 1 {
		return nil, errOpen
	}
	xor(&st, &ks, out, ciphertext[:n])
	return ret, nil
}

// authenticate writes RFC 8439's tag: Poly1305 of the additional data and
// the ciphertext, each padded to 16 octets, and their lengths.
func authenticate(tag *[TagSize]byte, key *[32]byte, additionalData, ciphertext []byte) {
	var p poly
	p.init(key)
	full := len(additionalData) &^ 15
	p.blocks(additionalData[:full])
	p.padded(additionalData[full:])
	var lengths [16]byte
	binary.LittleEndian.PutUint64(lengths[:8], uint64(len(additionalData)))
	binary.LittleEndian.PutUint64(lengths[8:], uint64(len(ciphertext)))
	p.tail(ciphertext, &lengths)
	p.finish(tag)
}
