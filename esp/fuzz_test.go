package esp

import (
	"testing"
)

// FuzzOpen feeds arbitrary packets to Open for every transform: it must
// return an error or a packet, never panic, and never accept a packet that
// was not sealed with the key.
func FuzzOpen(f *testing.F) {
	for _, tr := range Transforms {
		out, _ := testPair(f, tr, false, 0)
		f.Add(uint8(tr), sealPacket(f, out, innerPacket(false, 60), 4))
		f.Add(uint8(tr), sealPacket(f, out, innerPacket(true, 1), 41))
	}
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, sel uint8, pkt []byte) {
		tr := Transforms[int(sel)%len(Transforms)]
		for _, esn := range []bool{false, true} {
			in, err := NewSA(Config{Transform: tr, SPI: 0x1000, Key: testKey(tr, 1), ESN: esn})
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, Headroom+len(pkt))
			copy(buf[Headroom:], pkt)
			inner, _, err := in.Open(buf, Headroom, len(pkt))
			if err == nil && len(inner) > len(pkt) {
				t.Fatalf("inner packet longer than the ESP packet")
			}
		}
	})
}

// FuzzClassify checks the UDP/4500 demultiplexer on arbitrary datagrams.
func FuzzClassify(f *testing.F) {
	f.Add([]byte{0xff})
	f.Add([]byte{0, 0, 0, 0, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 0xA5, 'A', 'U', 'T', 'O', 'V', 'P', 'N', 'P', 'R', 'O', 'B', 'E'})
	f.Add([]byte{0, 0, 1, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, err := Classify(b)
		if (err == nil) == (kind == 0) {
			t.Fatalf("Classify = %v, %v", kind, err)
		}
		switch kind {
		case KindIKE:
			if len(b) < NonESPMarkerLen {
				t.Fatal("IKE kind for a datagram shorter than the marker")
			}
		case KindESP:
			if len(b) < headerLen || Header(b).SPI() < MinSPI {
				t.Fatal("ESP kind for a datagram without a valid SPI")
			}
		}
	})
}
