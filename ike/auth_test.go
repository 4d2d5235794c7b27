package ike

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in      string
		want    Identity
		str     string
		wantErr bool
	}{
		{in: "192.0.2.1", want: Identity{IDIPv4, []byte{192, 0, 2, 1}}, str: "192.0.2.1"},
		{in: "0.0.0.0", want: Identity{IDIPv4, []byte{0, 0, 0, 0}}, str: "0.0.0.0"},
		{in: "2001:db8::1", want: Identity{IDIPv6, netip.MustParseAddr("2001:db8::1").AsSlice()}, str: "2001:db8::1"},
		{in: "::ffff:192.0.2.1", want: Identity{IDIPv6, netip.MustParseAddr("::ffff:192.0.2.1").AsSlice()}, str: "::ffff:192.0.2.1"},
		{in: "%null", want: Identity{Type: IDNull}, str: "(null)"},
		{in: "alice@example.org", want: Identity{IDRFC822, []byte("alice@example.org")}, str: "alice@example.org"},
		{in: "vpn.example.org", want: Identity{IDFQDN, []byte("vpn.example.org")}, str: "vpn.example.org"},
		{in: "@vpn.example.org", want: Identity{IDFQDN, []byte("vpn.example.org")}, str: "vpn.example.org"},
		{in: "@alice@example.org", want: Identity{IDFQDN, []byte("alice@example.org")}, str: "alice@example.org"},
		{in: "gateway", want: Identity{IDFQDN, []byte("gateway")}, str: "gateway"},
		{in: "192.0.2.256", want: Identity{IDFQDN, []byte("192.0.2.256")}, str: "192.0.2.256"},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseIdentity(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseIdentity(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseIdentity(%q): %v", tt.in, err)
			continue
		}
		if !got.Equal(tt.want) {
			t.Errorf("ParseIdentity(%q) = %d %x, want %d %x", tt.in, got.Type, got.Data, tt.want.Type, tt.want.Data)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseIdentity(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		// The identity goes on the wire and comes back the same.
		b := mustMarshal(t, &Message{Payloads: []Payload{got.payload(true)}})
		m, err := Parse(b)
		if err != nil {
			t.Fatalf("ParseIdentity(%q): ID payload does not parse: %v", tt.in, err)
		}
		if id := m.ID(true); id == nil || !(Identity{id.IDType, id.Data}).Equal(got) {
			t.Errorf("ParseIdentity(%q): ID payload round trip gives %v", tt.in, id)
		}
	}
}

func TestIdentityOf(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want Identity
	}{
		{"192.0.2.1", Identity{IDIPv4, []byte{192, 0, 2, 1}}},
		{"::ffff:192.0.2.1", Identity{IDIPv4, []byte{192, 0, 2, 1}}}, // unmapped
		{"2001:db8::2", Identity{IDIPv6, netip.MustParseAddr("2001:db8::2").AsSlice()}},
	} {
		if got := IdentityOf(netip.MustParseAddr(tt.addr)); !got.Equal(tt.want) {
			t.Errorf("IdentityOf(%s) = %d %x", tt.addr, got.Type, got.Data)
		}
	}
	a, b := Identity{IDFQDN, []byte("x")}, Identity{IDRFC822, []byte("x")}
	if a.Equal(b) || !a.Equal(Identity{IDFQDN, []byte("x")}) {
		t.Error("Equal must compare type and data")
	}
}

// testKeys holds one key pair of each signature type; RSA-2048 generation
// is slow, so they are made once.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	_, ed2, _ := ed25519.GenerateKey(rand.Reader)
	ec2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return map[string]crypto.Signer{"ed25519": ed, "ecdsa": ec, "rsa": rs, "ed25519-2": ed2, "ecdsa-2": ec2, "rsa-2": rs2}
})

// TestAuthRoundTrip computes AUTH with each credential and verifies it as
// the peer would, then checks that the wrong key, PSK or octets fail.
func TestAuthRoundTrip(t *testing.T) {
	keys := testKeys()
	octets := seq(3, 200)
	psk := []byte("correct horse battery staple")
	tests := []struct {
		name   string
		cred   Credential
		peer   PeerAuth
		wrong  []PeerAuth // each must refuse the AUTH payload
		method AuthMethod
		alg    []byte
	}{
		{"psk", Credential{PSK: psk}, PeerAuth{PSK: psk},
			[]PeerAuth{{PSK: []byte("correct horse battery stapler")}, {PSK: []byte{}}, {Null: true}, {PublicKey: keys["ed25519"].Public()}},
			AuthPSK, nil},
		{"null", Credential{Null: true}, PeerAuth{Null: true},
			[]PeerAuth{{PSK: psk}, {PSK: []byte{}}, {PublicKey: keys["ed25519"].Public()}},
			AuthNULL, nil},
		{"ed25519", Credential{Signer: keys["ed25519"]}, PeerAuth{PublicKey: keys["ed25519"].Public()},
			[]PeerAuth{{PublicKey: keys["ed25519-2"].Public()}, {PublicKey: keys["ecdsa"].Public()}, {PSK: psk}, {Null: true}},
			AuthDigitalSign, algEd25519},
		{"ecdsa-p256", Credential{Signer: keys["ecdsa"]}, PeerAuth{PublicKey: keys["ecdsa"].Public()},
			[]PeerAuth{{PublicKey: keys["ecdsa-2"].Public()}, {PublicKey: keys["rsa"].Public()}, {PSK: psk}},
			AuthDigitalSign, algECDSASHA256},
		{"rsa-2048", Credential{Signer: keys["rsa"]}, PeerAuth{PublicKey: keys["rsa"].Public()},
			[]PeerAuth{{PublicKey: keys["rsa-2"].Public()}, {PublicKey: keys["ed25519"].Public()}, {PSK: psk}},
			AuthDigitalSign, algRSASHA256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, want := tt.cred.Method(), strings.TrimSuffix(strings.TrimSuffix(tt.name, "-p256"), "-2048"); m != want {
				t.Errorf("Method() = %q, want %q", m, want)
			}
			for _, p := range prfIDs {
				prf := mustPRF(t, p.id)
				a, err := makeAuth(prf, &tt.cred, octets)
				if err != nil {
					t.Fatalf("makeAuth: %v", err)
				}
				if a.Method != tt.method {
					t.Fatalf("method = %d, want %d", a.Method, tt.method)
				}
				if tt.alg != nil {
					// RFC 7427 §3: length of the AlgorithmIdentifier, the
					// AlgorithmIdentifier, the signature.
					if int(a.Data[0]) != len(tt.alg) || !bytes.Equal(a.Data[1:1+len(tt.alg)], tt.alg) {
						t.Fatalf("AUTH data starts %x, want AlgorithmIdentifier %x", a.Data[:min(len(a.Data), 20)], tt.alg)
					}
				}
				if err := verifyAuth(prf, &tt.peer, a, octets); err != nil {
					t.Fatalf("verifyAuth: %v", err)
				}
				// The AUTH payload survives the wire.
				m, err := Parse(mustMarshal(t, &Message{Payloads: []Payload{a}}))
				if err != nil {
					t.Fatal(err)
				}
				if err := verifyAuth(prf, &tt.peer, Get[*AuthPayload](m), octets); err != nil {
					t.Fatalf("verifyAuth after a round trip: %v", err)
				}
				for i, w := range tt.wrong {
					if err := verifyAuth(prf, &w, a, octets); !errors.Is(err, ErrAuth) {
						t.Errorf("wrong peer config %d: err = %v, want ErrAuth", i, err)
					}
				}
				other := append([]byte(nil), octets...)
				other[len(other)-1] ^= 1
				if err := verifyAuth(prf, &tt.peer, a, other); !errors.Is(err, ErrAuth) {
					t.Errorf("other octets: err = %v, want ErrAuth", err)
				}
				bad := &AuthPayload{Method: a.Method, Data: append([]byte(nil), a.Data...)}
				bad.Data[len(bad.Data)-1] ^= 0x80
				if err := verifyAuth(prf, &tt.peer, bad, octets); !errors.Is(err, ErrAuth) {
					t.Errorf("AUTH data with a bit flipped: err = %v, want ErrAuth", err)
				}
				if err := verifyAuth(prf, &tt.peer, &AuthPayload{Method: a.Method, Data: a.Data[:len(a.Data)-1]}, octets); !errors.Is(err, ErrAuth) {
					t.Errorf("AUTH data one octet short: err = %v, want ErrAuth", err)
				}
			}
		})
	}
}

// TestAuthPSKFormula checks the PSK computation against RFC 7296 §2.15,
// AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>),
// and AUTH_NULL against RFC 7619 §3 (the same with an empty key).
func TestAuthPSKFormula(t *testing.T) {
	octets := seq(9, 100)
	for _, key := range [][]byte{[]byte("secret"), nil} {
		inner := hmac.New(sha256.New, key)
		inner.Write([]byte("Key Pad for IKEv2"))
		outer := hmac.New(sha256.New, inner.Sum(nil))
		outer.Write(octets)
		cred := Credential{PSK: key, Null: key == nil}
		a, err := makeAuth(mustPRF(t, PRF_HMAC_SHA2_256), &cred, octets)
		if err != nil {
			t.Fatal(err)
		}
		if want := outer.Sum(nil); !bytes.Equal(a.Data, want) {
			t.Errorf("key %q: AUTH = %x, want %x", key, a.Data, want)
		}
	}
}

// TestSignedOctets checks §2.15: the sender's first message, the peer's
// nonce and prf(SK_p, RestOfIDPayload), where RestOfIDPayload is the ID
// payload without its generic header.
func TestSignedOctets(t *testing.T) {
	prf := mustPRF(t, PRF_HMAC_SHA2_256)
	first, nonce, skP := seq(1, 60), seq(0x40, 32), seq(0x90, 32)
	id := &IDPayload{Initiator: true, IDType: IDFQDN, Data: []byte("left.example.org")}
	m := hmac.New(sha256.New, skP)
	m.Write(append([]byte{byte(IDFQDN), 0, 0, 0}, "left.example.org"...))
	want := append(append(append([]byte(nil), first...), nonce...), m.Sum(nil)...)
	if got := signedOctets(prf, first, nonce, skP, id); !bytes.Equal(got, want) {
		t.Errorf("signedOctets:\n got %x\nwant %x", got, want)
	}
}

// TestVerifyAuthMalformed feeds AUTH payloads whose data cannot be split
// into AlgorithmIdentifier and signature: they must fail with ErrAuth, not
// panic.
func TestVerifyAuthMalformed(t *testing.T) {
	keys := testKeys()
	prf := mustPRF(t, PRF_HMAC_SHA2_256)
	octets := seq(3, 64)
	good, err := makeAuth(prf, &Credential{Signer: keys["ed25519"]}, octets)
	if err != nil {
		t.Fatal(err)
	}
	sig := good.Data[1+len(algEd25519):]
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"length only", []byte{7}},
		{"length beyond the data", append([]byte{0xff}, algEd25519...)},
		{"length one beyond", append([]byte{byte(len(algEd25519) + 1)}, algEd25519...)},
		{"length 255, nothing", []byte{0xff}},
		{"empty AlgorithmIdentifier", append([]byte{0}, sig...)},
		{"AlgorithmIdentifier one short", append(append([]byte{byte(len(algEd25519) - 1)}, algEd25519...), sig...)},
		{"other AlgorithmIdentifier", append(append([]byte{byte(len(algRSASHA256))}, algRSASHA256...), sig...)},
		{"no signature", append([]byte{byte(len(algEd25519))}, algEd25519...)},
	}
	for _, pub := range []string{"ed25519", "ecdsa", "rsa"} {
		peer := &PeerAuth{PublicKey: keys[pub].Public()}
		for _, tt := range tests {
			err := verifyAuth(prf, peer, &AuthPayload{Method: AuthDigitalSign, Data: tt.data}, octets)
			if !errors.Is(err, ErrAuth) {
				t.Errorf("%s key, %s: err = %v, want ErrAuth", pub, tt.name, err)
			}
		}
	}
	for _, m := range []AuthMethod{AuthRSA, AuthDSS, AuthECDSA256, 0, 255} {
		err := verifyAuth(prf, &PeerAuth{PublicKey: keys["rsa"].Public(), PSK: []byte("x"), Null: true},
			&AuthPayload{Method: m, Data: good.Data}, octets)
		if !errors.Is(err, ErrAuth) {
			t.Errorf("method %d: err = %v, want ErrAuth", m, err)
		}
	}
	if _, err := makeAuth(prf, &Credential{}, octets); err == nil {
		t.Error("makeAuth without a credential succeeded")
	}
}

// TestVerifyOtherHashes checks that signatures made with SHA-384 and
// SHA-512 AlgorithmIdentifiers (RFC 7427 Appendix A) verify too: peers such
// as strongSwan pick the hash from SIGNATURE_HASH_ALGORITHMS.
func TestVerifyOtherHashes(t *testing.T) {
	keys := testKeys()
	prf := mustPRF(t, PRF_HMAC_SHA2_256)
	octets := seq(5, 80)
	for _, h := range []struct {
		hash     crypto.Hash
		ecdsaAlg []byte
		rsaAlg   []byte
	}{
		{crypto.SHA256, algECDSASHA256, algRSASHA256},
		{crypto.SHA384, algECDSASHA384, algRSASHA384},
		{crypto.SHA512, algECDSASHA512, algRSASHA512},
	} {
		hh := h.hash.New()
		hh.Write(octets)
		digest := hh.Sum(nil)
		for _, k := range []struct {
			name string
			alg  []byte
		}{{"ecdsa", h.ecdsaAlg}, {"rsa", h.rsaAlg}} {
			sig, err := keys[k.name].Sign(rand.Reader, digest, h.hash)
			if err != nil {
				t.Fatal(err)
			}
			data := append(append([]byte{byte(len(k.alg))}, k.alg...), sig...)
			a := &AuthPayload{Method: AuthDigitalSign, Data: data}
			if err := verifyAuth(prf, &PeerAuth{PublicKey: keys[k.name].Public()}, a, octets); err != nil {
				t.Errorf("%s with %v: %v", k.name, h.hash, err)
			}
		}
	}
}
