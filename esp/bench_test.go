package esp

import (
	"fmt"
	"testing"
)

var benchSizes = []int{64, 512, 1400, 8192}

// BenchmarkSeal measures ESP encryption per packet, in place, for each
// transform and size; BenchmarkAEADSeal is the raw cipher.AEAD baseline.
func BenchmarkSeal(b *testing.B) {
	for _, tr := range Transforms {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", tr, n), func(b *testing.B) {
				out, _ := testPair(b, tr, false, 0)
				buf := make([]byte, Headroom+n+Tailroom)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if out.seq.Load() > 1<<31 {
						out.seq.Store(0)
					}
					if _, err := out.Seal(buf, Headroom, n, 4); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkOpen measures ESP decryption per packet, replay check included.
func BenchmarkOpen(b *testing.B) {
	for _, tr := range Transforms {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", tr, n), func(b *testing.B) {
				out, in := testPair(b, tr, false, 0)
				// Pre-seal a ring of packets with rising sequence numbers
				// and reset the window whenever the ring restarts.
				const ring = 256
				pkts := make([][]byte, ring)
				for i := range pkts {
					pkts[i] = sealPacket(b, out, innerPacket(false, n), 4)
				}
				buf := make([]byte, Headroom+n+out.transform.Overhead())
				b.SetBytes(int64(n))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i == ring {
						i = 0
						in.replay.init(DefaultReplayWindow)
					}
					p := pkts[i]
					copy(buf[Headroom:], p)
					if _, _, err := in.Open(buf, Headroom, len(p)); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkAEADSeal is the baseline: cipher.AEAD Seal of the same payload
// (plus the ESP trailer) in place.
func BenchmarkAEADSeal(b *testing.B) {
	benchAEAD(b, false)
}

// BenchmarkAEADOpen is the baseline for BenchmarkOpen.
func BenchmarkAEADOpen(b *testing.B) {
	benchAEAD(b, true)
}

func benchAEAD(b *testing.B, open bool) {
	for _, tr := range Transforms {
		if !tr.aead() {
			continue
		}
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", tr, n), func(b *testing.B) {
				c, err := newCrypter(tr, testKey(tr, 1))
				if err != nil {
					b.Fatal(err)
				}
				aead := c.aead
				pt := (n + 2 + 3) &^ 3
				buf := make([]byte, pt+aead.Overhead())
				aad := make([]byte, 8)
				// Like BenchmarkOpen, cycle through a ring of sealed
				// messages so both read their input from the same
				// level of the cache.
				const ring = 256
				nonces := make([][]byte, ring)
				sealed := make([][]byte, ring)
				for i := range sealed {
					nonces[i] = make([]byte, aead.NonceSize())
					nonces[i][0] = byte(i)
					sealed[i] = aead.Seal(nil, nonces[i], buf[:pt], aad)
				}
				b.SetBytes(int64(n))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i = (i + 1) % ring
					if open {
						copy(buf, sealed[i])
						if _, err := aead.Open(buf[:0], nonces[i], buf, aad); err != nil {
							b.Fatal(err)
						}
					} else {
						aead.Seal(buf[:0], nonces[i], buf[:pt], aad)
					}
				}
			})
		}
	}
}

// BenchmarkTable measures the SPI table at 1 to 100,000 entries: an
// insert and a remove (the control plane installing and deleting an SA),
// and a lookup (the datapath, per inbound packet).
func BenchmarkTable(b *testing.B) {
	for _, n := range []int{1, 1000, 10000, 100000} {
		var tab Table[*int]
		for i := range n {
			if err := tab.Insert(MinSPI+uint32(i)*2654435761%(1<<31), nil); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("insert+remove/entries=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tab.Insert(1<<31+7, nil); err != nil {
					b.Fatal(err)
				}
				tab.Remove(1<<31 + 7)
			}
		})
		b.Run(fmt.Sprintf("lookup/entries=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := tab.Lookup(MinSPI + uint32(i%n)*2654435761%(1<<31)); !ok {
					b.Fatal("missing")
				}
				i++
			}
		})
	}
}
