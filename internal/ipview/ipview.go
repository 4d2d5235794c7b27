// Package ipview reads the fields of IPv4 and IPv6 packets that the datapath
// needs (version, addresses, protocol, ports) straight from the bytes, without
// allocating.
package ipview

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// Protocol numbers used by the datapath.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoIPv4   = 4  // IPv4 in IP: ESP next header for an inner IPv4 packet
	ProtoIPv6   = 41 // IPv6 in IP: ESP next header for an inner IPv6 packet
	ProtoICMPv6 = 58
	ProtoSCTP   = 132
)

const (
	ipv4MinHeader = 20
	ipv6Header    = 40
)

// Errors returned by Parse.
var (
	ErrTruncated = errors.New("ipview: truncated packet")
	ErrVersion   = errors.New("ipview: not an IPv4 or IPv6 packet")
	ErrHeader    = errors.New("ipview: malformed header")
)

// Packet holds the parsed fields of one IP packet.
type Packet struct {
	Src, Dst netip.Addr
	// Proto is the transport protocol (for IPv6 the first header after the
	// fixed one; extension headers are not walked).
	Proto uint8
	// Ports are the transport source and destination ports for TCP, UDP
	// and SCTP, and ICMP type and code in the high and low octet of
	// SrcPort (RFC 7296 §3.13.1), when HasPorts.
	SrcPort, DstPort uint16
	HasPorts         bool
	// Len is the packet's total length from its header (≤ len of the
	// buffer it was parsed from).
	Len int
}

// Version returns 4 or 6, or 0 for an empty buffer.
func Version(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	return int(b[0] >> 4)
}

// Parse reads the header of the IP packet in b.
func Parse(b []byte) (Packet, error) {
	var p Packet
	switch Version(b) {
	case 4:
		if len(b) < ipv4MinHeader {
			return p, ErrTruncated
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < ipv4MinHeader || total < ihl {
			return p, ErrHeader
		}
		if total > len(b) {
			return p, ErrTruncated
		}
		p.Len = total
		p.Proto = b[9]
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		fragOff := binary.BigEndian.Uint16(b[6:]) & 0x1fff
		if fragOff == 0 {
			p.readPorts(b[ihl:total])
		}
	case 6:
		if len(b) < ipv6Header {
			return p, ErrTruncated
		}
		total := ipv6Header + int(binary.BigEndian.Uint16(b[4:]))
		if total > len(b) {
			return p, ErrTruncated
		}
		p.Len = total
		p.Proto = b[6]
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		p.readPorts(b[ipv6Header:total])
	default:
		return p, ErrVersion
	}
	return p, nil
}

func (p *Packet) readPorts(l4 []byte) {
	switch p.Proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
		if len(l4) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(l4)
			p.DstPort = binary.BigEndian.Uint16(l4[2:])
			p.HasPorts = true
		}
	case ProtoICMP, ProtoICMPv6:
		if len(l4) >= 2 {
			p.SrcPort = binary.BigEndian.Uint16(l4)
			p.HasPorts = true
		}
	}
}

// protoNames are the protocol names the configuration accepts.
var protoNames = map[string]uint8{"tcp": ProtoTCP, "udp": ProtoUDP, "icmp": ProtoICMP, "ipv6-icmp": ProtoICMPv6, "icmpv6": ProtoICMPv6, "sctp": ProtoSCTP}

// ParseProto reads an IP protocol written as a name (tcp, udp, icmp,
// icmpv6 or ipv6-icmp, sctp; any case) or a decimal number 0–255.
func ParseProto(s string) (uint8, bool) {
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p, true
	}
	n, err := strconv.ParseUint(s, 10, 8)
	return uint8(n), err == nil
}
