package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/oevpn/oevpn/internal/ipview"
)

// seg describes a TCP segment for the coalescing tests.
type seg struct {
	v6       bool
	sport    uint16 // 0: 40000
	seq      uint32
	ack      uint32 // 0: 1
	flags    byte   // 0: ACK
	window   uint16 // 0: 500
	tsval    uint32 // timestamp option value
	id       uint16 // IPv4 identification
	payload  int
	ipOption bool // an IPv4 header with options (not coalesced)
}

var (
	coSrc4, coDst4 = netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")
	coSrc6, coDst6 = netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
)

// build returns the segment as a packet with correct checksums; its
// payload octets count up from its sequence number, so that a payload in
// the wrong place shows.
func (s seg) build() []byte {
	if s.sport == 0 {
		s.sport = 40000
	}
	if s.ack == 0 {
		s.ack = 1
	}
	if s.flags == 0 {
		s.flags = tcpACK
	}
	if s.window == 0 {
		s.window = 500
	}
	ipLen := 20
	if s.v6 {
		ipLen = 40
	} else if s.ipOption {
		ipLen = 24
	}
	const tcpLen = 32 // with NOP, NOP, timestamps
	pkt := make([]byte, ipLen+tcpLen+s.payload)
	if s.v6 {
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-40))
		pkt[6], pkt[7] = ipview.ProtoTCP, 64
		src, dst := coSrc6.As16(), coDst6.As16()
		copy(pkt[8:], src[:])
		copy(pkt[24:], dst[:])
	} else {
		pkt[0] = 0x40 | byte(ipLen/4)
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[4:], s.id)
		pkt[6], pkt[8], pkt[9] = 0x40, 64, ipview.ProtoTCP
		src, dst := coSrc4.As4(), coDst4.As4()
		copy(pkt[12:], src[:])
		copy(pkt[16:], dst[:])
		if s.ipOption {
			pkt[20] = 1 // NOP ×4
			pkt[21], pkt[22], pkt[23] = 1, 1, 1
		}
		ipview.IPv4(pkt).SetChecksum()
	}
	tcp := pkt[ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], s.sport)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	tcp[12], tcp[13] = tcpLen/4<<4, s.flags
	binary.BigEndian.PutUint16(tcp[14:], s.window)
	tcp[20], tcp[21], tcp[22], tcp[23] = 1, 1, 8, 10
	binary.BigEndian.PutUint32(tcp[24:], s.tsval)
	for i := range s.payload {
		tcp[tcpLen+i] = byte(s.seq + uint32(i))
	}
	setTCPChecksum(pkt, ipLen)
	return pkt
}

// setTCPChecksum computes a packet's TCP checksum afresh.
func setTCPChecksum(pkt []byte, ipLen int) {
	tcp := pkt[ipLen:]
	binary.BigEndian.PutUint16(tcp[16:], ipview.PseudoSum(addrsOf(pkt), ipview.ProtoTCP, len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], ipview.Checksum(tcp))
}

// tcpChecksumValid reports whether a packet's TCP checksum verifies.
func tcpChecksumValid(pkt []byte, ipLen int) bool {
	tcp := pkt[ipLen:]
	sum := uint32(^ipview.Checksum(tcp)) + uint32(ipview.PseudoSum(addrsOf(pkt), ipview.ProtoTCP, len(tcp)))
	return uint16(sum+sum>>16) == 0xffff
}

// recordingGather keeps what the coalescer writes, concatenated.
type recordingGather struct{ writes [][]byte }

func (r *recordingGather) writeGather(iov [][]byte) error {
	if len(iov[0]) != vnetHdrLen {
		return fmt.Errorf("first slice of %d octets, not a virtio-net header", len(iov[0]))
	}
	r.writes = append(r.writes, bytes.Join(iov, nil))
	return nil
}

// resegment does what the kernel does with a written super-packet on its
// way out of a device (GSO): it completes the checksum the header asks
// for, checks it, and cuts the segments.
func resegment(t *testing.T, w []byte) [][]byte {
	t.Helper()
	vnet, pkt := w[:vnetHdrLen], w[vnetHdrLen:]
	if vnet[0] == 0 && vnet[1] == 0 {
		if !bytes.Equal(vnet, make([]byte, vnetHdrLen)) {
			t.Fatalf("single packet with header %x", vnet)
		}
		return [][]byte{pkt}
	}
	hdrLen := int(binary.NativeEndian.Uint16(vnet[2:]))
	gso := int(binary.NativeEndian.Uint16(vnet[4:]))
	csumStart := int(binary.NativeEndian.Uint16(vnet[6:]))
	csumOff := int(binary.NativeEndian.Uint16(vnet[8:]))
	v6 := ipview.Version(pkt) == 6
	ipLen, gsoType := 20, byte(vnetGSOTCPv4)
	if v6 {
		ipLen, gsoType = 40, vnetGSOTCPv6
	}
	if vnet[0] != vnetNeedsCsum || vnet[1] != gsoType || csumStart != ipLen || csumOff != 16 || gso == 0 {
		t.Fatalf("virtio-net header %x", vnet)
	}
	if v6 && int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) ||
		!v6 && (int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || ipview.Checksum(pkt[:20]) != 0) {
		t.Fatalf("super-packet's IP header %x, length %d", pkt[:ipLen], len(pkt))
	}
	// The device's part: the sum from csum_start, the field holding the
	// pseudo-header's.
	super := bytes.Clone(pkt)
	binary.BigEndian.PutUint16(super[csumStart+csumOff:], ipview.Checksum(super[csumStart:]))
	if !tcpChecksumValid(super, ipLen) {
		t.Fatal("the completed super-packet's checksum does not verify: wrong pseudo-header sum")
	}
	var segs [][]byte
	seq := binary.BigEndian.Uint32(pkt[ipLen+4:])
	psh := pkt[ipLen+13] & tcpPSH
	id := binary.BigEndian.Uint16(pkt[4:])
	for off := hdrLen; off < len(pkt); off += gso {
		end := min(off+gso, len(pkt))
		s := append(bytes.Clone(pkt[:hdrLen]), pkt[off:end]...)
		binary.BigEndian.PutUint32(s[ipLen+4:], seq+uint32(off-hdrLen))
		s[ipLen+13] &^= tcpPSH
		if end == len(pkt) {
			s[ipLen+13] |= psh
		}
		if v6 {
			binary.BigEndian.PutUint16(s[4:], uint16(len(s)-40))
		} else {
			binary.BigEndian.PutUint16(s[2:], uint16(len(s)))
			binary.BigEndian.PutUint16(s[4:], id)
			id++
			ipview.IPv4(s).SetChecksum()
		}
		setTCPChecksum(s, ipLen)
		segs = append(segs, s)
	}
	return segs
}

// coalesce runs one batch through a coalescer and returns the segment
// counts of what it wrote and the segments cut back out of it.
func coalesce(t *testing.T, in []seg) (counts []int, out [][]byte, orig [][]byte) {
	t.Helper()
	r := &recordingGather{}
	c := newCoalescer(len(in), r)
	for _, s := range in {
		pkt := s.build()
		orig = append(orig, pkt)
		p, err := ipview.Parse(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if !c.add(bytes.Clone(pkt), &p) {
			t.Fatalf("segment %+v not taken", s)
		}
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	for _, w := range r.writes {
		segs := resegment(t, w)
		counts = append(counts, len(segs))
		out = append(out, segs...)
	}
	return counts, out, orig
}

// run returns n back-to-back segments of mss from seq, IPv4 identifications
// counting up from id.
func run(n, mss int, seq uint32, tmpl seg) []seg {
	s := make([]seg, n)
	for i := range s {
		s[i] = tmpl
		s[i].seq = seq + uint32(i*mss)
		s[i].payload = mss
		s[i].id = tmpl.id + uint16(i)
	}
	return s
}

func TestCoalesce(t *testing.T) {
	const mss = 1348
	withLast := func(s []seg, f func(*seg)) []seg { f(&s[len(s)-1]); return s }
	with := func(s []seg, i int, f func(*seg)) []seg { f(&s[i]); return s }
	tests := []struct {
		name string
		in   []seg
		want []int // segments per write, in order
		// reordered: the segments come out in another order than in
		// (interleaved streams, each in its own order).
		reordered bool
	}{
		{"one stream", run(10, mss, 1000, seg{}), []int{10}, false},
		{"one stream, IPv6", run(10, mss, 1000, seg{v6: true}), []int{10}, false},
		{"a single segment is written as it came", run(1, mss, 1000, seg{}), []int{1}, false},
		{"short last segment ends it", append(withLast(run(4, mss, 1000, seg{}), func(s *seg) { s.payload = 100 }),
			run(2, mss, 1000+3*mss+100, seg{id: 4})...), []int{4, 2}, false},
		{"PSH ends it and is kept", with(run(6, mss, 1000, seg{}), 2, func(s *seg) { s.flags = tcpACK | tcpPSH }), []int{3, 3}, false},
		{"a gap in sequence", with(run(5, mss, 1000, seg{}), 3, func(s *seg) { s.seq += 7 }), []int{3, 1, 1}, false},
		// A segment that differs ends the run, and the next one cannot
		// go back to it: the stream's segments stay in order.
		{"another acknowledgment", with(run(5, mss, 1000, seg{}), 2, func(s *seg) { s.ack = 99 }), []int{2, 1, 2}, false},
		{"another window", with(run(5, mss, 1000, seg{}), 2, func(s *seg) { s.window = 9 }), []int{2, 1, 2}, false},
		{"other options (timestamp)", with(run(5, mss, 1000, seg{}), 2, func(s *seg) { s.tsval = 9 }), []int{2, 1, 2}, false},
		{"a longer segment than the first", append([]seg{{seq: 1000, payload: 1000}}, run(2, mss, 2000, seg{id: 1})...), []int{1, 2}, false},
		{"ECN echo (ECE) coalesces", run(4, mss, 1000, seg{flags: tcpACK | tcpECE}), []int{4}, false},
		{"ECE on some segments only", with(run(4, mss, 1000, seg{}), 2, func(s *seg) { s.flags |= tcpECE }), []int{2, 1, 1}, false},
		{"CWR stands alone", with(run(3, mss, 1000, seg{}), 0, func(s *seg) { s.flags |= 0x80 }), []int{1, 2}, false},
		{"FIN stands alone", with(run(4, mss, 1000, seg{}), 3, func(s *seg) { s.flags = tcpACK | 0x01 }), []int{3, 1}, false},
		{"pure ACKs stand alone", run(3, 0, 1000, seg{}), []int{1, 1, 1}, false},
		{"SYN stands alone", []seg{{flags: tcpSYN, seq: 5}}, []int{1}, false},
		{"at most 64 segments", run(70, 900, 1000, seg{}), []int{64, 6}, false},
		{"at most 64 KiB", run(60, mss, 1000, seg{}), []int{48, 12}, false},
		{"two streams interleaved", func() []seg {
			a, b := run(4, mss, 1000, seg{}), run(4, mss, 5000, seg{sport: 40001})
			return []seg{a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]}
		}(), []int{4, 4}, true},
		{"IPv4 and IPv6 interleaved", func() []seg {
			a, b := run(3, mss, 1000, seg{}), run(3, mss, 1000, seg{v6: true})
			return []seg{a[0], b[0], a[1], b[1], a[2], b[2]}
		}(), []int{3, 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			counts, out, orig := coalesce(t, tt.in)
			if fmt.Sprint(counts) != fmt.Sprint(tt.want) {
				t.Fatalf("writes of %v segments, want %v", counts, tt.want)
			}
			if len(out) != len(orig) {
				t.Fatalf("%d segments out of %d", len(out), len(orig))
			}
			if tt.reordered {
				// Each stream's segments, in its order: compare as sets
				// of packets after checking stream order below.
				seen := map[string]bool{}
				for _, o := range orig {
					seen[string(o)] = true
				}
				for _, o := range out {
					if !seen[string(o)] {
						t.Fatalf("segment %x was not sent", o)
					}
				}
				return
			}
			for i := range out {
				if !bytes.Equal(out[i], orig[i]) {
					at := 0
					for at < min(len(out[i]), len(orig[i])) && out[i][at] == orig[i][at] {
						at++
					}
					t.Fatalf("segment %d (%d octets, want %d) differs from octet %d on", i, len(out[i]), len(orig[i]), at)
				}
			}
		})
	}
}

// TestCoalesceOthers: what is not TCP is left to the caller.
func TestCoalesceOthers(t *testing.T) {
	c := newCoalescer(4, &recordingGather{})
	udp := ipv4Packet(ipview.ProtoUDP, coSrc4, coDst4, 1, 2, []byte("x"))
	p, _ := ipview.Parse(udp)
	if c.add(udp, &p) {
		t.Fatal("a UDP datagram was taken")
	}
	opts := seg{payload: 10, ipOption: true}.build()
	if p, _ = ipview.Parse(opts); c.add(opts, &p) {
		t.Fatal("a packet with IPv4 options was taken")
	}
	frag := seg{payload: 10}.build()
	binary.BigEndian.PutUint16(frag[6:], 0x2000) // more fragments
	ipview.IPv4(frag).SetChecksum()
	if p, _ = ipview.Parse(frag); c.add(frag, &p) {
		t.Fatal("a fragment was taken")
	}
}

// TestCoalesceAllocatesNothing: the per-packet path allocates nothing.
func TestCoalesceAllocatesNothing(t *testing.T) {
	segs := run(32, 1348, 1000, seg{})
	pkts := make([][]byte, len(segs))
	views := make([]ipview.Packet, len(segs))
	for i, s := range segs {
		pkts[i] = s.build()
		views[i], _ = ipview.Parse(pkts[i])
	}
	c := newCoalescer(len(pkts), nopGather{})
	if n := testing.AllocsPerRun(100, func() {
		for i := range pkts {
			c.add(pkts[i], &views[i])
		}
		c.flush()
	}); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

type nopGather struct{}

func (nopGather) writeGather([][]byte) error { return nil }

// FuzzCoalesce: any packets the peer sends (every one authenticated, none
// trusted) coalesce without a panic into super-packets that the kernel's
// segmentation turns back into the packets that went in.
func FuzzCoalesce(f *testing.F) {
	for _, in := range [][]seg{run(3, 100, 7, seg{}), run(2, 50, 7, seg{v6: true}), {{flags: tcpSYN}}} {
		var b []byte
		for _, s := range in {
			p := s.build()
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &recordingGather{}
		c := newCoalescer(16, r)
		var in [][]byte
		for len(b) >= 2 && len(in) < 16 {
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if n > len(b) {
				break
			}
			pkt := bytes.Clone(b[:n])
			b = b[n:]
			p, err := ipview.Parse(pkt)
			if err != nil {
				continue
			}
			pkt = pkt[:p.Len]
			orig := bytes.Clone(pkt)
			if c.add(pkt, &p) {
				in = append(in, orig)
			}
		}
		if err := c.flush(); err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, w := range r.writes {
			if len(w)-vnetHdrLen > maxPacket {
				t.Fatalf("a super-packet of %d octets", len(w)-vnetHdrLen)
			}
			if w[0] == 0 {
				total++
				continue
			}
			total += len(resegment(t, w))
		}
		if total != len(in) {
			t.Fatalf("%d packets out of %d", total, len(in))
		}
	})
}
