package ike

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"hash"
	"math/big"
	"testing"
)

var prfIDs = []struct {
	name string
	id   uint16
	hash func() hash.Hash
	size int
}{
	{"PRF_HMAC_SHA2_256", PRF_HMAC_SHA2_256, sha256.New, 32},
	{"PRF_HMAC_SHA2_384", PRF_HMAC_SHA2_384, sha512.New384, 48},
	{"PRF_HMAC_SHA2_512", PRF_HMAC_SHA2_512, sha512.New, 64},
}

func mustPRF(tb testing.TB, id uint16) *prfFunc {
	tb.Helper()
	p, err := newPRF(id)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// handPRFPlus is prf+ written out as RFC 7296 §2.13 defines it:
//
//	prf+ (K,S) = T1 | T2 | T3 | T4 | ...
//	T1 = prf (K, S | 0x01)
//	T2 = prf (K, T1 | S | 0x02)
//	T3 = prf (K, T2 | S | 0x03)
func handPRFPlus(h func() hash.Hash, key, seed []byte, n int) []byte {
	var out, t []byte
	for i := 1; len(out) < n; i++ {
		m := hmac.New(h, key)
		var in []byte
		in = append(in, t...)
		in = append(in, seed...)
		in = append(in, byte(i))
		m.Write(in)
		t = m.Sum(nil)
		out = append(out, t...)
	}
	return out[:n]
}

func TestPRFPlus(t *testing.T) {
	key, seed := seq(0x11, 45), seq(0x80, 70)
	for _, p := range prfIDs {
		t.Run(p.name, func(t *testing.T) {
			prf := mustPRF(t, p.id)
			if prf.size != p.size {
				t.Fatalf("size = %d, want %d", prf.size, p.size)
			}
			for _, n := range []int{0, 1, p.size - 1, p.size, p.size + 1, 2 * p.size, 7*p.size + 3, 255 * p.size} {
				got := prf.plus(key, seed, n)
				if want := handPRFPlus(p.hash, key, seed, n); !bytes.Equal(got, want) {
					t.Errorf("prf+ of %d octets:\n got %x\nwant %x", n, got, want)
				}
			}
			// prf+ output is a stream: a shorter request is a prefix.
			long := prf.plus(key, seed, 3*p.size)
			if short := prf.plus(key, seed, p.size+5); !bytes.Equal(short, long[:p.size+5]) {
				t.Errorf("prf+ of %d octets is not a prefix of a longer output", p.size+5)
			}
			// Only 255 blocks exist (the counter is one octet).
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("prf+ of 255 blocks and one octet did not panic")
					}
				}()
				prf.plus(key, seed, 255*p.size+1)
			}()
		})
	}
}

// TestPRFVectors checks the PRFs against RFC 4868 §2.7.1 (PRF-1 to PRF-6,
// which are RFC 4231's test cases 1-4, 6 and 7).
func TestPRFVectors(t *testing.T) {
	aa131 := bytes.Repeat([]byte{0xaa}, 131)
	vectors := []struct {
		name      string
		key, data []byte
		sha256    string
		sha384    string
		sha512    string
	}{
		{"PRF-1", bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"),
			"b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
			"afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c faea9ea9076ede7f4af152e8b2fa9cb6",
			"87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"},
		{"PRF-2", []byte("Jefe"), []byte("what do ya want for nothing?"),
			"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
			"af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e 8e2240ca5e69e2c78b3239ecfab21649",
			"164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554 9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"},
		{"PRF-3", bytes.Repeat([]byte{0xaa}, 20), bytes.Repeat([]byte{0xdd}, 50),
			"773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
			"88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b 2a5ab39dc13814b94e3ab6e101a34f27",
			"fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39 bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb"},
		{"PRF-4", seq(0x01, 25), bytes.Repeat([]byte{0xcd}, 50),
			"82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
			"3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e 6801dd23c4a7d679ccf8a386c674cffb",
			"b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd"},
		{"PRF-5", aa131, []byte("Test Using Larger Than Block-Size Key - Hash Key First"),
			"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
			"4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6 0c2ef6ab4030fe8296248df163f44952",
			"80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352 6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"},
		{"PRF-6", aa131, []byte("This is a test using a larger than block-size key and a larger than block-size data. " +
			"The key needs to be hashed before being used by the HMAC algorithm."),
			"9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
			"6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5 a678cc31e799176d3860e6110c46523e",
			"e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944 b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58"},
	}
	for _, v := range vectors {
		for _, p := range []struct {
			id   uint16
			want string
		}{{PRF_HMAC_SHA2_256, v.sha256}, {PRF_HMAC_SHA2_384, v.sha384}, {PRF_HMAC_SHA2_512, v.sha512}} {
			prf := mustPRF(t, p.id)
			if got := prf.sum(v.key, v.data); !bytes.Equal(got, unhex(t, p.want)) {
				t.Errorf("%s PRF %d:\n got %x\nwant %s", v.name, p.id, got, p.want)
			}
			// sum takes its data in pieces; the pieces are concatenated.
			if got := prf.sum(v.key, v.data[:3], nil, v.data[3:]); !bytes.Equal(got, unhex(t, p.want)) {
				t.Errorf("%s PRF %d with split data: got %x", v.name, p.id, got)
			}
		}
	}
}

func TestPRFUnsupported(t *testing.T) {
	for _, id := range []uint16{0, 1, 2, 4, 8, 0xffff} {
		if _, err := newPRF(id); !errors.Is(err, ErrUnsupported) {
			t.Errorf("newPRF(%d) = %v, want ErrUnsupported", id, err)
		}
	}
}

var dhCases = []struct {
	name           string
	id             uint16
	keLen, zzLen   int
	invalidPoints  []string
	invalidLengths []int
}{
	{"curve25519", DH_CURVE25519, 32, 32, []string{
		// Low-order points (RFC 7748 §6.1: the all-zero output must be refused).
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p, that is 0
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
	}, []int{0, 31, 33, 64}},
	{"ecp256", DH_ECP_256, 64, 32, []string{
		"0000000000000000000000000000000000000000000000000000000000000000" +
			"0000000000000000000000000000000000000000000000000000000000000000",
		// The generator with the last bit of y flipped: not on the curve.
		"6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296" +
			"4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f4",
		// x = p: out of range.
		"ffffffff00000001000000000000000000000000ffffffffffffffffffffffff" +
			"4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
	}, []int{0, 32, 63, 65, 33}},
	{"modp2048", DH_MODP_2048, 256, 256, nil, []int{0, 255, 257, 128}},
}

// TestDH runs each group between two parties: both must agree, with KE data
// of the length RFC 7296 §3.4, RFC 5903 and RFC 8031 prescribe.
func TestDH(t *testing.T) {
	for _, c := range dhCases {
		t.Run(c.name, func(t *testing.T) {
			g, err := newDH(c.id)
			if err != nil {
				t.Fatal(err)
			}
			if g.id() != c.id {
				t.Errorf("id() = %d, want %d", g.id(), c.id)
			}
			for range 3 {
				privA, pubA, err := g.generate()
				if err != nil {
					t.Fatal(err)
				}
				privB, pubB, err := g.generate()
				if err != nil {
					t.Fatal(err)
				}
				if len(pubA) != c.keLen || len(pubB) != c.keLen {
					t.Fatalf("KE data of %d and %d octets, want %d", len(pubA), len(pubB), c.keLen)
				}
				if bytes.Equal(pubA, pubB) {
					t.Fatal("two key pairs with the same public value")
				}
				zzA, err := g.shared(privA, pubB)
				if err != nil {
					t.Fatal(err)
				}
				zzB, err := g.shared(privB, pubA)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(zzA, zzB) {
					t.Fatalf("parties disagree:\n%x\n%x", zzA, zzB)
				}
				if len(zzA) != c.zzLen {
					t.Fatalf("shared secret of %d octets, want %d", len(zzA), c.zzLen)
				}
			}
		})
	}
	for _, id := range []uint16{0, 2, 5, 15, 20, 21, 30, 32} {
		if _, err := newDH(id); !errors.Is(err, ErrUnsupported) {
			t.Errorf("newDH(%d) = %v, want ErrUnsupported", id, err)
		}
	}
}

// TestDHBadKE feeds invalid peer values: wrong lengths, the MODP values
// RFC 6989 §2.1 excludes and points not on (or of low order on) the curve.
func TestDHBadKE(t *testing.T) {
	for _, c := range dhCases {
		t.Run(c.name, func(t *testing.T) {
			g, err := newDH(c.id)
			if err != nil {
				t.Fatal(err)
			}
			priv, pub, err := g.generate()
			if err != nil {
				t.Fatal(err)
			}
			var bad [][]byte
			for _, n := range c.invalidLengths {
				b := make([]byte, n)
				copy(b, pub)
				bad = append(bad, b)
			}
			for _, s := range c.invalidPoints {
				bad = append(bad, unhex(t, s))
			}
			if c.id == DH_MODP_2048 {
				p := modp2048.p
				one := big.NewInt(1)
				for _, v := range []*big.Int{
					big.NewInt(0), one, new(big.Int).Sub(p, one), p, new(big.Int).Add(p, one),
					new(big.Int).Sub(new(big.Int).Lsh(one, 2048), one),
				} {
					bad = append(bad, v.FillBytes(make([]byte, 256)))
				}
			}
			for _, b := range bad {
				if zz, err := g.shared(priv, b); err == nil {
					t.Errorf("KE %x accepted, shared secret %x", b, zz)
				} else if !errors.Is(err, ErrMalformed) {
					t.Errorf("KE %x: err = %v, want ErrMalformed", b, err)
				}
			}
			// The range check is tight: 2 and p-2 are accepted.
			if c.id == DH_MODP_2048 {
				for _, v := range []*big.Int{big.NewInt(2), new(big.Int).Sub(modp2048.p, big.NewInt(2))} {
					if _, err := g.shared(priv, v.FillBytes(make([]byte, 256))); err != nil {
						t.Errorf("MODP KE %v refused: %v", v, err)
					}
				}
			}
		})
	}
}

// skSuite is one IKE SA protection suite: an ENCR transform and, for
// AES-CBC, an INTEG transform.
type skSuite struct {
	name  string
	encr  Transform
	integ uint16
	prf   uint16
}

var skSuites = []skSuite{
	{"AES-GCM-128", Transform{TransformENCR, ENCR_AES_GCM_16, 128}, AUTH_NONE, PRF_HMAC_SHA2_256},
	{"AES-GCM-256", Transform{TransformENCR, ENCR_AES_GCM_16, 256}, AUTH_NONE, PRF_HMAC_SHA2_384},
	{"ChaCha20-Poly1305", Transform{TransformENCR, ENCR_CHACHA20_POLY1305, 0}, AUTH_NONE, PRF_HMAC_SHA2_512},
	{"AES-CBC-256-HMAC-SHA2-256-128", Transform{TransformENCR, ENCR_AES_CBC, 256}, AUTH_HMAC_SHA2_256_128, PRF_HMAC_SHA2_256},
	{"AES-CBC-256-HMAC-SHA2-384-192", Transform{TransformENCR, ENCR_AES_CBC, 256}, AUTH_HMAC_SHA2_384_192, PRF_HMAC_SHA2_384},
	{"AES-CBC-256-HMAC-SHA2-512-256", Transform{TransformENCR, ENCR_AES_CBC, 256}, AUTH_HMAC_SHA2_512_256, PRF_HMAC_SHA2_512},
	{"AES-CBC-128-HMAC-SHA2-256-128", Transform{TransformENCR, ENCR_AES_CBC, 128}, AUTH_HMAC_SHA2_256_128, PRF_HMAC_SHA2_256},
}

func (s skSuite) suite() Suite {
	return Suite{Encr: s.encr, PRF: s.prf, Integ: s.integ, DH: DH_CURVE25519}
}

// newTestSKCipher builds a cipher with keys derived from label.
func newTestSKCipher(tb testing.TB, s skSuite, label byte) *skCipher {
	tb.Helper()
	e, err := newEncrSpec(s.encr)
	if err != nil {
		tb.Fatal(err)
	}
	var in integSpec
	if !e.aead {
		if in, err = newIntegSpec(s.integ); err != nil {
			tb.Fatal(err)
		}
	}
	c, err := newSKCipher(e, in, seq(label, e.keyLen+e.salt), seq(label+0x80, in.keyLen))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// skHeader is an IKE header and SK payload header, the AAD of seal.
func skHeader() []byte {
	h := Header{SPIi: 0x0102030405060708, SPIr: 0x1112131415161718, NextPayload: PayloadSK,
		Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: 1, Length: 0x1234}
	return append(h.marshal(nil), byte(PayloadIDi), 0, 0x12, 0x34)
}

func TestSKCipherRoundTrip(t *testing.T) {
	for _, s := range skSuites {
		t.Run(s.name, func(t *testing.T) {
			c := newTestSKCipher(t, s, 1)
			hdr := skHeader()
			for _, n := range []int{0, 1, 14, 15, 16, 17, 31, 32, 100, 1500} {
				pt := seq(byte(n), n)
				sealed, err := c.seal(append([]byte(nil), hdr...), pt)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(sealed[:len(hdr)], hdr) {
					t.Fatalf("seal changed the header")
				}
				ctLen := n + 1 // pad length octet
				if c.aead == nil {
					ctLen = (ctLen + 15) / 16 * 16
				}
				if want := len(hdr) + c.ivLen() + ctLen + c.icvLen; len(sealed) != want {
					t.Errorf("%d octets sealed into %d, want %d", n, len(sealed), want)
				}
				got, err := c.open(sealed, len(hdr))
				if err != nil {
					t.Fatalf("open of %d octets: %v", n, err)
				}
				if !bytes.Equal(got, pt) {
					t.Fatalf("open of %d octets:\n got %x\nwant %x", n, got, pt)
				}
			}
			// Two seals of the same message use different IVs.
			a, _ := c.seal(append([]byte(nil), hdr...), seq(0, 20))
			b, _ := c.seal(append([]byte(nil), hdr...), seq(0, 20))
			if bytes.Equal(a, b) {
				t.Errorf("two seals are identical")
			}
		})
	}
}

// TestSKCipherTamper flips every bit of a sealed message, header included
// (it is authenticated too), truncates it at every length and appends to
// it: open must fail every time.
func TestSKCipherTamper(t *testing.T) {
	for _, s := range skSuites {
		t.Run(s.name, func(t *testing.T) {
			c := newTestSKCipher(t, s, 1)
			hdr := skHeader()
			for _, n := range []int{0, 33} {
				sealed, err := c.seal(append([]byte(nil), hdr...), seq(7, n))
				if err != nil {
					t.Fatal(err)
				}
				for i := range len(sealed) * 8 {
					b := append([]byte(nil), sealed...)
					b[i/8] ^= 1 << (i % 8)
					if pt, err := c.open(b, len(hdr)); err == nil {
						t.Fatalf("bit %d flipped: open succeeded with %x", i, pt)
					} else if !errors.Is(err, ErrIntegrity) {
						t.Errorf("bit %d flipped: err = %v, want ErrIntegrity", i, err)
					}
				}
				for k := range len(sealed) {
					if pt, err := c.open(sealed[:k], len(hdr)); err == nil {
						t.Fatalf("truncated to %d octets: open succeeded with %x", k, pt)
					}
				}
				if _, err := c.open(append(append([]byte(nil), sealed...), 0), len(hdr)); err == nil {
					t.Fatalf("open succeeded with an octet appended")
				}
				// The AAD boundary is part of the check.
				if _, err := c.open(sealed, len(hdr)-1); err == nil {
					t.Fatalf("open succeeded with the SK body offset moved")
				}
				// The other direction's keys do not open it.
				if _, err := newTestSKCipher(t, s, 2).open(sealed, len(hdr)); !errors.Is(err, ErrIntegrity) {
					t.Fatalf("open with other keys: %v, want ErrIntegrity", err)
				}
			}
		})
	}
}

// TestSKCipherBadPadding builds authentic SK payloads whose plaintext is
// malformed (a pad length beyond the plaintext, a CBC ciphertext that is not
// a whole number of blocks): open must refuse them without panicking.
func TestSKCipherBadPadding(t *testing.T) {
	hdr := skHeader()
	for _, s := range skSuites {
		t.Run(s.name, func(t *testing.T) {
			c := newTestSKCipher(t, s, 1)
			iv := seq(0x55, c.ivLen())
			var msgs [][]byte
			if c.aead != nil {
				for _, pt := range [][]byte{{0xff}, append(seq(0, 15), 16), {}} {
					nonce := append(append([]byte(nil), c.salt...), iv...)
					out := append(append([]byte(nil), hdr...), iv...)
					msgs = append(msgs, c.aead.Seal(out, nonce, pt, hdr))
				}
			} else {
				mac := func(b []byte) []byte {
					m := hmac.New(c.integ, c.intKey)
					m.Write(b)
					return append(b, m.Sum(nil)[:c.icvLen]...)
				}
				for _, pt := range [][]byte{append(seq(0, 15), 16), append(seq(0, 15), 0xff)} {
					out := append(append([]byte(nil), hdr...), iv...)
					ct := make([]byte, len(pt))
					cipher.NewCBCEncrypter(c.block, iv).CryptBlocks(ct, pt)
					msgs = append(msgs, mac(append(out, ct...)))
				}
				// Not a whole block, and no block at all.
				msgs = append(msgs, mac(append(append(append([]byte(nil), hdr...), iv...), seq(0, aes.BlockSize+1)...)))
				msgs = append(msgs, mac(append(append([]byte(nil), hdr...), iv...)))
			}
			for i, m := range msgs {
				pt, err := c.open(m, len(hdr))
				if err == nil {
					t.Errorf("message %d: open succeeded with %x", i, pt)
				} else if errors.Is(err, ErrIntegrity) {
					t.Errorf("message %d: err = %v, want a format error (the ICV is valid)", i, err)
				}
			}
		})
	}
}

func TestTransformSpecs(t *testing.T) {
	for _, tt := range []struct {
		t       Transform
		keyLen  int
		salt    int
		aead    bool
		wantErr bool
	}{
		{Transform{TransformENCR, ENCR_AES_GCM_16, 128}, 16, 4, true, false},
		{Transform{TransformENCR, ENCR_AES_GCM_16, 256}, 32, 4, true, false},
		{Transform{TransformENCR, ENCR_AES_GCM_16, 192}, 0, 0, false, true},
		{Transform{TransformENCR, ENCR_AES_GCM_16, 0}, 0, 0, false, true},
		{Transform{TransformENCR, ENCR_CHACHA20_POLY1305, 0}, 32, 4, true, false},
		{Transform{TransformENCR, ENCR_CHACHA20_POLY1305, 256}, 0, 0, false, true},
		{Transform{TransformENCR, ENCR_AES_CBC, 128}, 16, 0, false, false},
		{Transform{TransformENCR, ENCR_AES_CBC, 256}, 32, 0, false, false},
		{Transform{TransformENCR, ENCR_AES_CBC, 0}, 0, 0, false, true},
		{Transform{TransformENCR, 3, 0}, 0, 0, false, true}, // 3DES
	} {
		e, err := newEncrSpec(tt.t)
		if (err != nil) != tt.wantErr {
			t.Errorf("newEncrSpec(%v) err = %v, want error %v", tt.t, err, tt.wantErr)
			continue
		}
		if err == nil && (e.keyLen != tt.keyLen || e.salt != tt.salt || e.aead != tt.aead) {
			t.Errorf("newEncrSpec(%v) = %+v", tt.t, e)
		}
	}
	for _, tt := range []struct {
		id             uint16
		keyLen, icvLen int
	}{{AUTH_HMAC_SHA2_256_128, 32, 16}, {AUTH_HMAC_SHA2_384_192, 48, 24}, {AUTH_HMAC_SHA2_512_256, 64, 32}} {
		in, err := newIntegSpec(tt.id)
		if err != nil || in.keyLen != tt.keyLen || in.icvLen != tt.icvLen {
			t.Errorf("newIntegSpec(%d) = %+v, %v; want key %d ICV %d (RFC 4868 §2.1)", tt.id, in, err, tt.keyLen, tt.icvLen)
		}
	}
	for _, id := range []uint16{AUTH_NONE, 2, 5, 15} {
		if _, err := newIntegSpec(id); !errors.Is(err, ErrUnsupported) {
			t.Errorf("newIntegSpec(%d) = %v, want ErrUnsupported", id, err)
		}
	}
}
