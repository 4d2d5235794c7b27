package tunnel

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// segments returns how many buffers pkt takes at most: one for each MSS
// of it if it is a TCP packet the stack left to the device to cut (GSO).
func segments(pkt *stack.PacketBuffer) int {
	g := pkt.GSOOptions
	if !g.NeedsCsum || g.MSS == 0 {
		return 1
	}
	return max(1, (pkt.Size()+int(g.MSS)-1)/int(g.MSS))
}

// segmentTCP cuts pkt, an IPv4 or IPv6 TCP packet whose payload may be
// longer than its MSS and whose checksum is only that of the pseudo-header
// (GSO), into segments of at most the MSS, each in one of bufs at offset
// with its length in sizes, as a NIC with TCP segmentation offload does:
// consecutive sequence numbers, IPv4 identifications and PSH and FIN on
// the last segment only, CWR on the first only, and the IP and TCP
// checksums computed. It returns how many buffers it filled; a packet
// that does not fit is dropped.
func segmentTCP(bufs [][]byte, sizes []int, offset int, pkt *stack.PacketBuffer) int {
	nh, th := pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice()
	hdrLen := len(nh) + len(th)
	payload := pkt.Size() - hdrLen
	mss := int(pkt.GSOOptions.MSS)
	if mss <= 0 || payload <= mss {
		mss = max(payload, 1)
	}
	n := max(1, (payload+mss-1)/mss)
	if n > len(bufs) || len(th) < header.TCPMinimumSize || len(nh) == 0 {
		return 0
	}
	var src, dst tcpip.Address
	var id uint16
	v4 := header.IPVersion(nh) == header.IPv4Version
	if v4 {
		ip := header.IPv4(nh)
		src, dst, id = ip.SourceAddress(), ip.DestinationAddress(), ip.ID()
	} else {
		ip := header.IPv6(nh)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	tcpHdr := header.TCP(th)
	seq, flags := tcpHdr.SequenceNumber(), tcpHdr.Flags()
	for i := range n {
		size := min(mss, payload-i*mss)
		b := bufs[i][offset:]
		if hdrLen+size > len(b) {
			return 0
		}
		b = b[:hdrLen+size]
		copy(b, nh)
		copy(b[len(nh):], th)
		copyPacket(b[hdrLen:], pkt, hdrLen+i*mss)
		if v4 {
			ip := header.IPv4(b)
			ip.SetTotalLength(uint16(len(b)))
			ip.SetID(id + uint16(i))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
		} else {
			header.IPv6(b).SetPayloadLength(uint16(len(b) - header.IPv6MinimumSize))
		}
		t := header.TCP(b[len(nh):])
		t.SetSequenceNumber(seq + uint32(i*mss))
		f := flags
		if i < n-1 {
			f &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if i > 0 {
			f &^= header.TCPFlagCwr
		}
		t.SetFlags(uint8(f))
		t.SetChecksum(0)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(t)))
		t.SetChecksum(^checksum.Checksum(t, xsum))
		sizes[i] = len(b)
	}
	return n
}
