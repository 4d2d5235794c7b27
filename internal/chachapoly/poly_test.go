package chachapoly

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/poly1305"
)

// polySum is Poly1305 of m, whose length is a multiple of 16, here: its
// last block taken as tail takes the lengths block, so that runs of 16
// blocks and more go through the vector code.
func polySum(key *[32]byte, m []byte) [TagSize]byte {
	var p poly
	p.init(key)
	if n := len(m); n >= 16 {
		p.tail(m[:n-16], (*[16]byte)(m[n-16:]))
	}
	var tag [TagSize]byte
	p.finish(&tag)
	return tag
}

// TestPolyTail: the ciphertext of every length to 1,100 octets and some
// long ones, padded, and a lengths block, against x/crypto's Poly1305 of
// the same message written out, with the vector code on and off, for
// random keys and for the largest clamped r with octets all ones.
func TestPolyTail(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	ct := make([]byte, 9000)
	for _, ones := range []bool{false, true} {
		var key [32]byte
		var lengths [16]byte
		for i := range key {
			key[i] = byte(r.Uint32())
			if ones {
				key[i] = 0xff
			}
		}
		for i := range ct {
			ct[i] = byte(r.Uint32())
			if ones {
				ct[i] = 0xff
			}
		}
		for i := range lengths {
			lengths[i] = byte(r.Uint32())
		}
		ns := []int{}
		for n := 0; n <= 1100; n++ {
			ns = append(ns, n)
		}
		ns = append(ns, 1400, 1401, 1415, 1416, 8999, 9000)
		for _, vector := range []bool{true, false} {
			restore := setVector(vector)
			for _, n := range ns {
				// An AD block first, as ESP's: h is not zero when the
				// run starts.
				msg := append(bytes.Clone(lengths[:]), ct[:n]...)
				msg = append(append(msg, make([]byte, (16-n%16)%16)...), lengths[:]...)
				var want, got [16]byte
				poly1305.Sum(&want, msg, &key)
				var p poly
				p.init(&key)
				p.blocks(lengths[:])
				p.tail(ct[:n], &lengths)
				p.finish(&got)
				if got != want {
					t.Fatalf("vector %v, ones %v, %d octets: tag %x, want %x", vector, ones, n, got, want)
				}
			}
			restore()
		}
	}
}

// TestPolyRFC8439 runs RFC 8439's Poly1305 example (§2.5.2) with its
// message padded as the AEAD pads (the tag then differs from the RFC's,
// so the RFC's own message is checked through x/crypto) and appendix
// A.3's test vectors that are whole blocks.
func TestPolyRFC8439(t *testing.T) {
	for _, tc := range []struct{ key, msg, tag string }{
		// A.3 #1: zero key, zero message.
		{"0000000000000000000000000000000000000000000000000000000000000000",
			"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
			"00000000000000000000000000000000"},
		// A.3 #6: h reaches p exactly (r = 2, s = 0, message 2^128-1 ... ).
		{"0200000000000000000000000000000000000000000000000000000000000000",
			"ffffffffffffffffffffffffffffffff",
			"03000000000000000000000000000000"},
		// A.3 #7: r = 1, three blocks that sum past 2^130.
		{"0100000000000000000000000000000000000000000000000000000000000000",
			"ffffffffffffffffffffffffffffffff" + "f0ffffffffffffffffffffffffffffff" + "11000000000000000000000000000000",
			"05000000000000000000000000000000"},
		// A.3 #8.
		{"0100000000000000000000000000000000000000000000000000000000000000",
			"ffffffffffffffffffffffffffffffff" + "fbfefefefefefefefefefefefefefefe" + "01010101010101010101010101010101",
			"00000000000000000000000000000000"},
		// A.3 #9: r = 2, h = p − 1 + 2^128 ... (p reduction edge).
		{"0200000000000000000000000000000000000000000000000000000000000000",
			"fdffffffffffffffffffffffffffffff",
			"faffffffffffffffffffffffffffffff"},
	} {
		var key [32]byte
		hex.Decode(key[:], []byte(tc.key))
		msg, _ := hex.DecodeString(tc.msg)
		want, _ := hex.DecodeString(tc.tag)
		if got := polySum(&key, msg); !bytes.Equal(got[:], want) {
			t.Errorf("key %s msg %s: tag %x, want %s", tc.key[:8], tc.msg[:8], got, tc.tag)
		}
	}
}

// TestPolyAgainstXCrypto compares whole-block messages of every length to
// 64 blocks and some long ones with x/crypto's Poly1305, for random keys
// and for the largest clamped r with messages of all ones (the bounds of
// every limb and lane at their highest), with the vector runs on and off.
func TestPolyAgainstXCrypto(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	msg := make([]byte, 16*2000)
	var keys [][32]byte
	for range 8 {
		var k [32]byte
		for i := range k {
			k[i] = byte(r.Uint32())
		}
		keys = append(keys, k)
	}
	var maxKey [32]byte
	for i := range maxKey {
		maxKey[i] = 0xff
	}
	keys = append(keys, maxKey)
	lengths := []int{}
	for n := 0; n <= 64; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 88, 89, 90, 95, 96, 97, 1000, 2000)
	for _, vector := range []bool{true, false} {
		defer setVector(vector)()
		for ki, key := range keys {
			ones := ki == len(keys)-1
			for i := range msg {
				if ones {
					msg[i] = 0xff
				} else {
					msg[i] = byte(r.Uint32())
				}
			}
			for _, n := range lengths {
				m := msg[:16*n]
				var want [16]byte
				poly1305.Sum(&want, m, &key)
				if got := polySum(&key, m); got != want {
					t.Fatalf("vector %v, key %d, %d blocks: tag %x, want %x", vector, ki, n, got, want)
				}
			}
		}
	}
}

// TestPolyPieces: blocks given in pieces (as AD, ciphertext and lengths
// are) give the tag of the whole.
func TestPolyPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var key [32]byte
	for i := range key {
		key[i] = byte(r.Uint32())
	}
	msg := make([]byte, 16*400)
	for i := range msg {
		msg[i] = byte(r.Uint32())
	}
	for range 200 {
		a, b := 16*r.IntN(150), 16*r.IntN(150)
		end := a + b + 16*r.IntN(50)
		var p poly
		p.init(&key)
		p.blocks(msg[:a])
		p.blocks(msg[a : a+b])
		p.blocks(msg[a+b : end])
		var got, want [16]byte
		p.finish(&got)
		poly1305.Sum(&want, msg[:end], &key)
		if got != want {
			t.Fatalf("pieces %d+%d+%d: tag %x, want %x", a, b, end-a-b, got, want)
		}
	}
}

func FuzzPoly(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0xff}, 32+16*40))
	f.Add(make([]byte, 32+16*17))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 32 {
			return
		}
		var key [32]byte
		copy(key[:], b)
		m := b[32 : 32+(len(b)-32)&^15]
		var want [16]byte
		poly1305.Sum(&want, m, &key)
		if got := polySum(&key, m); got != want {
			t.Fatalf("%d blocks: tag %x, want %x", len(m)/16, got, want)
		}
	})
}

func BenchmarkPoly(b *testing.B) {
	var key [32]byte
	for _, n := range []int{64, 1408, 8192} {
		m := make([]byte, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				polySum(&key, m)
			}
		})
		b.Run(fmt.Sprint("xcrypto/", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			var tag [16]byte
			for b.Loop() {
				poly1305.Sum(&tag, m, &key)
			}
		})
	}
}
