package chachapoly

import (
	"bytes"
	"crypto/cipher"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
)

func needWide(t testing.TB) {
	t.Helper()
	if !accelerated {
		t.Skip("chachapoly: this CPU lacks AVX-512; New returns x/crypto's ChaCha20-Poly1305 here")
	}
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func reference(t testing.TB, key []byte) cipher.AEAD {
	a, err := chacha20poly1305.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRFC8439 runs the AEAD example of RFC 8439, §2.8.2.
func TestRFC8439(t *testing.T) {
	key := unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
	nonce := unhex("070000004041424344454647")
	ad := unhex("50515253c0c1c2c3c4c5c6c7")
	pt := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	want := unhex("d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6 3dbea45e8ca9671282fafb69da92728b" +
		"1a71de0a9e060b2905d6a5b67ecd3b36 92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc" +
		"3ff4def08e4b7a9de576d26586cec64b 6116" + "1ae10b594f09e26a7e902ecbd0600691")
	g, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
		t.Fatalf("Seal = %x\nwant   %x", got, want)
	}
	if got, err := g.Open(nil, nonce, want, ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

// lengths covers every length to 2,100 octets (key stream from the first,
// second and third batch of sixteen blocks, every partial block) and
// longer ones to 64 KiB.
func lengths() []int {
	var l []int
	for n := 0; n <= 2100; n++ {
		l = append(l, n)
	}
	return append(l, 4095, 4096, 9000, 16383, 65535)
}

// TestAgainstXCrypto seals and opens every length in lengths with several
// lengths of additional data, in place and not, and compares each result
// with x/crypto's.
func TestAgainstXCrypto(t *testing.T) {
	needWide(t)
	rng := rand.New(rand.NewPCG(3, 4))
	key := make([]byte, KeySize)
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	ref := reference(t, key)
	g, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range lengths() {
		for _, adLen := range []int{0, 8, 12, 1 + n%40} {
			nonce, ad, pt := make([]byte, NonceSize), make([]byte, adLen), make([]byte, n)
			for _, b := range [][]byte{nonce, ad, pt} {
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
			}
			want := ref.Seal(nil, nonce, pt, ad)
			if got := g.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
				t.Fatalf("%d octets, %d of AD: Seal differs from x/crypto", n, adLen)
			}
			buf := append([]byte("prefix"), pt...)
			sealed := g.Seal(buf[:6], nonce, buf[6:], ad)
			if !bytes.Equal(sealed[6:], want) || string(sealed[:6]) != "prefix" {
				t.Fatalf("%d octets: in-place Seal differs", n)
			}
			opened, err := g.Open(sealed[6:6], nonce, sealed[6:], ad)
			if err != nil || !bytes.Equal(opened, pt) {
				t.Fatalf("%d octets: in-place Open = %v", n, err)
			}
		}
	}
}

// TestKeyStream compares sixteen blocks at a time with x/crypto's
// ChaCha20 from several counters, up to the last one RFC 8439 allows.
func TestKeyStream(t *testing.T) {
	needWide(t)
	key, nonce := bytes.Repeat([]byte{0x42}, KeySize), []byte("nonce-twelve")
	for _, ctr := range []uint32{0, 1, 7, 1 << 31, 0xfffffff0} {
		var st [16]uint32
		w, _ := New(key)
		var ks [batch]byte
		st = w.(*wide).start(nonce, &ks)
		st[12] = ctr
		blocks(&st, &ks)
		c, err := chacha20.NewUnauthenticatedCipher(key, nonce)
		if err != nil {
			t.Fatal(err)
		}
		c.SetCounter(ctr)
		want := make([]byte, batch)
		c.XORKeyStream(want, want)
		if !bytes.Equal(ks[:], want) {
			t.Fatalf("counter %#x: key stream differs from x/crypto", ctr)
		}
	}
}

// TestForgeries flips every bit of a sealed packet and of its additional
// data in turn: each must fail Open and leave the buffer as it was.
func TestForgeries(t *testing.T) {
	g, err := New(bytes.Repeat([]byte{9}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	nonce, ad := make([]byte, NonceSize), []byte("spi-seq!")
	// A short message (x/crypto's, which zeroes the buffer of a forgery)
	// and a long one (the vector code's, which leaves it as it was).
	for _, n := range []int{30, 120} {
		sealed := g.Seal(nil, nonce, bytes.Repeat([]byte("secret"), n), ad)
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
				t.Fatalf("%d octets, bit %d flipped: Open succeeded", 6*n, i)
			}
			if accelerated && 6*n > smallMax && !bytes.Equal(ct, forged) {
				t.Fatalf("%d octets, bit %d flipped: Open changed the buffer of a forgery", 6*n, i)
			}
		}
		for _, n := range []int{0, 1, 15} {
			if _, err := g.Open(nil, nonce, sealed[:n], ad); err == nil {
				t.Fatalf("Open of %d octets succeeded", n)
			}
		}
	}
}

// TestSealAllocatesNothing holds sealing and opening in place to no
// allocation, as the ESP path needs.
func TestSealAllocatesNothing(t *testing.T) {
	needWide(t)
	g, _ := New(make([]byte, KeySize))
	buf := make([]byte, 1400+TagSize)
	nonce, ad := make([]byte, NonceSize), make([]byte, 8)
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
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New accepted a key of %d octets", n)
		}
	}
}

func FuzzSeal(f *testing.F) {
	f.Add(make([]byte, KeySize), make([]byte, NonceSize), []byte("ad"), []byte("plaintext"))
	f.Add(make([]byte, KeySize), make([]byte, NonceSize), []byte{}, bytes.Repeat([]byte{1}, 1000))
	f.Fuzz(func(t *testing.T, key, nonce, ad, pt []byte) {
		if len(key) != KeySize || len(nonce) != NonceSize {
			return
		}
		g, err := New(key)
		if err != nil {
			t.Fatal(err)
		}
		want := reference(t, key).Seal(nil, nonce, pt, ad)
		got := g.Seal(nil, nonce, pt, ad)
		if !bytes.Equal(got, want) {
			t.Fatalf("Seal differs from x/crypto: %x, want %x", got, want)
		}
		if opened, err := g.Open(nil, nonce, got, ad); err != nil || !bytes.Equal(opened, pt) {
			t.Fatalf("Open = %v", err)
		}
	})
}

func BenchmarkSeal(b *testing.B) { benchAEAD(b, false) }

func BenchmarkOpen(b *testing.B) { benchAEAD(b, true) }

// benchAEAD seals or opens in place with this package's implementation
// and with x/crypto's, from a small packet's size to a jumbo's (x/crypto's
// takes up to smallMax here too).
func benchAEAD(b *testing.B, open bool) {
	for _, impl := range []string{"wide", "x/crypto"} {
		for _, n := range []int{64, 256, 1024, 1400, 8192} {
			b.Run(fmt.Sprintf("%s/%d", impl, n), func(b *testing.B) {
				key := make([]byte, KeySize)
				g := reference(b, key)
				if impl == "wide" {
					needWide(b)
					g, _ = New(key)
				}
				nonce, ad := make([]byte, NonceSize), make([]byte, 8)
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
