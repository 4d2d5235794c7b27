package ipview

import (
	"encoding/binary"
	"net/netip"
)

// Header sizes.
const (
	IPv4MinimumSize = ipv4MinHeader // an IPv4 header without options
	IPv6FixedSize   = ipv6Header    // the fixed IPv6 header
)

// IPv4 is a view of an IPv4 header (RFC 791 §3.1) at the start of a
// packet, in the style of gVisor's header.IPv4: its methods read and write
// the fields in place. The caller checks the length first (IsValid, or at
// least IPv4MinimumSize octets).
type IPv4 []byte

// IsValid reports whether b holds a whole IPv4 header: version 4, a header
// length of at least 20 octets and no more than len(b).
func (b IPv4) IsValid() bool {
	return len(b) >= IPv4MinimumSize && b[0]>>4 == 4 && b.HeaderLength() >= IPv4MinimumSize && b.HeaderLength() <= len(b)
}

// HeaderLength returns the header length in octets (IHL × 4).
func (b IPv4) HeaderLength() int { return int(b[0]&0x0f) * 4 }

// Protocol returns the protocol of the payload.
func (b IPv4) Protocol() uint8 { return b[9] }

// Src returns the source address.
func (b IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(b[12:16])) }

// Dst returns the destination address.
func (b IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(b[16:20])) }

// SetSrc sets the source address; the checksum is left as it was.
func (b IPv4) SetSrc(a [4]byte) { copy(b[12:16], a[:]) }

// SetDst sets the destination address; the checksum is left as it was.
func (b IPv4) SetDst(a [4]byte) { copy(b[16:20], a[:]) }

// SetChecksum computes the header checksum afresh.
func (b IPv4) SetChecksum() {
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], Checksum(b[:b.HeaderLength()]))
}

// UpdateChecksum updates the header checksum for a 16-bit-aligned field
// that changed from old to new (RFC 1624), as SetSrc and SetDst leave it.
func (b IPv4) UpdateChecksum(old, new []byte) {
	binary.BigEndian.PutUint16(b[10:], ChecksumUpdate(binary.BigEndian.Uint16(b[10:]), old, new))
}

// Payload returns what follows the header.
func (b IPv4) Payload() []byte { return b[b.HeaderLength():] }

// IPv6 is a view of the fixed IPv6 header (RFC 8200 §3) at the start of a
// packet, in the style of gVisor's header.IPv6. The caller checks the
// length first (IsValid, or at least IPv6FixedSize octets).
type IPv6 []byte

// IsValid reports whether b holds the fixed IPv6 header.
func (b IPv6) IsValid() bool { return len(b) >= IPv6FixedSize && b[0]>>4 == 6 }

// NextHeader returns the type of the header that follows the fixed one.
func (b IPv6) NextHeader() uint8 { return b[6] }

// Src returns the source address.
func (b IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(b[8:24])) }

// Dst returns the destination address.
func (b IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(b[24:40])) }

// SetSrc sets the source address.
func (b IPv6) SetSrc(a [16]byte) { copy(b[8:24], a[:]) }

// SetDst sets the destination address.
func (b IPv6) SetDst(a [16]byte) { copy(b[24:40], a[:]) }

// Payload returns what follows the fixed header (extension headers are not
// walked).
func (b IPv6) Payload() []byte { return b[IPv6FixedSize:] }

// HeaderLen returns the length of the header of a packet Parse accepted:
// the IPv4 header with its options, or the fixed IPv6 header.
func HeaderLen(b []byte) int {
	if Version(b) == 4 {
		return IPv4(b).HeaderLength()
	}
	return IPv6FixedSize
}
