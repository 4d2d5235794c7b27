package tunnel

import (
	"testing"

	"github.com/oevpn/oevpn/esp"
)

// TestSuperPacketSize: a super-packet of the size the device asks for, as
// Linux's TCP cuts it (whole MSS, 256 to 320 octets of the size kept for
// headers), leaves as one UDP GSO datagram once sealed with any AEAD
// transform, for each usual MSS of the MTU; and one more segment would not
// have fit (the size gives up no more than it must).
func TestSuperPacketSize(t *testing.T) {
	const maxUDP = 1<<16 - 1 - 20 - 8
	for _, mtu := range []int{1280, 1400, 1420, 1500, 4000, 8900, 9000} {
		g := superPacketSize(mtu)
		if g > maxPacket+1 {
			t.Errorf("MTU %d: %d octets, more than the stacks' 64 KiB", mtu, g)
		}
		for _, hdr := range []int{40, 52, 60, 72} { // IPv4, with timestamps, IPv6, with timestamps
			mss := mtu - hdr
			for _, reserved := range []int{256, 320} {
				segs := (g - 1 - reserved) / mss
				for _, tr := range []esp.Transform{esp.AESGCM128, esp.AESGCM256, esp.ChaCha20Poly1305} {
					if sealed := segs * (mtu + tr.Overhead()); sealed > maxUDP || segs > 64 {
						t.Errorf("MTU %d, %d-octet headers, %d reserved, %v: %d octets take %d segments, %d octets sealed: more than one datagram",
							mtu, hdr, reserved, tr, g, segs, sealed)
					}
				}
			}
		}
		if g <= maxPacket {
			// Smaller than the default: for IPv4 with timestamps
			// (Linux's default), one more segment would not have fit.
			mss := mtu - 52
			segs := (g - 1 - 320) / mss
			if over := (segs + 1) * (mtu + esp.AESGCM256.Overhead()); over <= maxUDP {
				t.Errorf("MTU %d: %d octets (%d segments); %d would fit (%d octets sealed)", mtu, g, segs, segs+1, over)
			}
		}
	}
	for _, mtu := range []int{8900, 9000} {
		if g := superPacketSize(mtu); g != maxPacket+1 {
			t.Errorf("MTU %d: %d octets, want the default %d (7 segments fit)", mtu, g, maxPacket+1)
		}
	}
}
