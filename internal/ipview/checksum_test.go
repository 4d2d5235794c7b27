package ipview

import (
	"encoding/binary"
	"testing"
)

func TestChecksum(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		{"empty", nil, 0xffff},
		{"RFC 1071 §3 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, ^uint16(0xddf2)},
		{"odd length pads with zero", []byte{0x12, 0x34, 0x56}, ^uint16(0x1234 + 0x5600)},
		{"carry folded", []byte{0xff, 0xff, 0x00, 0x01}, ^uint16(0x0001)},
	}
	for _, tt := range tests {
		if got := Checksum(tt.in); got != tt.want {
			t.Errorf("%s: Checksum = %#04x, want %#04x", tt.name, got, tt.want)
		}
	}
}

// TestChecksumUpdate checks the incremental update against a checksum
// computed over the changed bytes.
func TestChecksumUpdate(t *testing.T) {
	hdr := []byte{0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 0x40, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
	binary.BigEndian.PutUint16(hdr[10:], Checksum(hdr))
	for _, addr := range [][4]byte{{192, 0, 2, 1}, {0, 0, 0, 0}, {255, 255, 255, 255}, {10, 0, 0, 1}} {
		old := [4]byte(hdr[12:16])
		copy(hdr[12:16], addr[:])
		binary.BigEndian.PutUint16(hdr[10:], ChecksumUpdate(binary.BigEndian.Uint16(hdr[10:]), old[:], addr[:]))
		if Checksum(hdr) != 0 {
			t.Fatalf("after rewriting the source to %v the header does not verify", addr)
		}
	}
}

// TestPseudoSum checks the pseudo-header sum against the checksum of the
// pseudo-header written out (RFC 9293 §3.1, RFC 8200 §8.1).
func TestPseudoSum(t *testing.T) {
	for _, tc := range []struct {
		addrs  []byte
		proto  uint8
		length int
	}{
		{[]byte{10, 0, 0, 1, 192, 0, 2, 200}, ProtoTCP, 1380},
		{[]byte{255, 255, 255, 255, 255, 255, 255, 255}, ProtoUDP, 65515},
		{[]byte{0xfd, 0, 0xff, 0xee, 12: 0xab, 15: 1, 16: 0xfd, 31: 2}, ProtoTCP, 70000},
	} {
		var pseudo []byte
		pseudo = append(pseudo, tc.addrs...)
		if len(tc.addrs) == 8 {
			pseudo = append(pseudo, 0, tc.proto, byte(tc.length>>8), byte(tc.length))
		} else {
			pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(tc.length))
			pseudo = append(pseudo, 0, 0, 0, tc.proto)
		}
		if got, want := PseudoSum(tc.addrs, tc.proto, tc.length), ^Checksum(pseudo); got != want {
			t.Errorf("PseudoSum(%x, %d, %d) = %#04x, want %#04x", tc.addrs, tc.proto, tc.length, got, want)
		}
	}
}
