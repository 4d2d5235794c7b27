package tunnel

import (
	"testing"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/probe"
)

// TestClassify checks the UDP/4500 demultiplexer: RFC 3948's framings
// from esp, and AutoVPN probes among the reserved SPIs.
func TestClassify(t *testing.T) {
	msg := append(probe.Preamble[:], 1, 0, 0, 4)
	tests := []struct {
		name string
		in   []byte
		kind esp.Kind
	}{
		{"keepalive", []byte{0xff}, esp.KindKeepalive},
		{"empty", nil, 0},
		{"short ESP", []byte{0, 0, 1, 0, 0, 0, 0}, 0},
		{"IKE behind the marker", append([]byte{0, 0, 0, 0}, make([]byte, 28)...), esp.KindIKE},
		{"ESP", []byte{0, 0, 1, 0, 0, 0, 0, 1, 9, 9}, esp.KindESP},
		{"probe", msg, kindProbe},
		{"bare preamble", probe.Preamble[:], kindProbe},
		{"truncated probe", msg[:12], 0},
		{"reserved SPI", []byte{0, 0, 0, 0xa5, 'X', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0},
	}
	for _, tt := range tests {
		if kind := classify(tt.in); kind != tt.kind {
			t.Errorf("%s: classify = %v, want %v", tt.name, kind, tt.kind)
		}
	}
}

// FuzzClassify checks that the demultiplexer hands each handler only
// datagrams of its framing.
func FuzzClassify(f *testing.F) {
	f.Add([]byte{0xff})
	f.Add([]byte{0, 0, 0, 0, 1, 2, 3, 4})
	f.Add(probe.Preamble[:])
	f.Add([]byte{0, 0, 1, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		switch classify(b) {
		case esp.KindIKE:
			if len(b) < esp.NonESPMarkerLen || [4]byte(b) != [4]byte{} {
				t.Fatal("IKE kind for a datagram without the non-ESP marker")
			}
		case kindProbe:
			if !probe.HasPreamble(b) {
				t.Fatal("probe kind for a datagram without the preamble")
			}
		case esp.KindESP:
			if !esp.Header(b).IsValid() || esp.Header(b).SPI() < esp.MinSPI {
				t.Fatal("ESP kind for a datagram without a valid SPI")
			}
		}
	})
}
