package ipview

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// IPv4 builds an IPv4 packet with an 8-octet transport header.
func ipv4Packet(src, dst netip.Addr, proto uint8, sport, dport uint16, payload int) []byte {
	b := make([]byte, 20+8+payload)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

func ipv6Packet(src, dst netip.Addr, proto uint8, sport, dport uint16, payload int) []byte {
	b := make([]byte, 40+8+payload)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(8+payload))
	b[6] = proto
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	binary.BigEndian.PutUint16(b[40:], sport)
	binary.BigEndian.PutUint16(b[42:], dport)
	return b
}

func TestParse(t *testing.T) {
	a4, b4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	a6, b6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	frag := ipv4Packet(a4, b4, ProtoUDP, 1, 2, 0)
	binary.BigEndian.PutUint16(frag[6:], 100) // non-first fragment
	tests := []struct {
		name string
		in   []byte
		want Packet
		err  error
	}{
		{"ipv4 tcp", ipv4Packet(a4, b4, ProtoTCP, 1234, 80, 10), Packet{Src: a4, Dst: b4, Proto: ProtoTCP, SrcPort: 1234, DstPort: 80, HasPorts: true, Len: 38}, nil},
		{"ipv4 icmp", ipv4Packet(a4, b4, ProtoICMP, 0x0800, 0, 0), Packet{Src: a4, Dst: b4, Proto: ProtoICMP, SrcPort: 0x0800, HasPorts: true, Len: 28}, nil},
		{"ipv4 fragment", frag, Packet{Src: a4, Dst: b4, Proto: ProtoUDP, Len: 28}, nil},
		{"ipv6 udp", ipv6Packet(a6, b6, ProtoUDP, 53, 5353, 4), Packet{Src: a6, Dst: b6, Proto: ProtoUDP, SrcPort: 53, DstPort: 5353, HasPorts: true, Len: 52}, nil},
		{"empty", nil, Packet{}, ErrVersion},
		{"version 5", []byte{0x50, 0, 0, 0}, Packet{}, ErrVersion},
		{"short ipv4", ipv4Packet(a4, b4, ProtoTCP, 1, 2, 0)[:19], Packet{}, ErrTruncated},
		{"short ipv6", ipv6Packet(a6, b6, ProtoTCP, 1, 2, 0)[:39], Packet{}, ErrTruncated},
		{"ipv4 length beyond buffer", ipv4Packet(a4, b4, ProtoTCP, 1, 2, 0)[:27], Packet{}, ErrTruncated},
		{"ipv6 length beyond buffer", ipv6Packet(a6, b6, ProtoTCP, 1, 2, 0)[:47], Packet{}, ErrTruncated},
		{"ihl too small", append([]byte{0x44}, ipv4Packet(a4, b4, ProtoTCP, 1, 2, 0)[1:]...), Packet{}, ErrHeader},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if !errors.Is(err, tt.err) || (err == nil && got != tt.want) {
			t.Errorf("%s: Parse = %+v, %v; want %+v, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	pkt := ipv6Packet(netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), ProtoTCP, 1, 2, 100)
	if n := testing.AllocsPerRun(100, func() { Parse(pkt) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(ipv4Packet(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), ProtoTCP, 1, 2, 3))
	f.Add(ipv6Packet(netip.MustParseAddr("::1"), netip.MustParseAddr("::2"), ProtoUDP, 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if p.Len > len(b) || !p.Src.IsValid() || !p.Dst.IsValid() {
			t.Fatalf("accepted packet with bad fields: %+v", p)
		}
	})
}

func TestParseProto(t *testing.T) {
	tests := []struct {
		in   string
		want uint8
		ok   bool
	}{
		{"tcp", ProtoTCP, true}, {"UDP", ProtoUDP, true}, {"icmp", ProtoICMP, true},
		{"icmpv6", ProtoICMPv6, true}, {"ipv6-icmp", ProtoICMPv6, true}, {"sctp", ProtoSCTP, true},
		{"47", 47, true}, {"0", 0, true}, {"255", 255, true},
		{"256", 0, false}, {"-1", 0, false}, {"gre", 0, false}, {"", 0, false},
	}
	for _, tt := range tests {
		if got, ok := ParseProto(tt.in); ok != tt.ok || ok && got != tt.want {
			t.Errorf("ParseProto(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
