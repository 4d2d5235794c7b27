package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/internal/ipview"
)

// Segmenting of the super-packets a TUN device with offloads (Linux,
// IFF_VNET_HDR with TSO and USO) reads: the local stack hands over up to
// 64 KiB of one TCP stream (or UDP socket with UDP_SEGMENT) at once,
// behind a virtio-net header, and the device cuts it into segments as a
// NIC with TSO would. Each segment's payload is copied from the
// super-packet into its own buffer with its checksum summed in the same
// pass (ipview.Sum.CopyAdd); wireguard-go's tun.Device.Read copies first
// and sums again after.

// errVnet is wrapped by the errors of a super-packet that cannot be
// segmented: it is dropped, as the kernel drops a malformed GSO packet.
var errVnet = errors.New("tunnel: malformed packet from the device")

// segment cuts in, a virtio-net header and the packet behind it, into
// bufs (each packet at offset, its length in sizes), and returns how many
// it filled. Packets without GSO are copied whole, their checksum
// completed if the header asks for it. When bufs run out it returns the
// ones it filled and tun.ErrTooManySegments, as tun.Device.Read does.
func segment(in []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(in) < vnetHdrLen {
		return 0, fmt.Errorf("%w: %d octets, shorter than a virtio-net header", errVnet, len(in))
	}
	flags, gsoType := in[0], in[1]
	gsoSize := int(binary.NativeEndian.Uint16(in[4:]))
	csumStart := int(binary.NativeEndian.Uint16(in[6:]))
	csumOffset := int(binary.NativeEndian.Uint16(in[8:]))
	pkt := in[vnetHdrLen:]
	if gsoType == vnetGSONone {
		return segmentNone(pkt, flags&vnetNeedsCsum != 0, csumStart, csumOffset, bufs[0][offset:], &sizes[0])
	}
	proto, hdrLen, err := gsoHeaders(pkt, gsoType, gsoSize, csumStart, csumOffset)
	if err != nil {
		return 0, err
	}
	return split(pkt, proto, csumStart, hdrLen, gsoSize, bufs, sizes, offset)
}

// segmentNone copies a packet without GSO to dst, completing its checksum
// (the sum from csumStart on, into csumStart+csumOffset) when needsCsum.
func segmentNone(pkt []byte, needsCsum bool, csumStart, csumOffset int, dst []byte, size *int) (int, error) {
	if len(pkt) > len(dst) {
		return 0, fmt.Errorf("%w: packet of %d octets, buffer of %d", errVnet, len(pkt), len(dst))
	}
	if !needsCsum {
		*size = copy(dst, pkt)
		return 1, nil
	}
	at := csumStart + csumOffset
	if at+2 > len(pkt) {
		return 0, fmt.Errorf("%w: checksum at %d+%d of a %d-octet packet", errVnet, csumStart, csumOffset, len(pkt))
	}
	// The field holds the pseudo-header sum the device is to add in.
	copy(dst, pkt[:csumStart])
	sum := ipview.Sum(0).CopyAdd(dst[csumStart:], pkt[csumStart:])
	binary.BigEndian.PutUint16(dst[at:], ^sum.Fold())
	*size = len(pkt)
	return 1, nil
}

// gsoHeaders checks a super-packet's headers against its virtio-net
// header and returns its transport protocol and the length of its IP and
// transport headers. The header's own hdr_len is not used: for forwarded
// packets the kernel may set it to the whole first segment.
func gsoHeaders(pkt []byte, gsoType uint8, gsoSize, csumStart, csumOffset int) (proto uint8, hdrLen int, err error) {
	if gsoSize == 0 {
		return 0, 0, fmt.Errorf("%w: GSO without a segment size", errVnet)
	}
	switch ipview.Version(pkt) {
	case 4:
		if gsoType != vnetGSOTCPv4 && gsoType != vnetGSOUDPL4 {
			return 0, 0, fmt.Errorf("%w: IPv4 packet of GSO type %d", errVnet, gsoType)
		}
		if len(pkt) < 20 || int(pkt[0]&0x0f)*4 != csumStart {
			return 0, 0, fmt.Errorf("%w: IPv4 header does not end at the checksum start %d", errVnet, csumStart)
		}
	case 6:
		if gsoType != vnetGSOTCPv6 && gsoType != vnetGSOUDPL4 {
			return 0, 0, fmt.Errorf("%w: IPv6 packet of GSO type %d", errVnet, gsoType)
		}
		if csumStart < 40 {
			return 0, 0, fmt.Errorf("%w: checksum start %d inside the IPv6 header", errVnet, csumStart)
		}
	default:
		return 0, 0, fmt.Errorf("%w: GSO type %d for IP version %d", errVnet, gsoType, ipview.Version(pkt))
	}
	if gsoType == vnetGSOUDPL4 {
		proto, hdrLen = ipview.ProtoUDP, csumStart+8
		if csumOffset != 6 {
			return 0, 0, fmt.Errorf("%w: UDP checksum at offset %d", errVnet, csumOffset)
		}
	} else {
		if csumOffset != 16 || csumStart+20 > len(pkt) {
			return 0, 0, fmt.Errorf("%w: TCP checksum at %d+%d of a %d-octet packet", errVnet, csumStart, csumOffset, len(pkt))
		}
		proto, hdrLen = ipview.ProtoTCP, csumStart+int(pkt[csumStart+12]>>4)*4
		if hdrLen < csumStart+20 {
			return 0, 0, fmt.Errorf("%w: TCP header of %d octets", errVnet, hdrLen-csumStart)
		}
	}
	if hdrLen > len(pkt) {
		return 0, 0, fmt.Errorf("%w: headers of %d octets in a %d-octet packet", errVnet, hdrLen, len(pkt))
	}
	return proto, hdrLen, nil
}

// split cuts pkt, whose IP header is ipLen and IP and transport headers
// hdrLen octets long, into segments of gsoSize octets of payload: each
// gets a copy of the headers with its lengths, IPv4 identification,
// TCP sequence number and flags, and checksums.
func split(pkt []byte, proto uint8, ipLen, hdrLen, gsoSize int, bufs [][]byte, sizes []int, offset int) (int, error) {
	v4 := ipview.Version(pkt) == 4
	var addrs []byte
	if v4 {
		addrs = pkt[12:20]
	} else {
		addrs = pkt[8:40]
	}
	// The pseudo-header but its length; the transport header but its
	// checksum and the words that change per segment.
	pseudo := ipview.Sum(0).Add(addrs).AddWord(uint16(proto))
	csumAt := ipLen + 16
	if proto == ipview.ProtoUDP {
		csumAt = ipLen + 6
	}
	seq := binary.BigEndian.Uint32(pkt[ipLen+4:])
	n := 0
	for at := hdrLen; at < len(pkt); at += gsoSize {
		if n == len(bufs) {
			return n, tun.ErrTooManySegments
		}
		end := min(at+gsoSize, len(pkt))
		size := hdrLen + end - at
		out := bufs[n][offset:]
		if size > len(out) {
			return n, fmt.Errorf("%w: segment of %d octets, buffer of %d", errVnet, size, len(out))
		}
		out = out[:size]
		copy(out, pkt[:hdrLen])
		if v4 {
			binary.BigEndian.PutUint16(out[2:], uint16(size))
			binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(pkt[4:])+uint16(n))
			ipview.IPv4(out).SetChecksum()
		} else {
			binary.BigEndian.PutUint16(out[4:], uint16(size-40))
		}
		l4 := out[ipLen:]
		if proto == ipview.ProtoTCP {
			binary.BigEndian.PutUint32(l4[4:], seq+uint32(n*gsoSize))
			if end != len(pkt) {
				l4[13] &^= tcpFIN | tcpPSH
			}
			if n > 0 {
				l4[13] &^= tcpCWR
			}
		} else {
			binary.BigEndian.PutUint16(l4[4:], uint16(size-ipLen))
		}
		out[csumAt], out[csumAt+1] = 0, 0
		sum := pseudo.AddWord(uint16(size-ipLen)).Add(l4[:hdrLen-ipLen]).CopyAdd(out[hdrLen:], pkt[at:end])
		c := ^sum.Fold()
		if c == 0 && proto == ipview.ProtoUDP {
			c = 0xffff // RFC 768: zero is no checksum
		}
		binary.BigEndian.PutUint16(out[csumAt:], c)
		sizes[n] = size
		n++
	}
	return n, nil
}
