package tunnel

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/oevpn/oevpn/internal/ipview"
)

// ipv4Packet builds an IPv4 packet with the given transport header and
// payload and correct checksums.
func ipv4Packet(proto uint8, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	l4len := 8
	if proto == ipview.ProtoTCP {
		l4len = 20
	}
	pkt := make([]byte, 20+l4len+len(payload))
	pkt[0], pkt[8], pkt[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	binary.BigEndian.PutUint16(pkt[10:], fullChecksum(pkt[:20], nil))
	l4 := pkt[20:]
	binary.BigEndian.PutUint16(l4, sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	copy(l4[l4len:], payload)
	if proto == ipview.ProtoTCP {
		l4[12] = 5 << 4
		binary.BigEndian.PutUint16(l4[16:], l4Checksum(pkt))
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		binary.BigEndian.PutUint16(l4[6:], l4Checksum(pkt))
	}
	return pkt
}

func fullChecksum(b []byte, pseudo []byte) uint16 {
	var s uint32
	for _, part := range [][]byte{pseudo, b} {
		for i := 0; i+1 < len(part); i += 2 {
			s += uint32(binary.BigEndian.Uint16(part[i:]))
		}
		if len(part)%2 == 1 {
			s += uint32(part[len(part)-1]) << 8
		}
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// l4Checksum computes the TCP or UDP checksum of pkt with its checksum
// field taken as zero.
func l4Checksum(pkt []byte) uint16 {
	l4 := append([]byte(nil), pkt[20:]...)
	off := 16
	if pkt[9] == ipview.ProtoUDP {
		off = 6
	}
	l4[off], l4[off+1] = 0, 0
	pseudo := make([]byte, 12)
	copy(pseudo, pkt[12:20])
	pseudo[9] = pkt[9]
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(l4)))
	return fullChecksum(l4, pseudo)
}

func TestNATRewrite(t *testing.T) {
	h1, pub, h2 := netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.2.0.2")
	nt := &natTable{byInside: map[natKey]*natMap{}, byOutside: map[natKey]*natMap{}}
	m := &natMap{inside: h1, outside: pub, remote: h2, out: map[natPort]uint16{{6, 40000}: 61000}, in: map[natPort]uint16{{6, 61000}: 40000}}
	nt.byInside[natKey{h1, h2}], nt.byOutside[natKey{pub, h2}] = m, m
	for _, proto := range []uint8{ipview.ProtoTCP, ipview.ProtoUDP} {
		pkt := ipv4Packet(proto, h1, h2, 40000, 80, []byte("hello, translated world"))
		p, _ := ipview.Parse(pkt)
		if !nt.natOutbound(pkt, &p) {
			t.Fatal("not translated")
		}
		q, _ := ipview.Parse(pkt)
		wantPort := uint16(61000)
		if proto == ipview.ProtoUDP {
			wantPort = 40000 // only the probed TCP flow has a port mapping
		}
		if q.Src != pub || q.SrcPort != wantPort || p.Src != pub {
			t.Fatalf("proto %d: translated to %v:%d", proto, q.Src, q.SrcPort)
		}
		if fullChecksum(pkt[:20], nil) != 0 {
			t.Fatalf("proto %d: IP checksum wrong after the rewrite", proto)
		}
		off := 20 + 16
		if proto == ipview.ProtoUDP {
			off = 20 + 6
		}
		if got, want := binary.BigEndian.Uint16(pkt[off:]), l4Checksum(pkt); got != want {
			t.Fatalf("proto %d: transport checksum %#x, want %#x", proto, got, want)
		}
		// And back, for the reply.
		reply := ipv4Packet(proto, h2, pub, 80, wantPort, []byte("reply"))
		r, _ := ipview.Parse(reply)
		nt.natInbound(reply, &r)
		back, _ := ipview.Parse(reply)
		if back.Dst != h1 || back.DstPort != 40000 || fullChecksum(reply[:20], nil) != 0 {
			t.Fatalf("proto %d: reply translated to %v:%d", proto, back.Dst, back.DstPort)
		}
		if got, want := binary.BigEndian.Uint16(reply[off:]), l4Checksum(reply); got != want {
			t.Fatalf("proto %d: reply checksum %#x, want %#x", proto, got, want)
		}
	}
}
