package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/internal/ipview"
)

// refChecksumValid reports whether a TCP or UDP packet's checksum
// verifies, summed as RFC 1071 writes it (not with ipview.Sum, which
// segmenting uses).
func refChecksumValid(pkt []byte, ipLen int, proto uint8) bool {
	var s uint64
	add := func(b []byte) {
		for len(b) >= 2 {
			s += uint64(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			s += uint64(b[0]) << 8
		}
	}
	add(addrsOf(pkt))
	l4 := pkt[ipLen:]
	s += uint64(proto) + uint64(len(l4))
	add(l4)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return s == 0xffff
}

// superOf returns the super-packet a device with offloads reads for a run
// of segments: a virtio-net header for TCP segmentation, the first
// segment's headers with the pseudo-header sum in the checksum field (as
// Linux leaves it), and every segment's payload.
func superOf(segs []seg) []byte {
	first := segs[0].build()
	ipLen := ipview.HeaderLen(first)
	hdrLen := ipLen + int(first[ipLen+12]>>4)*4
	pkt := append([]byte(nil), first[:hdrLen]...)
	for _, s := range segs {
		pkt = append(pkt, s.build()[hdrLen:]...)
	}
	last := segs[len(segs)-1]
	pkt[ipLen+13] = first[ipLen+13] | last.flags&(tcpFIN|tcpPSH)
	gsoType := byte(vnetGSOTCPv4)
	if segs[0].v6 {
		gsoType = vnetGSOTCPv6
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
	} else {
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		ipview.IPv4(pkt).SetChecksum()
	}
	binary.BigEndian.PutUint16(pkt[ipLen+16:], ipview.PseudoSum(addrsOf(pkt), ipview.ProtoTCP, len(pkt)-ipLen))
	return append(vnetHeader(vnetNeedsCsum, gsoType, hdrLen, segs[0].payload, ipLen, 16), pkt...)
}

// vnetHeader returns a virtio-net header.
func vnetHeader(flags, gsoType byte, hdrLen, gsoSize, csumStart, csumOffset int) []byte {
	h := make([]byte, vnetHdrLen)
	h[0], h[1] = flags, gsoType
	binary.NativeEndian.PutUint16(h[2:], uint16(hdrLen))
	binary.NativeEndian.PutUint16(h[4:], uint16(gsoSize))
	binary.NativeEndian.PutUint16(h[6:], uint16(csumStart))
	binary.NativeEndian.PutUint16(h[8:], uint16(csumOffset))
	return h
}

func segmentBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, vnetHdrLen+size)
	}
	return bufs, make([]int, n)
}

// TestSegmentTCP: a super-packet comes apart into exactly the segments it
// was made of, octet for octet: lengths, IPv4 identification and header
// checksum, sequence numbers, FIN and PSH on the last segment only, CWR
// on the first only, and the TCP checksums (the segments' own, built
// independently).
func TestSegmentTCP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		v6       bool
		ipOption bool
		n, mss   int
		lastLen  int
		first    byte // flags of the first segment
		last     byte // flags of the last
	}{
		{name: "IPv4", n: 10, mss: 1348, lastLen: 1348, last: tcpACK | tcpPSH},
		{name: "IPv6 short last", v6: true, n: 48, mss: 1328, lastLen: 17, last: tcpACK | tcpPSH | tcpFIN},
		{name: "IPv4 options, odd MSS", ipOption: true, n: 7, mss: 1361, lastLen: 1, last: tcpACK},
		{name: "CWR first", n: 3, mss: 536, lastLen: 536, first: tcpACK | tcpCWR, last: tcpACK | tcpPSH},
		{name: "one segment", n: 1, mss: 1000, lastLen: 999, last: tcpACK | tcpPSH},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segs := run(tc.n, tc.mss, 1<<32-5000, seg{v6: tc.v6, ipOption: tc.ipOption, ack: 77, tsval: 9, id: 0xfffe})
			segs[tc.n-1].payload = tc.lastLen
			segs[tc.n-1].flags = tc.last
			if tc.first != 0 {
				for i := range segs[:tc.n-1] {
					segs[i].flags = tc.first &^ tcpCWR
				}
				segs[0].flags = tc.first
			}
			bufs, sizes := segmentBufs(64, 1500)
			n, err := segment(superOf(segs), bufs, sizes, vnetHdrLen)
			if err != nil || n != tc.n {
				t.Fatalf("segment = %d, %v; want %d segments", n, err, tc.n)
			}
			for i, s := range segs {
				got, want := bufs[i][vnetHdrLen:vnetHdrLen+sizes[i]], s.build()
				if !bytes.Equal(got, want) {
					t.Fatalf("segment %d:\n got %x\nwant %x", i, got, want)
				}
				ipLen := ipview.HeaderLen(got)
				if !refChecksumValid(got, ipLen, ipview.ProtoTCP) || (!tc.v6 && ipview.Checksum(got[:ipLen]) != 0) {
					t.Fatalf("segment %d: checksum does not verify", i)
				}
			}
		})
	}
}

// TestSegmentUDP: a UDP super-packet (UDP_SEGMENT, USO) comes apart into
// datagrams with their own lengths and checksums, and a checksum that
// sums to zero goes out as 0xffff (RFC 768).
func TestSegmentUDP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		ipLen := 20
		pkt := make([]byte, 40+8+3*1000+10)
		if v6 {
			ipLen = 40
			pkt[0], pkt[6], pkt[7] = 0x60, ipview.ProtoUDP, 64
			copy(pkt[8:], coSrc6.AsSlice())
			copy(pkt[24:], coDst6.AsSlice())
		} else {
			pkt = pkt[20:]
			pkt[0], pkt[8], pkt[9] = 0x45, 64, ipview.ProtoUDP
			copy(pkt[12:], coSrc4.AsSlice())
			copy(pkt[16:], coDst4.AsSlice())
		}
		for i := ipLen + 8; i < len(pkt); i++ {
			pkt[i] = byte(i * 7)
		}
		binary.BigEndian.PutUint16(pkt[ipLen:], 4433)
		binary.BigEndian.PutUint16(pkt[ipLen+2:], 443)
		in := append(vnetHeader(vnetNeedsCsum, vnetGSOUDPL4, ipLen+8, 1000, ipLen, 6), pkt...)
		bufs, sizes := segmentBufs(8, 1500)
		n, err := segment(in, bufs, sizes, vnetHdrLen)
		if err != nil || n != 4 {
			t.Fatalf("IPv6 %v: segment = %d, %v; want 4 datagrams", v6, n, err)
		}
		for i := range n {
			d := bufs[i][vnetHdrLen : vnetHdrLen+sizes[i]]
			want := pkt[ipLen+8+i*1000 : min(ipLen+8+(i+1)*1000, len(pkt))]
			if !bytes.Equal(d[ipLen+8:], want) || int(binary.BigEndian.Uint16(d[ipLen+4:])) != len(d)-ipLen {
				t.Fatalf("IPv6 %v: datagram %d: wrong payload or UDP length", v6, i)
			}
			if !refChecksumValid(d, ipLen, ipview.ProtoUDP) {
				t.Fatalf("IPv6 %v: datagram %d: checksum does not verify", v6, i)
			}
		}
	}
	// A datagram whose sum is 0xffff: the checksum is sent as 0xffff.
	pkt := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, ipview.ProtoUDP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	// Pseudo-header 17 + 10 (twice the UDP length) + 10: the payload
	// brings the sum to 0xffff.
	binary.BigEndian.PutUint16(pkt[28:], 0xffff-17-10-10)
	bufs, sizes := segmentBufs(2, 1500)
	if n, err := segment(append(vnetHeader(vnetNeedsCsum, vnetGSOUDPL4, 28, 2, 20, 6), pkt...), bufs, sizes, 0); err != nil || n != 1 {
		t.Fatalf("segment = %d, %v", n, err)
	}
	if c := binary.BigEndian.Uint16(bufs[0][26:]); c != 0xffff {
		t.Fatalf("checksum of a datagram summing to 0xffff is %#04x, want 0xffff", c)
	}
}

// TestSegmentNone: a packet without GSO is copied whole, its checksum
// completed when the header says so and left alone when not.
func TestSegmentNone(t *testing.T) {
	pkt := seg{payload: 333, flags: tcpACK | tcpPSH}.build()
	partial := append([]byte(nil), pkt...)
	binary.BigEndian.PutUint16(partial[36:], ipview.PseudoSum(addrsOf(pkt), ipview.ProtoTCP, len(pkt)-20))
	bufs, sizes := segmentBufs(1, 1500)
	for _, in := range [][]byte{
		append(vnetHeader(vnetNeedsCsum, vnetGSONone, 0, 0, 20, 16), partial...),
		append(vnetHeader(0, vnetGSONone, 0, 0, 0, 0), pkt...),
	} {
		if n, err := segment(in, bufs, sizes, vnetHdrLen); err != nil || n != 1 {
			t.Fatalf("segment = %d, %v", n, err)
		}
		if got := bufs[0][vnetHdrLen : vnetHdrLen+sizes[0]]; !bytes.Equal(got, pkt) {
			t.Fatalf("got %x\nwant %x", got, pkt)
		}
	}
}

// TestSegmentMalformed: what cannot be segmented is an errVnet error, and
// nothing is written past a buffer; running out of buffers returns the
// segments made and tun.ErrTooManySegments.
func TestSegmentMalformed(t *testing.T) {
	good := superOf(run(5, 1000, 1, seg{}))
	good6 := superOf(run(5, 1000, 1, seg{v6: true}))
	with := func(b []byte, f func(b []byte)) []byte {
		b = append([]byte(nil), b...)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"header only, GSO", vnetHeader(vnetNeedsCsum, vnetGSOTCPv4, 52, 1000, 20, 16)},
		{"no segment size", with(good, func(b []byte) { b[4], b[5] = 0, 0 })},
		{"IPv6 packet as TCPv4", with(good6, func(b []byte) { b[1] = vnetGSOTCPv4 })},
		{"IPv4 packet as TCPv6", with(good, func(b []byte) { b[1] = vnetGSOTCPv6 })},
		{"unknown GSO type", with(good, func(b []byte) { b[1] = 3 })},
		{"ECN GSO", with(good, func(b []byte) { b[1] |= 0x80 })},
		{"IP version 5", with(good, func(b []byte) { b[vnetHdrLen] = 0x55 })},
		{"checksum start past IHL", with(good, func(b []byte) { b[6] = 24 })},
		{"checksum start in IPv6 header", with(good6, func(b []byte) { b[6] = 20 })},
		{"TCP checksum offset", with(good, func(b []byte) { b[8] = 6 })},
		{"UDP checksum offset", with(good, func(b []byte) { b[1] = vnetGSOUDPL4 })},
		{"TCP data offset 4", with(good, func(b []byte) { b[vnetHdrLen+20+12] = 4 << 4 })},
		{"TCP header past the end", with(good[:vnetHdrLen+20+32], func(b []byte) { b[vnetHdrLen+20+12] = 15 << 4 })},
		{"truncated TCP header", good[:vnetHdrLen+30]},
		{"no checksum room, no GSO", append(vnetHeader(vnetNeedsCsum, vnetGSONone, 0, 0, 100, 16), make([]byte, 110)...)},
		{"segment larger than the buffer", with(good, func(b []byte) { binary.NativeEndian.PutUint16(b[4:], 1500) })},
		{"packet larger than the buffer, no GSO", append(vnetHeader(0, vnetGSONone, 0, 0, 0, 0), make([]byte, 1501+vnetHdrLen)...)},
	} {
		bufs, sizes := segmentBufs(8, 1500)
		n, err := segment(tc.in, bufs, sizes, vnetHdrLen)
		if !errors.Is(err, errVnet) {
			t.Errorf("%s: segment = %d, %v; want errVnet", tc.name, n, err)
		}
	}
	bufs, sizes := segmentBufs(3, 1500)
	if n, err := segment(good, bufs, sizes, vnetHdrLen); n != 3 || !errors.Is(err, tun.ErrTooManySegments) {
		t.Errorf("5 segments into 3 buffers: %d, %v; want 3, ErrTooManySegments", n, err)
	}
}

// TestSegmentAllocatesNothing: the outbound path's segmenting is
// allocation-free.
func TestSegmentAllocatesNothing(t *testing.T) {
	in := superOf(run(40, 1348, 1, seg{}))
	bufs, sizes := segmentBufs(64, 1500)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := segment(in, bufs, sizes, vnetHdrLen); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per super-packet", n)
	}
}

// FuzzSegment: whatever the device hands over, segmenting returns an
// error or segments that fit their buffers, TCP and UDP ones with
// checksums that verify.
func FuzzSegment(f *testing.F) {
	f.Add(superOf(run(3, 100, 1, seg{})))
	f.Add(superOf(run(2, 77, 1, seg{v6: true, flags: tcpACK | tcpCWR})))
	f.Add(append(vnetHeader(vnetNeedsCsum, vnetGSOUDPL4, 28, 10, 20, 6), make([]byte, 70)...))
	f.Add(append(vnetHeader(vnetNeedsCsum, vnetGSONone, 0, 0, 20, 16), seg{payload: 10}.build()...))
	f.Fuzz(func(t *testing.T, in []byte) {
		bufs, sizes := segmentBufs(16, 1500)
		n, err := segment(in, bufs, sizes, vnetHdrLen)
		if err != nil && !errors.Is(err, errVnet) && !errors.Is(err, tun.ErrTooManySegments) {
			t.Fatalf("unexpected error %v", err)
		}
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) || in[1] == vnetGSONone {
			return
		}
		for i := range n {
			pkt := bufs[i][vnetHdrLen : vnetHdrLen+sizes[i]]
			ipLen := int(binary.NativeEndian.Uint16(in[6:]))
			proto := byte(ipview.ProtoTCP)
			if in[1] == vnetGSOUDPL4 {
				proto = ipview.ProtoUDP
			}
			if !refChecksumValid(pkt, ipLen, proto) {
				t.Fatalf("segment %d of %d: checksum does not verify", i, n)
			}
		}
	})
}

func BenchmarkSegment(b *testing.B) {
	for _, mss := range []int{1348, 8948} {
		n := 65000 / mss
		in := superOf(run(n, mss, 1, seg{}))
		bufs, sizes := segmentBufs(64, mss+100)
		b.Run(fmt.Sprint(n, "x", mss), func(b *testing.B) {
			b.SetBytes(int64(n * mss))
			for b.Loop() {
				segment(in, bufs, sizes, vnetHdrLen)
			}
		})
	}
}
