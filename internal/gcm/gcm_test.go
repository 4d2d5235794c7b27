package gcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"
)

func needWide(t testing.TB) {
	t.Helper()
	if !accelerated {
		t.Skip("gcm: this CPU lacks VAES, VPCLMULQDQ or AVX-512; New returns crypto/cipher's GCM here")
	}
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestKeyExpansion checks the last round key against FIPS 197, Appendix A.
func TestKeyExpansion(t *testing.T) {
	needWide(t)
	for _, tc := range []struct{ key, last string }{
		{"2b7e151628aed2a6abf7158809cf4f3c", "d014f9a8c9ee2589e13f0cc8b6630ca6"},
		{"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "fe4890d1e6188d0b046df344706c631e"},
	} {
		g := newWide(unhex(tc.key))
		if got := hex.EncodeToString(g.keys[g.rounds*16 : g.rounds*16+16]); got != tc.last {
			t.Errorf("key %s: last round key %s, want %s", tc.key, got, tc.last)
		}
	}
}

// TestVectors runs the GCM specification's test cases 1, 2, 3, 4 (AES-128)
// and 13, 14 (AES-256).
func TestVectors(t *testing.T) {
	for _, tc := range []struct{ name, key, iv, pt, ad, ct, tag string }{
		{"1", "00000000000000000000000000000000", "000000000000000000000000", "", "", "", "58e2fccefa7e3061367f1d57a4e7455a"},
		{"2", "00000000000000000000000000000000", "000000000000000000000000", "00000000000000000000000000000000", "",
			"0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"},
		{"3", "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
			"d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255", "",
			"42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985", "4d5c2af327cd64a62cf35abd2ba6fab4"},
		{"4", "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
			"d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
			"feedfacedeadbeeffeedfacedeadbeefabaddad2",
			"42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091", "5bc94fbc3221a5db94fae95ae7121a47"},
		{"13", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
		{"14", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "00000000000000000000000000000000", "",
			"cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New(unhex(tc.key))
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(tc.ct + tc.tag)
			got := g.Seal(nil, unhex(tc.iv), unhex(tc.pt), unhex(tc.ad))
			if !bytes.Equal(got, want) {
				t.Fatalf("Seal = %x, want %x", got, want)
			}
			pt, err := g.Open(nil, unhex(tc.iv), want, unhex(tc.ad))
			if err != nil || !bytes.Equal(pt, unhex(tc.pt)) {
				t.Fatalf("Open = %x, %v; want %s", pt, err, tc.pt)
			}
		})
	}
}

func stdGCM(t testing.TB, key []byte) cipher.AEAD {
	a, err := newStd(key)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// lengths covers every tail shape (0-1100 octets: every partial block,
// every count of blocks below 32 with and without a 32-block round
// before it) and longer messages up to jumbo frames.
func lengths() []int {
	var l []int
	for n := 0; n <= 1100; n++ {
		l = append(l, n)
	}
	return append(l, 1023, 1024, 1025, 1400, 1420, 1500, 4095, 4096, 8999, 9000, 16383, 65535)
}

// TestAgainstStdlib seals and opens every length in lengths with both
// key sizes and several lengths of additional data, in place and not,
// and compares each result with crypto/cipher's.
func TestAgainstStdlib(t *testing.T) {
	needWide(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, keyLen := range []int{16, 32} {
		key := make([]byte, keyLen)
		for i := range key {
			key[i] = byte(rng.Uint32())
		}
		g, std := newWide(key), stdGCM(t, key)
		for _, n := range lengths() {
			for _, adLen := range []int{0, 8, 12, 1 + n%300} {
				nonce, ad, pt := make([]byte, 12), make([]byte, adLen), make([]byte, n)
				for _, b := range [][]byte{nonce, ad, pt} {
					for i := range b {
						b[i] = byte(rng.Uint32())
					}
				}
				want := std.Seal(nil, nonce, pt, ad)
				if got := g.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
					t.Fatalf("AES-%d, %d octets, %d of AD: Seal differs from crypto/cipher\ngot  %x\nwant %x", keyLen*8, n, adLen, got, want)
				}
				// In place, behind a prefix that must survive.
				buf := append([]byte("prefix"), pt...)
				sealed := g.Seal(buf[:6], nonce, buf[6:], ad)
				if !bytes.Equal(sealed[6:], want) || string(sealed[:6]) != "prefix" {
					t.Fatalf("AES-%d, %d octets: in-place Seal differs", keyLen*8, n)
				}
				opened, err := g.Open(sealed[6:6], nonce, sealed[6:], ad)
				if err != nil || !bytes.Equal(opened, pt) {
					t.Fatalf("AES-%d, %d octets: in-place Open = %v", keyLen*8, n, err)
				}
			}
		}
	}
}

// TestForgeries flips every bit of a sealed packet's ciphertext, tag and
// additional data in turn: each must fail Open and leave the buffer as it
// was (Open decrypts only after the tag matched).
func TestForgeries(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	g, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	nonce, ad := make([]byte, 12), []byte("spi-seq!")
	sealed := g.Seal(nil, nonce, bytes.Repeat([]byte("secret"), 30), ad)
	for i := range (len(sealed) + len(ad)) * 8 {
		ct, a := bytes.Clone(sealed), bytes.Clone(ad)
		if i < len(ct)*8 {
			ct[i/8] ^= 1 << (i % 8)
		} else {
			j := i - len(ct)*8
			a[j/8] ^= 1 << (j % 8)
		}
		forged := bytes.Clone(ct)
		if _, err := g.Open(ct[:0], nonce, ct, a); err == nil {
			t.Fatalf("bit %d flipped: Open succeeded", i)
		}
		if accelerated && !bytes.Equal(ct, forged) {
			t.Fatalf("bit %d flipped: Open changed the buffer of a forgery", i)
		}
	}
	for _, n := range []int{0, 1, 15} {
		if _, err := g.Open(nil, nonce, sealed[:n], ad); err == nil {
			t.Fatalf("Open of %d octets succeeded", n)
		}
	}
}

// TestCounterWraps starts the counter 20 blocks before 2^32: GCM counts
// in the last 32 bits only and wraps to zero there, keeping the nonce.
func TestCounterWraps(t *testing.T) {
	needWide(t)
	key := bytes.Repeat([]byte{3}, 16)
	g := newWide(key)
	b, _ := aes.NewCipher(key)
	var j0 [16]byte
	copy(j0[:], "twelve bytes")
	binary.BigEndian.PutUint32(j0[12:], 0xffffffec)
	for _, n := range []int{100, 320, 20 * 16, 600} {
		src := bytes.Repeat([]byte{0xa5}, n)
		dst := make([]byte, n)
		var mask [16]byte
		ctr(g.rounds, &g.keys, &j0, dst, src, &mask)
		want := make([]byte, n)
		var block, ks [16]byte
		copy(block[:], j0[:])
		b.Encrypt(ks[:], block[:])
		if mask != ks {
			t.Fatalf("mask %x, want %x", mask, ks)
		}
		for off := 0; off < n; off += 16 {
			binary.BigEndian.PutUint32(block[12:], binary.BigEndian.Uint32(block[12:])+1)
			b.Encrypt(ks[:], block[:])
			for i := off; i < min(off+16, n); i++ {
				want[i] = src[i] ^ ks[i-off]
			}
		}
		if !bytes.Equal(dst, want) {
			t.Fatalf("%d octets across the wrap: got %x, want %x", n, dst, want)
		}
	}
}

// TestSealAllocatesNothing holds sealing and opening in place to no
// allocation, as the ESP path needs.
func TestSealAllocatesNothing(t *testing.T) {
	needWide(t)
	g := newWide(make([]byte, 32))
	buf := make([]byte, 1400+TagSize)
	nonce, ad := make([]byte, 12), make([]byte, 8)
	allocs := testing.AllocsPerRun(100, func() {
		g.Seal(buf[:0], nonce, buf[:1400], ad)
		if _, err := g.Open(buf[:0], nonce, buf, ad); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per seal and open", allocs)
	}
}

func TestNewRejectsKeys(t *testing.T) {
	for _, n := range []int{0, 15, 24, 33} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New accepted a key of %d octets", n)
		}
	}
}

func FuzzSeal(f *testing.F) {
	f.Add(make([]byte, 16), make([]byte, 12), []byte("ad"), []byte("plaintext"))
	f.Add(make([]byte, 32), make([]byte, 12), []byte{}, bytes.Repeat([]byte{1}, 300))
	f.Fuzz(func(t *testing.T, key, nonce, ad, pt []byte) {
		if len(key) != 16 && len(key) != 32 || len(nonce) != 12 {
			return
		}
		g, err := New(key)
		if err != nil {
			t.Fatal(err)
		}
		want := stdGCM(t, key).Seal(nil, nonce, pt, ad)
		got := g.Seal(nil, nonce, pt, ad)
		if !bytes.Equal(got, want) {
			t.Fatalf("Seal differs from crypto/cipher: %x, want %x", got, want)
		}
		if opened, err := g.Open(nil, nonce, got, ad); err != nil || !bytes.Equal(opened, pt) {
			t.Fatalf("Open = %v", err)
		}
	})
}

func BenchmarkSeal(b *testing.B) { benchAEAD(b, false) }

func BenchmarkOpen(b *testing.B) { benchAEAD(b, true) }

// benchAEAD seals or opens in place with the wide implementation and with
// crypto/cipher's, at a small packet's size, a full one's and a jumbo's.
func benchAEAD(b *testing.B, open bool) {
	for _, impl := range []string{"wide", "crypto/cipher"} {
		for _, n := range []int{64, 1400, 8192} {
			b.Run(fmt.Sprintf("%s/%d", impl, n), func(b *testing.B) {
				key := make([]byte, 32)
				var g cipher.AEAD = stdGCM(b, key)
				if impl == "wide" {
					needWide(b)
					g = newWide(key)
				}
				nonce, ad := make([]byte, 12), make([]byte, 8)
				sealed := g.Seal(nil, nonce, make([]byte, n), ad)
				buf := make([]byte, len(sealed))
				b.SetBytes(int64(n))
				for b.Loop() {
					if !open {
						g.Seal(buf[:0], nonce, buf[:n], ad)
						continue
					}
					copy(buf, sealed)
					if _, err := g.Open(buf[:0], nonce, buf, ad); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkNew measures keying, which every Child SA pays twice.
func BenchmarkNew(b *testing.B) {
	key := make([]byte, 32)
	b.Run("wide", func(b *testing.B) {
		needWide(b)
		for b.Loop() {
			newWide(key)
		}
	})
	b.Run("crypto/cipher", func(b *testing.B) {
		for b.Loop() {
			stdGCM(b, key)
		}
	})
}
