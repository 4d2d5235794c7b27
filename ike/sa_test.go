package ike

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"reflect"
	"testing"
)

// testShared stands in for the DH shared secret g^ir.
var testShared = seq(0xd0, 32)

// testSPIi returns the initiator SPI of the test IKE SA using skSuites[k].
func testSPIi(k int) uint64 { return 0x0102030405060700 | uint64(k) }

const testSPIr = 0x8877665544332211

// newTestSAPair returns the initiator's and the responder's side of one
// IKE SA using skSuites[k], keyed as after IKE_SA_INIT (§2.14) with fixed
// nonces, SPIs and shared secret.
func newTestSAPair(tb testing.TB, k int) (i, r *ikeSA) {
	tb.Helper()
	i, r, err := makeTestSAPair(k)
	if err != nil {
		tb.Fatal(err)
	}
	return i, r
}

func makeTestSAPair(k int) (i, r *ikeSA, err error) {
	sas := make([]*ikeSA, 2)
	for n, initiator := range []bool{true, false} {
		sa := &ikeSA{initiator: initiator, suite: skSuites[k].suite(),
			nI: seq(0x10, 32), nR: seq(0x50, 48), spiI: testSPIi(k), spiR: testSPIr}
		if err := sa.deriveKeys(testShared); err != nil {
			return nil, nil, fmt.Errorf("%s: deriveKeys: %w", skSuites[k].name, err)
		}
		sas[n] = sa
	}
	return sas[0], sas[1], nil
}

// TestDeriveKeys recomputes SKEYSEED and the key material of RFC 7296
// §2.14 by hand and compares them with what deriveKeys installed:
//
//	SKEYSEED = prf(Ni | Nr, g^ir)
//	{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
//	         = prf+ (SKEYSEED, Ni | Nr | SPIi | SPIr)
func TestDeriveKeys(t *testing.T) {
	for k, s := range skSuites {
		t.Run(s.name, func(t *testing.T) {
			i, r := newTestSAPair(t, k)
			var h func() hash.Hash
			var prfSize int
			for _, p := range prfIDs {
				if p.id == s.prf {
					h, prfSize = p.hash, p.size
				}
			}
			e, err := newEncrSpec(s.encr)
			if err != nil {
				t.Fatal(err)
			}
			var in integSpec
			if !e.aead {
				if in, err = newIntegSpec(s.integ); err != nil {
					t.Fatal(err)
				}
			}
			nonces := append(append([]byte(nil), i.nI...), i.nR...)
			mac := hmac.New(h, nonces)
			mac.Write(testShared)
			skeyseed := mac.Sum(nil)
			seed := binary.BigEndian.AppendUint64(append([]byte(nil), nonces...), testSPIi(k))
			seed = binary.BigEndian.AppendUint64(seed, testSPIr)
			eLen := e.keyLen + e.salt
			km := handPRFPlus(h, skeyseed, seed, 3*prfSize+2*in.keyLen+2*eLen)
			take := func(n int) []byte { b := km[:n]; km = km[n:]; return b }
			skD, skAi, skAr := take(prfSize), take(in.keyLen), take(in.keyLen)
			skEi, skEr := take(eLen), take(eLen)
			skPi, skPr := take(prfSize), take(prfSize)

			for _, sa := range []*ikeSA{i, r} {
				if !bytes.Equal(sa.skD, skD) || !bytes.Equal(sa.hs.skPi, skPi) || !bytes.Equal(sa.hs.skPr, skPr) {
					t.Fatalf("initiator=%v: SK_d, SK_pi or SK_pr differ from the hand computation", sa.initiator)
				}
			}
			if i.out == r.out || i.in == r.in {
				t.Fatal("the two sides share a cipher")
			}
			// Each direction's cipher must be the one built from that
			// direction's keys: the hand-built cipher opens what the SA seals
			// and the other way round.
			hdr := skHeader()
			for _, dir := range []struct {
				name       string
				out, in    *skCipher
				encK, intK []byte
			}{
				{"initiator to responder", i.out, r.in, skEi, skAi},
				{"responder to initiator", r.out, i.in, skEr, skAr},
			} {
				ref, err := newSKCipher(e, in, dir.encK, dir.intK)
				if err != nil {
					t.Fatal(err)
				}
				if e.aead && (!bytes.Equal(dir.out.salt, ref.salt) || len(ref.salt) != 4) {
					t.Errorf("%s: salt %x, want %x", dir.name, dir.out.salt, ref.salt)
				}
				if !e.aead && (!bytes.Equal(dir.out.intKey, dir.intK) || !bytes.Equal(dir.in.intKey, dir.intK)) {
					t.Errorf("%s: integrity key differs", dir.name)
				}
				for _, c := range []struct{ seal, open *skCipher }{{dir.out, ref}, {ref, dir.in}} {
					b, err := c.seal.seal(append([]byte(nil), hdr...), seq(1, 40))
					if err != nil {
						t.Fatal(err)
					}
					if pt, err := c.open.open(b, len(hdr)); err != nil || !bytes.Equal(pt, seq(1, 40)) {
						t.Errorf("%s: key mismatch with the hand-derived keys: %v", dir.name, err)
					}
				}
			}
		})
	}
}

// TestEncryptDecrypt sends messages both ways through encrypt, Parse and
// decrypt.
func TestEncryptDecrypt(t *testing.T) {
	var authPayloads []Payload
	for _, c := range testMessages() {
		if c.name == "IKE_AUTH contents" {
			authPayloads = c.payloads
		}
	}
	for k, s := range skSuites {
		t.Run(s.name, func(t *testing.T) {
			i, r := newTestSAPair(t, k)
			for _, tt := range []struct {
				name     string
				from, to *ikeSA
				exch     ExchangeType
				response bool
				payloads []Payload
			}{
				{"IKE_AUTH request", i, r, IKE_AUTH, false, authPayloads},
				{"IKE_AUTH response", r, i, IKE_AUTH, true, authPayloads[2:]},
				{"liveness check", i, r, INFORMATIONAL, false, nil},
				{"liveness answer", r, i, INFORMATIONAL, true, nil},
				{"delete from the responder", r, i, INFORMATIONAL, false, []Payload{&DeletePayload{Protocol: ProtoIKE}}},
				{"large", i, r, INFORMATIONAL, false, []Payload{&VendorPayload{Data: seq(0, 60000)}}},
			} {
				b, err := tt.from.encrypt(tt.exch, 5, tt.response, tt.payloads)
				if err != nil {
					t.Fatalf("%s: encrypt: %v", tt.name, err)
				}
				m, err := Parse(b)
				if err != nil {
					t.Fatalf("%s: Parse: %v", tt.name, err)
				}
				want := Header{SPIi: testSPIi(k), SPIr: testSPIr, NextPayload: PayloadSK, Version: Version,
					Exchange: tt.exch, MessageID: 5, Length: uint32(len(b))}
				if tt.from.initiator {
					want.Flags |= FlagInitiator
				}
				if tt.response {
					want.Flags |= FlagResponse
				}
				if m.Header != want {
					t.Errorf("%s: header %+v, want %+v", tt.name, m.Header, want)
				}
				if !m.Encrypted() || len(m.Payloads) != 0 {
					t.Fatalf("%s: Encrypted() = %v with %d cleartext payloads", tt.name, m.Encrypted(), len(m.Payloads))
				}
				if err := tt.to.decrypt(m); err != nil {
					t.Fatalf("%s: decrypt: %v", tt.name, err)
				}
				if !reflect.DeepEqual(m.Payloads, tt.payloads) {
					t.Errorf("%s: payloads\n got %s\nwant %s", tt.name, dump(m.Payloads), dump(tt.payloads))
				}
				// The sender's inbound keys are the other direction's.
				m, _ = Parse(b)
				if err := tt.from.decrypt(m); !errors.Is(err, ErrIntegrity) {
					t.Errorf("%s: decrypt with the sender's keys: %v, want ErrIntegrity", tt.name, err)
				}
			}
		})
	}
}

func TestDecryptErrors(t *testing.T) {
	for k, s := range skSuites {
		t.Run(s.name, func(t *testing.T) {
			i, r := newTestSAPair(t, k)
			clear, err := Parse(mustMarshal(t, &Message{Header: Header{Exchange: INFORMATIONAL}}))
			if err != nil {
				t.Fatal(err)
			}
			if err := r.decrypt(clear); !errors.Is(err, ErrNoSK) {
				t.Errorf("cleartext message: %v, want ErrNoSK", err)
			}

			b, err := i.encrypt(INFORMATIONAL, 1, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			b[16] = byte(PayloadSKF)
			if m, err := Parse(b); err != nil {
				t.Fatal(err)
			} else if err := r.decrypt(m); !errors.Is(err, ErrUnsupported) {
				t.Errorf("SKF: %v, want ErrUnsupported", err)
			}

			// Authentic messages whose plaintext is not a valid payload chain.
			for _, tt := range []struct {
				name     string
				payloads []Payload
				err      error
			}{
				{"nested SK", []Payload{&NoncePayload{Data: seq(0, 16)}, &rawPayload{pt: PayloadSK, body: seq(0, 40)}}, ErrMalformed},
				{"nested SKF", []Payload{&rawPayload{pt: PayloadSKF, body: seq(0, 40)}}, ErrMalformed},
				{"short nonce", []Payload{&rawPayload{pt: PayloadNonce, body: seq(0, 3)}}, ErrMalformed},
				{"short notify", []Payload{&rawPayload{pt: PayloadNotify, body: seq(0, 3)}}, ErrTruncated},
				{"bad TS", []Payload{&rawPayload{pt: PayloadTSi, body: []byte{1, 0, 0, 0, 7, 0, 0, 16}}}, ErrTruncated},
			} {
				b, err := i.encrypt(IKE_AUTH, 1, false, tt.payloads)
				if err != nil {
					t.Fatal(err)
				}
				m, err := Parse(b)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.decrypt(m); !errors.Is(err, tt.err) {
					t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
				}
			}

			// An unknown non-critical payload inside SK is kept raw.
			b, err = i.encrypt(INFORMATIONAL, 1, false, []Payload{&rawPayload{pt: 150, body: seq(0, 5)}})
			if err != nil {
				t.Fatal(err)
			}
			m, _ := Parse(b)
			if err := r.decrypt(m); err != nil || len(m.Payloads) != 1 || m.Payloads[0].Type() != 150 {
				t.Errorf("unknown payload inside SK: %v, %s", err, dump(m.Payloads))
			}

			if b, err := i.encrypt(INFORMATIONAL, 1, false, []Payload{&VendorPayload{Data: make([]byte, 65500)}}); err == nil {
				t.Errorf("encrypt of a message over 65535 octets succeeded: %d octets", len(b))
			}
		})
	}
}

// TestRekeyKeys checks the SKEYSEED of a rekeyed IKE SA (§2.18),
// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF,
// and that both ends of the new SA agree.
func TestRekeyKeys(t *testing.T) {
	oldI, oldR := newTestSAPair(t, 1) // PRF_HMAC_SHA2_384
	shared := seq(0x70, 32)
	k := 5 // AES-CBC-256 with PRF_HMAC_SHA2_512 for the new SA
	var nsas []*ikeSA
	for _, c := range []struct {
		old       *ikeSA
		initiator bool
	}{{oldR, true}, {oldI, false}} { // the original responder rekeys
		n := &ikeSA{initiator: c.initiator, suite: skSuites[k].suite(), nI: seq(0x21, 32), nR: seq(0x61, 32),
			spiI: 0xaaaaaaaaaaaaaaaa, spiR: 0xbbbbbbbbbbbbbbbb}
		if err := n.rekeyKeys(c.old, shared); err != nil {
			t.Fatal(err)
		}
		nsas = append(nsas, n)
	}
	mac := hmac.New(prfIDs[1].hash, oldI.skD)
	mac.Write(shared)
	mac.Write(seq(0x21, 32))
	mac.Write(seq(0x61, 32))
	skeyseed := mac.Sum(nil)
	seed := append(append(seq(0x21, 32), seq(0x61, 32)...), 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
		0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb)
	km := handPRFPlus(prfIDs[2].hash, skeyseed, seed, 64*3+2*64+2*32)
	skD, skPi, skPr := km[:64], km[64+2*64+2*32:][:64], km[64+2*64+2*32+64:]
	for _, n := range nsas {
		if !bytes.Equal(n.skD, skD) || !bytes.Equal(n.hs.skPi, skPi) || !bytes.Equal(n.hs.skPr, skPr) {
			t.Fatalf("initiator=%v: keys differ from the hand computation", n.initiator)
		}
		if n.prf.size != 64 {
			t.Errorf("the new SA keeps PRF of %d octets, want the negotiated PRF_HMAC_SHA2_512", n.prf.size)
		}
	}
	b, err := nsas[0].encrypt(INFORMATIONAL, 0, false, []Payload{&NotifyPayload{NotifyType: INITIAL_CONTACT}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := Parse(b)
	if err := nsas[1].decrypt(m); err != nil {
		t.Fatalf("the new SA's ends do not agree: %v", err)
	}
}

// TestChildKeys checks a Child SA's KEYMAT (§2.17): prf+(SK_d, [g^ir |]
// Ni | Nr), the initiator-to-responder key first, and that the two ends
// pair their outbound and inbound keys the same way.
func TestChildKeys(t *testing.T) {
	i, r := newTestSAPair(t, 0) // PRF_HMAC_SHA2_256
	cs := ChildSuite{Encr: tGCM256}
	nI, nR := seq(0x31, 32), seq(0x71, 32)
	for _, shared := range [][]byte{nil, seq(0xe0, 32)} {
		km := handPRFPlus(sha256.New, i.skD, append(append(append([]byte(nil), shared...), nI...), nR...), 72)
		// The initiator of the exchange is the original responder when it rekeys.
		for _, c := range []struct {
			a, b *ikeSA
		}{{i, r}, {r, i}} {
			aOut, aIn, err := c.a.childKeys(cs, nI, nR, shared, 0xc0000001, 0xc0000002, true)
			if err != nil {
				t.Fatal(err)
			}
			bOut, bIn, err := c.b.childKeys(cs, nI, nR, shared, 0xc0000002, 0xc0000001, false)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(aOut.Key, km[:36]) || !bytes.Equal(aIn.Key, km[36:]) {
				t.Errorf("exchange initiator's keys differ from the hand computation")
			}
			if !bytes.Equal(aOut.Key, bIn.Key) || !bytes.Equal(aIn.Key, bOut.Key) || aOut.SPI != bIn.SPI || aIn.SPI != bOut.SPI {
				t.Errorf("the ends disagree: out %x/%#x in %x/%#x vs out %x/%#x in %x/%#x",
					aOut.Key, aOut.SPI, aIn.Key, aIn.SPI, bOut.Key, bOut.SPI, bIn.Key, bIn.SPI)
			}
		}
	}
}

// TestESPProposalsInstallable: every ESP proposal ParseProposals accepts
// may be chosen by a peer, so the datapath must be able to install it.
func TestESPProposalsInstallable(t *testing.T) {
	for _, s := range []string{"aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256", "aes256-sha256"} {
		props := mustProposals(t, s, ProtoESP)
		cs, err := childSuiteOf(&props[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := espTransform(cs); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	t.Run("CBC with SHA-384 or SHA-512 refused", func(t *testing.T) {
		// The datapath does AES-CBC only with HMAC-SHA2-256-128, so such
		// proposals must not be offered or accepted.
		for _, s := range []string{"aes128-sha384", "aes256-sha384", "aes128-sha512", "aes256-sha512"} {
			if _, err := ParseProposals(s, ProtoESP); err == nil {
				t.Errorf("%s: accepted", s)
			}
		}
	})
}
