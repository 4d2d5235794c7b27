package ipview

import (
	"net/netip"
	"testing"
)

func TestIPv4View(t *testing.T) {
	// An IPv4 header with one option word (IHL 6), then 4 octets of payload.
	b := []byte{0x46, 0, 0, 28, 0, 0, 0x40, 0, 64, ProtoUDP, 0, 0, 10, 0, 0, 1, 192, 0, 2, 9, 1, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd}
	h := IPv4(b)
	h.SetChecksum()
	if !h.IsValid() || h.HeaderLength() != 24 || h.Protocol() != ProtoUDP || HeaderLen(b) != 24 {
		t.Fatalf("valid %v, header length %d, protocol %d", h.IsValid(), h.HeaderLength(), h.Protocol())
	}
	if h.Src() != netip.MustParseAddr("10.0.0.1") || h.Dst() != netip.MustParseAddr("192.0.2.9") || len(h.Payload()) != 4 || h.Payload()[0] != 0xaa {
		t.Fatalf("src %v dst %v payload % x", h.Src(), h.Dst(), h.Payload())
	}
	if Checksum(b[:24]) != 0 {
		t.Fatal("SetChecksum: the header does not verify")
	}
	old, a := h.Src().As4(), [4]byte{198, 51, 100, 7}
	h.SetSrc(a)
	h.UpdateChecksum(old[:], a[:])
	if h.Src() != netip.AddrFrom4(a) || Checksum(b[:24]) != 0 {
		t.Fatalf("after SetSrc and UpdateChecksum: src %v, checksum verifies %v", h.Src(), Checksum(b[:24]) == 0)
	}
	for _, bad := range [][]byte{nil, b[:19], {0x44, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, b[:23], append([]byte{0x65}, b[1:]...)} {
		if IPv4(bad).IsValid() {
			t.Errorf("% x is a valid IPv4 header", bad)
		}
	}
}

func TestIPv6View(t *testing.T) {
	b := make([]byte, 44)
	b[0], b[6] = 0x60, ProtoTCP
	h := IPv6(b)
	src, dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	h.SetSrc(src.As16())
	h.SetDst(dst.As16())
	if !h.IsValid() || h.NextHeader() != ProtoTCP || h.Src() != src || h.Dst() != dst || len(h.Payload()) != 4 || HeaderLen(b) != IPv6FixedSize {
		t.Fatalf("valid %v next %d src %v dst %v payload %d", h.IsValid(), h.NextHeader(), h.Src(), h.Dst(), len(h.Payload()))
	}
	if IPv6(b[:39]).IsValid() || IPv6(append([]byte{0x40}, b[1:]...)).IsValid() {
		t.Error("a short or IPv4 buffer is a valid IPv6 header")
	}
}
