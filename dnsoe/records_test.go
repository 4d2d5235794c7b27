package dnsoe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func testKeys(t testing.TB) map[string]crypto.PublicKey {
	t.Helper()
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]crypto.PublicKey{"ed25519": ed.Public(), "ecdsa-p256": &ec.PublicKey, "ecdsa-p384": &ec384.PublicKey, "rsa": &rk.PublicKey}
}

func sameKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// TestRecordsRoundTrip publishes each key type, parses the zone lines with
// miekg/dns as a resolver would return them, and reads the keys back.
func TestRecordsRoundTrip(t *testing.T) {
	for name, pub := range testKeys(t) {
		for _, tc := range []struct{ target, gateway string }{
			{"192.0.2.7", ""}, {"2001:db8::7", ""}, {"192.0.2.7", "198.51.100.1"}, {"192.0.2.7", "@gw.example.org"},
			{"host.example.org", ""}, {"2001:db8::9", "2001:db8::1"},
		} {
			lines, err := Records(tc.target, tc.gateway, 10, pub)
			if err != nil {
				t.Fatalf("%s %v: %v", name, tc, err)
			}
			var sawIPSECKEY, sawKEY, sawTXT bool
			for _, l := range lines {
				rr, err := dns.NewRR(l)
				if err != nil {
					t.Fatalf("%s %v: %q does not parse: %v", name, tc, l, err)
				}
				switch rr := rr.(type) {
				case *dns.IPSECKEY:
					sawIPSECKEY = true
					dest := netip.MustParseAddr("203.0.113.1")
					if a, err := netip.ParseAddr(tc.target); err == nil {
						dest = a
						if rr.Hdr.Name != ReverseName(a) {
							t.Errorf("owner %q, want %q", rr.Hdr.Name, ReverseName(a))
						}
					}
					g, err := FromIPSECKEY(rr, dest)
					if err != nil || !sameKey(g.Key, pub) || g.Precedence != 10 {
						t.Fatalf("%s %v: IPSECKEY %q read back as %+v, %v", name, tc, l, g, err)
					}
					switch {
					case tc.gateway == "" && g.Addr != dest:
						t.Errorf("gateway %v, want the destination %v", g.Addr, dest)
					case strings.HasPrefix(tc.gateway, "@") && g.Name != "gw.example.org":
						t.Errorf("gateway name %q", g.Name)
					case tc.gateway != "" && !strings.HasPrefix(tc.gateway, "@") && g.Addr != netip.MustParseAddr(tc.gateway):
						t.Errorf("gateway %v, want %v", g.Addr, tc.gateway)
					}
				case *dns.KEY:
					sawKEY = true
					k, err := FromKEY(rr)
					if err != nil || !sameKey(k, pub) || rr.Flags != 0x4200 || rr.Protocol != 4 {
						t.Fatalf("%s: KEY %q read back: %v", name, l, err)
					}
				case *dns.TXT:
					sawTXT = true
					g, err := FromTXT(strings.Join(rr.Txt, ""))
					if err != nil || !sameKey(g.Key, pub) || g.Precedence != 10 {
						t.Fatalf("%s: TXT %q read back as %+v, %v", name, l, g, err)
					}
				}
			}
			_, isRSA := pub.(*rsa.PublicKey)
			hasGW := tc.gateway != "" || !strings.Contains(tc.target, "example")
			if !sawIPSECKEY || !sawKEY || sawTXT != (isRSA && hasGW) {
				t.Errorf("%s %v: records %q", name, tc, lines)
			}
		}
	}
}

func TestFromTXT(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	key := base64.StdEncoding.EncodeToString(encodeRFC3110(&rk.PublicKey))
	tests := []struct {
		in   string
		want Gateway
		err  bool
	}{
		{"X-IPsec-Server(10)=192.1.1.5 " + key, Gateway{Precedence: 10, Addr: netip.MustParseAddr("192.1.1.5"), Source: "TXT"}, false},
		{"X-IPsec-Server(5)=192.1.1.6", Gateway{Precedence: 5, Addr: netip.MustParseAddr("192.1.1.6"), Source: "TXT"}, false},
		{"X-IPsec-Server(1)=@sg.example.com " + key[:20] + "\n " + key[20:], Gateway{Precedence: 1, Name: "sg.example.com", Source: "TXT"}, false},
		{"v=spf1 -all", Gateway{}, true},
		{"X-IPsec-Server(x)=192.1.1.5", Gateway{}, true},
		{"X-IPsec-Server(300)=192.1.1.5", Gateway{}, true},
		{"X-IPsec-Server(10)=", Gateway{}, true},
		{"X-IPsec-Server(10)=not-an-ip", Gateway{}, true},
		{"X-IPsec-Server(10)=192.1.1.5 AQMM...3s1Q==", Gateway{}, true}, // the draft's shortened key
		{"X-IPsec-Server(10)=192.1.1.5 AQID", Gateway{}, true},          // too short an RSA key
	}
	for _, tt := range tests {
		g, err := FromTXT(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if err == nil && (g.Precedence != tt.want.Precedence || g.Addr != tt.want.Addr || g.Name != tt.want.Name) {
			t.Errorf("%q: %+v", tt.in, g)
		}
		if err != nil && !errors.Is(err, ErrRecord) {
			t.Errorf("%q: error %v does not wrap ErrRecord", tt.in, err)
		}
	}
}

func TestParseAutoSEC(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	b64 := base64.StdEncoding.EncodeToString(der)
	// The draft's example, with a real key, wrapped over lines.
	text := "\"ENCR_AES_CBC-256,ENCR_3DES-\n 128;AUTH_HMAC_SHA2_512_256;MODP3072,MODP2048;\n" + b64[:30] + "\n" + b64[30:] + "\""
	a, err := ParseAutoSEC(text)
	if err != nil {
		t.Fatal(err)
	}
	if !sameKey(a.Key, &ec.PublicKey) || a.Proposals != "aes256-sha512-prfsha512-modp2048" {
		t.Fatalf("%+v", a)
	}
	a, err = ParseAutoSEC("ENCR_AES_GCM_16-256,ENCR_AES_CBC-128;AUTH_HMAC_SHA2_256_128;CURVE25519,MODP2048;" + b64)
	if err != nil || a.Proposals != "aes256gcm16-prfsha256-x25519-modp2048,aes128-sha256-prfsha256-x25519-modp2048" {
		t.Fatalf("%q %v", a.Proposals, err)
	}
	for _, bad := range []string{"", "a;b;c", "ENCR_3DES;AUTH_HMAC_MD5_96;MODP1536;" + b64, "ENCR_AES_CBC-256;;MODP2048;!!!",
		"ENCR_AES_CBC-256;AUTH_HMAC_SHA2_256_128;MODP2048;AAAA"} {
		if _, err := ParseAutoSEC(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOrder(t *testing.T) {
	gws := []Gateway{{Precedence: 20, Name: "c"}, {Precedence: 10, Name: "a"}, {Precedence: 10, Name: "b"}, {Precedence: 5, Name: "z"}}
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		o := Order(gws, mrand.New(mrand.NewPCG(uint64(i), 1)))
		if o[0].Name != "z" || o[3].Name != "c" {
			t.Fatalf("order %v", o)
		}
		seen[o[1].Name] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatal("equal precedence never shuffled")
	}
}

func TestKeyDecoders(t *testing.T) {
	if _, err := KeyFromIPSECKEY(IPSECKEYDSA, []byte{1}); !errors.Is(err, ErrKeyType) {
		t.Errorf("DSA: %v", err)
	}
	if _, err := KeyFromIPSECKEY(IPSECKEYECDSA, make([]byte, 64)); err == nil {
		t.Error("point (0,0) accepted")
	}
	if _, err := KeyFromKEY(3, keyED25519, make([]byte, 32)); err == nil {
		t.Error("KEY record for DNSSEC (protocol 3) accepted")
	}
	// An RSA key with an even modulus, an even exponent, a short modulus.
	n := new(big.Int).Lsh(big.NewInt(1), 1100)
	if _, err := decodeRFC3110(encodeRFC3110(&rsa.PublicKey{N: n, E: 65537})); err == nil {
		t.Error("even modulus accepted")
	}
}

func FuzzIPSECKEY(f *testing.F) {
	for _, pub := range testKeys(f) {
		lines, _ := Records("192.0.2.7", "198.51.100.1", 10, pub)
		rr, _ := dns.NewRR(lines[0])
		buf := make([]byte, 1024)
		off, _ := dns.PackRR(rr, buf, 0, nil, false)
		f.Add(buf[:off])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rr, _, err := dns.UnpackRR(b, 0)
		if err != nil {
			return
		}
		if k, ok := rr.(*dns.IPSECKEY); ok {
			FromIPSECKEY(k, netip.MustParseAddr("192.0.2.7"))
		}
		if k, ok := rr.(*dns.KEY); ok {
			FromKEY(k)
		}
	})
}

func FuzzTXT(f *testing.F) {
	f.Add("X-IPsec-Server(10)=192.1.1.5 AQID")
	f.Add("X-IPsec-Server(1)=@sg.example.com")
	f.Fuzz(func(t *testing.T, s string) {
		g, err := FromTXT(s)
		if err == nil && !g.Addr.IsValid() && g.Name == "" {
			t.Fatal("gateway without address or name")
		}
	})
}

func FuzzKEY(f *testing.F) {
	for _, pub := range testKeys(f) {
		alg, key, _ := KEYOf(pub)
		f.Add(uint8(4), alg, key)
	}
	f.Fuzz(func(t *testing.T, proto, alg uint8, key []byte) {
		KeyFromKEY(proto, alg, key)
		KeyFromIPSECKEY(alg, key)
		rr := &dns.KEY{DNSKEY: dns.DNSKEY{Protocol: proto, Algorithm: alg, PublicKey: base64.StdEncoding.EncodeToString(key)}}
		if g, err := FromKEYRecord(rr, netip.MustParseAddr("192.0.2.1")); err == nil && g.Key == nil {
			t.Fatal("a KEY record accepted without a key")
		}
	})
}

// TestKEYRecordAutoSEC reads the AutoSEC text from a KEY record's RDATA
// as a zone file gives it (RFC 3597 generic form), and a plain KEY record.
func TestKEYRecordAutoSEC(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	text := "ENCR_AES_GCM_16-256, ENCR_AES_CBC-128;AUTH_HMAC_SHA2_256_128;CURVE25519,MODP2048;" + base64.StdEncoding.EncodeToString(der)
	rr, err := dns.NewRR(fmt.Sprintf("2.0.0.10.in-addr.arpa. 300 IN KEY \\# %d %x", len(text), text))
	if err != nil {
		t.Fatal(err)
	}
	dest := netip.MustParseAddr("10.0.0.2")
	g, err := FromKEYRecord(rr.(*dns.KEY), dest)
	if err != nil {
		t.Fatal(err)
	}
	if g.Source != "AutoSEC" || g.Addr != dest || !pub.Equal(g.Key) || !strings.HasPrefix(g.Proposals, "aes256gcm16-prfsha256-x25519-modp2048") {
		t.Fatalf("got %+v", g)
	}
	alg, key, _ := KEYOf(pub)
	plain := &dns.KEY{DNSKEY: dns.DNSKEY{Flags: 0x0200, Protocol: 4, Algorithm: alg, PublicKey: base64.StdEncoding.EncodeToString(key)}}
	if g, err := FromKEYRecord(plain, dest); err != nil || g.Source != "KEY" || !pub.Equal(g.Key) {
		t.Fatalf("plain KEY: %+v, %v", g, err)
	}
}

func FuzzAutoSEC(f *testing.F) {
	f.Add("ENCR_AES_CBC-256;AUTH_HMAC_SHA2_512_256;MODP2048;AQID")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAutoSEC(s)
		if err == nil && (a.Key == nil || a.Proposals == "") {
			t.Fatal("accepted without a key or proposals")
		}
	})
}

// rsaOf is an RSA public key with a random odd modulus of bits bits (no
// need for primes: the decoders never see the private key).
func rsaOf(t *testing.T, bits, e int) *rsa.PublicKey {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits-1)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1).SetBit(n, 0, 1)
	return &rsa.PublicKey{N: n, E: e}
}

// TestRSAKeyBounds: a record with a huge RSA key (which costs the daemon
// about a second per verification) or a weak one is refused, with an
// error, by every decoder that takes keys from DNS.
func TestRSAKeyBounds(t *testing.T) {
	dest := netip.MustParseAddr("192.0.2.7")
	decoders := map[string]func(k *rsa.PublicKey) error{
		"IPSECKEY": func(k *rsa.PublicKey) error {
			_, err := FromIPSECKEY(&dns.IPSECKEY{Precedence: 10, GatewayType: 0, Algorithm: IPSECKEYRSA,
				PublicKey: base64.StdEncoding.EncodeToString(encodeRFC3110(k))}, dest)
			return err
		},
		"TXT": func(k *rsa.PublicKey) error {
			_, err := FromTXT("X-IPsec-Server(10)=192.0.2.7 " + base64.StdEncoding.EncodeToString(encodeRFC3110(k)))
			return err
		},
		"KEY": func(k *rsa.PublicKey) error {
			_, err := FromKEY(&dns.KEY{DNSKEY: dns.DNSKEY{Flags: 0x4200, Protocol: 4, Algorithm: 8,
				PublicKey: base64.StdEncoding.EncodeToString(encodeRFC3110(k))}})
			return err
		},
		"AutoSEC SPKI": func(k *rsa.PublicKey) error {
			der, err := x509.MarshalPKIXPublicKey(k)
			if err != nil {
				return err
			}
			_, err = ParseAutoSEC("ENCR_AES_GCM_16-256;AUTH_HMAC_SHA2_256_128;CURVE25519;" + base64.StdEncoding.EncodeToString(der))
			return err
		},
		"AutoSEC RFC 3110": func(k *rsa.PublicKey) error {
			_, err := ParseAutoSEC("ENCR_AES_GCM_16-256;AUTH_HMAC_SHA2_256_128;CURVE25519;" + base64.StdEncoding.EncodeToString(encodeRFC3110(k)))
			return err
		},
	}
	tests := []struct {
		name   string
		key    *rsa.PublicKey
		accept bool
	}{
		{"2048 bits", rsaOf(t, 2048, 65537), true},
		{"8192 bits", rsaOf(t, 8192, 65537), true},
		{"16384 bits", rsaOf(t, 16384, 65537), false},
		{"8200 bits", rsaOf(t, 8200, 65537), false},
		{"1024 bits", rsaOf(t, 1024, 65537), false},
		{"exponent 3", rsaOf(t, 2048, 3), true},
		{"exponent 1", rsaOf(t, 2048, 1), false},
		{"even exponent", rsaOf(t, 2048, 65536), false},
		{"exponent 2^31-1", rsaOf(t, 2048, 1<<31-1), true},
	}
	for _, tt := range tests {
		for name, dec := range decoders {
			err := dec(tt.key)
			if (err == nil) != tt.accept {
				t.Errorf("%s, %s: %v", tt.name, name, err)
			}
		}
	}
	// An exponent above 2^32 (RFC 3110 allows up to 4096 bits of it).
	k := rsaOf(t, 2048, 3)
	b := append([]byte{5, 1, 0, 0, 0, 1}, k.N.Bytes()...)
	if _, err := decodeRFC3110(b); err == nil {
		t.Error("a 2^32+1 exponent was accepted")
	}
	b = append([]byte{0, 2, 0}, append(make([]byte, 511), 3)...)
	if _, err := decodeRFC3110(append(b, k.N.Bytes()...)); err == nil {
		t.Error("a 512-octet exponent was accepted")
	}
}
