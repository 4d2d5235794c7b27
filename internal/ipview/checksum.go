package ipview

import "encoding/binary"

// Checksum returns the Internet checksum (RFC 1071) of b: the complement
// of the ones'-complement sum of its 16-bit words, an odd last octet
// padded with zero. A header whose checksum field is correct sums to 0.
func Checksum(b []byte) uint16 { return ^Sum(0).Add(b).Fold() }

// ChecksumUpdate returns the Internet checksum sum updated for the 16-bit
// words old replaced by new, which have the same even length (RFC 1624,
// eqn. 3: HC' = ~(~HC + ~m + m')).
func ChecksumUpdate(sum uint16, old, new []byte) uint16 {
	s := uint32(^sum)
	for i := 0; i+1 < len(old); i += 2 {
		s += uint32(^binary.BigEndian.Uint16(old[i:]))
		s += uint32(binary.BigEndian.Uint16(new[i:]))
	}
	return ^fold(s)
}

// PseudoSum returns the folded ones'-complement sum, not complemented, of
// the pseudo-header of a TCP or UDP packet of length octets (RFC 9293
// §3.1, RFC 8200 §8.1): addrs is the source then the destination address
// (4 or 16 octets each), as they stand in the IP header. It is what a
// device that completes the checksum (virtio-net NEEDS_CSUM, Linux's
// CHECKSUM_PARTIAL) expects in the checksum field.
func PseudoSum(addrs []byte, proto uint8, length int) uint16 {
	s := uint32(proto) + uint32(length)&0xffff + uint32(length)>>16
	for i := 0; i+1 < len(addrs); i += 2 {
		s += uint32(binary.BigEndian.Uint16(addrs[i:]))
	}
	return fold(s)
}

// fold adds the carries of a 32-bit ones'-complement sum back in.
func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
