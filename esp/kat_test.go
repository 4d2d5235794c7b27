package esp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex in vector: %v", err)
	}
	return b
}

// TestKnownAnswers checks Seal and Open byte for byte against the ESP
// packets of draft-mcgrew-gcm-test-01 (AES-GCM) and RFC 7634 Appendix A
// (ChaCha20-Poly1305).
func TestKnownAnswers(t *testing.T) {
	sealed := 0
	for _, v := range espVectors {
		t.Run(v.name, func(t *testing.T) {
			tr, err := ParseTransform(v.transform)
			if err != nil {
				t.Fatal(err)
			}
			key := append(unhex(t, v.key), unhex(t, v.salt)...)
			iv, pt, ct := unhex(t, v.iv), unhex(t, v.plaintext), unhex(t, v.sealed)
			// The packet on the wire: SPI, low 32 bits of seq, IV, ciphertext, ICV.
			wire := binary.BigEndian.AppendUint32(nil, v.spi)
			wire = binary.BigEndian.AppendUint32(wire, uint32(v.seq))
			wire = append(append(wire, iv...), ct...)

			padLen := int(pt[len(pt)-2])
			nh := pt[len(pt)-1]
			inner := pt[:len(pt)-2-padLen]

			in, err := newSA(Config{Transform: tr, SPI: v.spi, Key: key, ESN: v.esn})
			if err != nil {
				t.Fatal(err)
			}
			in.replay.last = v.seq - 1 // as if the packets before it had arrived
			buf := make([]byte, Headroom+len(wire))
			copy(buf[Headroom:], wire)
			if got := in.aad(buf, Headroom, v.seq); !bytes.Equal(got, unhex(t, v.aad)) {
				t.Fatalf("AAD %x, vector has %x", got, unhex(t, v.aad))
			}
			gotInner, gotNH, err := in.Open(buf, Headroom, len(wire))
			if nh == NextHeaderNone {
				if !errors.Is(err, ErrDummy) {
					t.Fatalf("dummy packet: %v", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if gotNH != nh || !bytes.Equal(gotInner, inner) {
					t.Fatalf("Open: next header %d, inner %x; want %d, %x", gotNH, gotInner, nh, inner)
				}
			}

			// Seal reproduces the packet when the vector's padding is the
			// canonical one (1, 2, 3, … to the minimal length).
			out, err := newSA(Config{Transform: tr, SPI: v.spi, Key: key, ESN: v.esn})
			if err != nil {
				t.Fatal(err)
			}
			if want := (out.align - (len(inner)+2)%out.align) % out.align; want != padLen {
				t.Logf("vector pads %d octets where Seal pads %d: checking Open only", padLen, want)
				return
			}
			sbuf := make([]byte, Headroom+len(inner)+Tailroom)
			copy(sbuf[Headroom:], inner)
			got, err := out.seal(sbuf, Headroom, len(inner), nh, v.seq, iv)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wire) {
				t.Fatalf("Seal:\n got %x\nwant %x", got, wire)
			}
			sealed++
		})
	}
	if len(espVectors) < 16 {
		t.Fatalf("only %d vectors", len(espVectors))
	}
	t.Logf("%d vectors opened, %d sealed byte for byte", len(espVectors), sealed)
	if sealed < len(espVectors)/2 {
		t.Fatalf("only %d of %d vectors checked through Seal", sealed, len(espVectors))
	}
}

// TestIVFromSequence checks that the AEAD IV is the 64-bit sequence number,
// unique per packet (RFC 4106 §3.1), and the CBC IV is that number
// encrypted, never repeated.
func TestIVFromSequence(t *testing.T) {
	for _, tr := range Transforms {
		out, _ := testPair(t, tr, true, 0)
		seen := map[string]bool{}
		for i := 1; i <= 100; i++ {
			pkt := sealPacket(t, out, innerPacket(false, 40), 4)
			iv := pkt[headerLen : headerLen+tr.IVLen()]
			if tr.aead() && binary.BigEndian.Uint64(iv) != uint64(i) {
				t.Fatalf("%s: IV %x for packet %d", tr, iv, i)
			}
			if seen[string(iv)] {
				t.Fatalf("%s: IV %x repeated", tr, iv)
			}
			seen[string(iv)] = true
		}
	}
}
