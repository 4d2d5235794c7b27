package ipview

import (
	"encoding/binary"
	"math/bits"
)

// Sum is a running ones'-complement sum (RFC 1071) of 16-bit words, the
// sum under the Internet checksum. It is kept in 64 bits with the carries
// added back in, and in host byte order, which RFC 1071 §2(B) shows gives
// the same checksum once folded and swapped; Fold does both. The zero Sum
// is the sum of nothing.
//
// Add and CopyAdd take data that starts at an even offset of what is
// summed; only the last piece may have an odd length.
type Sum uint64

// Add returns s plus the 16-bit words of b.
func (s Sum) Add(b []byte) Sum {
	return s.plus(addBlocks(nil, b, len(b)&^(blockSize-1))).plus(addTail(b[len(b)&^(blockSize-1):]))
}

// CopyAdd copies src to the start of dst, which must be at least as long,
// and returns s plus the 16-bit words of src. It reads src once: the sum
// costs little more than the copy.
func (s Sum) CopyAdd(dst, src []byte) Sum {
	dst = dst[:len(src)]
	n := len(src) &^ (blockSize - 1)
	s = s.plus(addBlocks(dst, src, n))
	copy(dst[n:], src[n:])
	return s.plus(addTail(src[n:]))
}

// AddWord returns s plus the 16-bit word v, in network byte order (as
// binary.BigEndian.Uint16 reads it from a header).
func (s Sum) AddWord(v uint16) Sum {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return s.plus(uint64(binary.NativeEndian.Uint16(b[:])))
}

// Fold returns the sum folded to 16 bits in network byte order: a
// checksum field takes its complement.
func (s Sum) Fold() uint16 {
	x := uint64(s)
	x = x&0xffffffff + x>>32 // < 2^33
	x = x&0xffff + x>>16     // < 2^18
	x = x&0xffff + x>>16     // < 2^16 + 3
	x = x&0xffff + x>>16
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], uint16(x))
	return binary.BigEndian.Uint16(b[:])
}

// plus adds x to s with the carry added back in (end-around carry).
func (s Sum) plus(x uint64) Sum {
	r, c := bits.Add64(uint64(s), x, 0)
	return Sum(r + c)
}

// addTail sums b word by word: 8 octets at a time, then the rest, an odd
// last octet padded with zero.
func addTail(b []byte) uint64 {
	var s, c uint64
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b), 0)
		s += c
		b = b[8:]
	}
	var last [8]byte
	copy(last[:], b)
	s, c = bits.Add64(s, binary.NativeEndian.Uint64(last[:]), 0)
	return s + c
}
