package ipview

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// refSum is RFC 1071's sum as the RFC writes it: 16-bit big-endian words
// into 32 bits, the carries folded in at the end.
func refSum(b []byte) uint16 {
	var s uint64
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// TestSumAgainstReference sums every length to 600 octets and some large
// ones, at every alignment of the first 8, with Add and CopyAdd, in the
// vector loop and without it, against the reference.
func TestSumAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70000+8)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	lengths := []int{}
	for n := 0; n <= 600; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 1400, 1401, 9000, 65535, 70000)
	// All ones: the lanes' and the folds' carries at their largest.
	ones := bytes.Repeat([]byte{0xff}, 70000)
	for _, vector := range []bool{true, false} {
		defer setVector(vector)()
		for _, n := range lengths {
			for align := 0; align < 8; align++ {
				src := buf[align : align+n]
				want := refSum(src)
				if got := Sum(0).Add(src).Fold(); got != want {
					t.Fatalf("vector %v: Add of %d octets at +%d = %#04x, want %#04x", vector, n, align, got, want)
				}
				dst := make([]byte, n+3)
				if got := Sum(0).CopyAdd(dst[align%4:], src).Fold(); got != want {
					t.Fatalf("vector %v: CopyAdd of %d octets at +%d = %#04x, want %#04x", vector, n, align, got, want)
				}
				if !bytes.Equal(dst[align%4:align%4+n], src) {
					t.Fatalf("vector %v: CopyAdd of %d octets at +%d copied wrong", vector, n, align)
				}
			}
			if got, want := Sum(0).Add(ones[:n]).Fold(), refSum(ones[:n]); got != want {
				t.Fatalf("vector %v: Add of %d octets 0xff = %#04x, want %#04x", vector, n, got, want)
			}
		}
	}
}

// TestSumPieces sums data in pieces that start at even offsets, as a
// header, a payload and a pseudo-header are summed, and words added one
// by one.
func TestSumPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 3000)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	for i := 0; i < 200; i++ {
		cut1 := 2 * r.IntN(len(b)/4)
		cut2 := cut1 + 2*r.IntN((len(b)-cut1)/2)
		end := cut2 + r.IntN(len(b)-cut2)
		s := Sum(0).Add(b[:cut1]).CopyAdd(make([]byte, cut2-cut1), b[cut1:cut2]).Add(b[cut2:end])
		if got, want := s.Fold(), refSum(b[:end]); got != want {
			t.Fatalf("pieces %d/%d/%d: %#04x, want %#04x", cut1, cut2, end, got, want)
		}
		var w Sum
		for j := 0; j+1 < cut1; j += 2 {
			w = w.AddWord(binary.BigEndian.Uint16(b[j:]))
		}
		if got, want := w.Fold(), refSum(b[:cut1]); got != want {
			t.Fatalf("AddWord over %d octets: %#04x, want %#04x", cut1, got, want)
		}
	}
}

// TestCopyAddShortDst: a destination shorter than the source is a bug of
// the caller, caught before anything is written.
func TestCopyAddShortDst(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("CopyAdd into a shorter slice did not panic")
		}
	}()
	Sum(0).CopyAdd(make([]byte, 100), make([]byte, 101))
}

func FuzzSum(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, uint8(0))
	f.Add(bytes.Repeat([]byte{0xff}, 200), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8) {
		want := refSum(b)
		if got := Sum(0).Add(b).Fold(); got != want {
			t.Fatalf("Add = %#04x, want %#04x", got, want)
		}
		c := min(2*int(cut), len(b)&^1)
		dst := make([]byte, len(b))
		if got := Sum(0).Add(b[:c]).CopyAdd(dst[c:], b[c:]).Fold(); got != want || !bytes.Equal(dst[c:], b[c:]) {
			t.Fatalf("Add+CopyAdd at %d = %#04x, want %#04x", c, got, want)
		}
	})
}

func BenchmarkSum(b *testing.B) {
	for _, n := range []int{40, 1400, 65535} {
		src, dst := make([]byte, n), make([]byte, n)
		b.Run(fmt.Sprint("Add/", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				Sum(0).Add(src)
			}
		})
		b.Run(fmt.Sprint("CopyAdd/", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				Sum(0).CopyAdd(dst, src)
			}
		})
		b.Run(fmt.Sprint("copy/", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}
