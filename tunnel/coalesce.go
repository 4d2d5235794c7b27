package tunnel

import (
	"encoding/binary"
	"errors"

	"github.com/oevpn/oevpn/internal/ipview"
)

// Coalescing of the TCP segments an inbound batch decrypted into
// super-packets for a TUN device with offloads (Linux, IFF_VNET_HDR), as
// GRO does for a NIC: the stack then takes one packet per run of a
// stream's segments.
//
// A super-packet is written as a list of slices, gathered by the kernel:
// a virtio-net header, the first segment whole, then each later
// segment's payload where decryption left it. Nothing is copied, and the
// segments' checksums are not verified: the header marks the super-packet
// as one whose checksum is still to be computed (CHECKSUM_PARTIAL), which
// the receiving stack takes as verified. Every octet was authenticated by
// ESP; a checksum would only catch a fault of the sender's own stack.
// wireguard-go's own coalescing (tun.Device.Write) copies every payload
// into the first segment's buffer and verifies each checksum first.

// virtio-net header (struct virtio_net_hdr, host byte order).
const (
	vnetHdrLen    = 10
	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetGSOTCPv4  = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	vnetGSOTCPv6  = 4 // VIRTIO_NET_HDR_GSO_TCPV6
	vnetGSONone   = 0 // VIRTIO_NET_HDR_GSO_NONE
	vnetGSOUDPL4  = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
)

// Bounds of coalescing.
const (
	// maxCoalesced is the most segments in one super-packet (as UDP GSO
	// and Linux's GRO).
	maxCoalesced = 64
	// coalesceLookback is how many of the newest super-packets a segment
	// looks through for its stream's: a batch interleaves few streams.
	coalesceLookback = 8
)

// errSuperPacket is returned when the device refuses a super-packet.
var errSuperPacket = errors.New("tunnel: the device refused a coalesced packet")

// gatherWriter writes one packet to a TUN device with offloads, given as
// slices that start with its virtio-net header.
type gatherWriter interface {
	writeGather(iov [][]byte) error
}

// superPacket is a run of one TCP stream's segments, in order.
type superPacket struct {
	vnet   [vnetHdrLen]byte
	iov    [][]byte // the virtio-net header, the first segment, the others' payloads
	ipLen  int      // IP header length
	hdrLen int      // IP and TCP header length
	gso    int      // payload of each segment but the last
	size   int      // IP length of the super-packet
	next   uint32   // the sequence number that continues it
	psh    bool     // the last segment had PSH
	closed bool     // nothing may follow: PSH, a short segment, or not a plain segment
}

// coalescer gathers one batch's TCP segments into super-packets and writes
// them at the end of the batch. It allocates nothing after it is made.
type coalescer struct {
	w     gatherWriter
	items []superPacket // this batch's, in the order their first segments came
}

// newCoalescer returns a coalescer for batches of up to batch packets.
func newCoalescer(batch int, w gatherWriter) *coalescer {
	items := make([]superPacket, batch)
	for i := range items {
		items[i].iov = make([][]byte, 0, maxCoalesced+1)
	}
	return &coalescer{w: w, items: items[:0]}
}

// add takes a decrypted packet of the batch that p describes. It reports
// false, keeping nothing, for a packet that is not TCP: the caller writes
// that one itself. pkt stays in use until flush.
func (c *coalescer) add(pkt []byte, p *ipview.Packet) bool {
	if p.Proto != ipview.ProtoTCP || len(c.items) == cap(c.items) {
		return false
	}
	ipLen, ok := plainIPHeader(pkt)
	if !ok || len(pkt) < ipLen+20 {
		return false
	}
	tcp := pkt[ipLen:]
	hdrLen := ipLen + int(tcp[12]>>4)*4
	if hdrLen < ipLen+20 || hdrLen > len(pkt) {
		return false
	}
	for i := len(c.items) - 1; i >= max(0, len(c.items)-coalesceLookback); i-- {
		it := &c.items[i]
		if !sameStream(it.iov[1], pkt, ipLen) {
			continue
		}
		// Only the stream's newest super-packet may grow: its
		// segments stay in the order they came.
		if it.appendable(pkt, hdrLen) {
			it.append(pkt, hdrLen)
			return true
		}
		break
	}
	c.items = c.items[:len(c.items)+1]
	c.items[len(c.items)-1].start(pkt, ipLen, hdrLen)
	return true
}

// flush writes the batch's super-packets, in order, and forgets them. It
// returns the first error, having tried every one.
func (c *coalescer) flush() error {
	var first error
	for i := range c.items {
		it := &c.items[i]
		if err := c.w.writeGather(it.finish()); err != nil && first == nil {
			first = err
		}
		clear(it.iov) // drop the batch's buffers
		it.iov = it.iov[:0]
	}
	c.items = c.items[:0]
	return first
}

// plainIPHeader returns the length of pkt's IP header if pkt is a whole
// TCP packet that may be coalesced: IPv4 without options and not a
// fragment, or IPv6 without extension headers.
func plainIPHeader(pkt []byte) (int, bool) {
	switch ipview.Version(pkt) {
	case 4:
		if len(pkt) < 20 || pkt[0]&0x0f != 5 || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return 0, false
		}
		return 20, true
	case 6:
		if len(pkt) < 40 || pkt[6] != ipview.ProtoTCP {
			return 0, false
		}
		return 40, true
	}
	return 0, false
}

// sameStream reports whether a and b, TCP packets with IP headers of
// ipLen, belong to the same stream: version, addresses and ports.
func sameStream(a, b []byte, ipLen int) bool {
	if len(a) < ipLen+4 || a[0]>>4 != b[0]>>4 {
		return false
	}
	if string(addrsOf(a)) != string(addrsOf(b)) {
		return false
	}
	return string(a[ipLen:ipLen+4]) == string(b[ipLen:ipLen+4])
}

// addrsOf returns the source and destination addresses of an IPv4 or
// IPv6 packet, one after the other.
func addrsOf(pkt []byte) []byte {
	if ipview.Version(pkt) == 4 {
		return pkt[12:20]
	}
	return pkt[8:40]
}

// start begins a super-packet with pkt.
func (it *superPacket) start(pkt []byte, ipLen, hdrLen int) {
	tcp := pkt[ipLen:]
	flags := tcp[13]
	it.iov = append(it.iov[:0], it.vnet[:], pkt)
	it.ipLen, it.hdrLen = ipLen, hdrLen
	it.gso = len(pkt) - hdrLen
	it.size = len(pkt)
	it.next = binary.BigEndian.Uint32(tcp[4:]) + uint32(it.gso)
	it.psh = flags&tcpPSH != 0
	// A plain data segment: ACK, perhaps ECE (an ECN echo); not SYN, FIN,
	// RST, URG or CWR (Linux's GRO ends a run at CWR too).
	it.closed = it.gso == 0 || flags&^(tcpPSH|tcpECE) != tcpACK || it.psh
}

// appendable reports whether pkt, of the same stream, continues it: the
// next segment in sequence, with the same IP and TCP headers but for the
// length, identification, checksums, sequence number and PSH (Linux's GRO
// rules), no longer than the first, and the super-packet not too long.
func (it *superPacket) appendable(pkt []byte, hdrLen int) bool {
	payload := len(pkt) - hdrLen
	if it.closed || len(it.iov) > maxCoalesced || hdrLen != it.hdrLen ||
		payload == 0 || payload > it.gso || it.size+payload > maxPacket {
		return false
	}
	first := it.iov[1]
	ipLen := it.ipLen
	if ipLen == 20 {
		// TOS, DF; TTL, protocol (addresses: same stream).
		if pkt[1] != first[1] || pkt[6]&0x40 != first[6]&0x40 || string(pkt[8:10]) != string(first[8:10]) {
			return false
		}
	} else if string(pkt[0:4]) != string(first[0:4]) || pkt[7] != first[7] {
		return false // traffic class, flow label; hop limit
	}
	tcp, ftcp := pkt[ipLen:], first[ipLen:]
	if binary.BigEndian.Uint32(tcp[4:]) != it.next ||
		string(tcp[8:13]) != string(ftcp[8:13]) || // acknowledgment, data offset
		tcp[13]&^tcpPSH != ftcp[13]&^tcpPSH || // flags but PSH
		string(tcp[14:16]) != string(ftcp[14:16]) || // window
		string(tcp[20:hdrLen-ipLen]) != string(ftcp[20:hdrLen-ipLen]) { // options
		return false
	}
	return true
}

// append adds pkt's payload.
func (it *superPacket) append(pkt []byte, hdrLen int) {
	payload := len(pkt) - hdrLen
	it.iov = append(it.iov, pkt[hdrLen:])
	it.size += payload
	it.next += uint32(payload)
	it.psh = pkt[it.ipLen+13]&tcpPSH != 0
	it.closed = it.psh || payload < it.gso
}

// finish writes the virtio-net header, and for more than one segment the
// super-packet's lengths, IPv4 header checksum, PSH and the TCP
// pseudo-header sum the device completes, and returns the slices to write.
func (it *superPacket) finish() [][]byte {
	clear(it.vnet[:])
	if len(it.iov) == 2 {
		return it.iov // one segment: as it came, its checksum verified by the stack
	}
	pkt := it.iov[1]
	tcp := pkt[it.ipLen:]
	if it.psh {
		tcp[13] |= tcpPSH
	}
	if it.ipLen == 20 {
		binary.BigEndian.PutUint16(pkt[2:], uint16(it.size))
		ipview.IPv4(pkt).SetChecksum()
		it.vnet[1] = vnetGSOTCPv4
	} else {
		binary.BigEndian.PutUint16(pkt[4:], uint16(it.size-40))
		it.vnet[1] = vnetGSOTCPv6
	}
	// The device adds the header and payload to the sum, and complements.
	binary.BigEndian.PutUint16(tcp[16:], ipview.PseudoSum(addrsOf(pkt), ipview.ProtoTCP, it.size-it.ipLen))
	it.vnet[0] = vnetNeedsCsum
	binary.NativeEndian.PutUint16(it.vnet[2:], uint16(it.hdrLen))
	binary.NativeEndian.PutUint16(it.vnet[4:], uint16(it.gso))
	binary.NativeEndian.PutUint16(it.vnet[6:], uint16(it.ipLen))
	binary.NativeEndian.PutUint16(it.vnet[8:], 16) // TCP checksum
	return it.iov
}
