package dnsoe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Errors wrapped by the decoders.
var (
	ErrRecord  = errors.New("dnsoe: malformed record")
	ErrKeyType = errors.New("dnsoe: unsupported key algorithm")
)

// IPSECKEY public key algorithms (IANA "IPSECKEY Resource Record
// Parameters"): RSA (RFC 4025, key as in RFC 3110), ECDSA (RFC 8005, the
// point as in RFC 6605) and EdDSA (RFC 9373).
const (
	IPSECKEYNone  = 0
	IPSECKEYDSA   = 1
	IPSECKEYRSA   = 2
	IPSECKEYECDSA = 3
	IPSECKEYEdDSA = 4
)

// KEY record algorithms (DNSSEC numbers) and protocol.
const (
	keyRSAMD5    = 1
	keyRSASHA1   = 5
	keyRSASHA256 = 8
	keyECDSAP256 = 13
	keyECDSAP384 = 14
	keyED25519   = 15

	keyProtocolIPsec = 4
	keyFlagsIPsec    = 0x4200 // no-auth off, zone key off: an end entity key (draft §7.1)
)

// Bounds of the RSA keys taken from DNS: a key outside them is refused
// with an error. Verifying with a huge modulus or exponent costs the
// daemon seconds for one signature; a short modulus can be factored.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
	// The public exponent must be odd and in [3, MaxRSAExponent] (what
	// crypto/rsa accepts, and below the 2^32 RFC 3110 keys use).
	MaxRSAExponent = 1<<31 - 1
)

// decodeRFC3110 reads an RSA public key in the format of RFC 3110 §2:
// exponent length (1 octet, or 0 and 2 octets), exponent, modulus.
func decodeRFC3110(b []byte) (*rsa.PublicKey, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty RSA key", ErrRecord)
	}
	elen, off := int(b[0]), 1
	if elen == 0 {
		if len(b) < 3 {
			return nil, fmt.Errorf("%w: RSA exponent length", ErrRecord)
		}
		elen, off = int(b[1])<<8|int(b[2]), 3
	}
	if elen == 0 || elen > 4 || len(b) < off+elen+MinRSABits/8 || len(b) > off+elen+MaxRSABits/8 {
		return nil, fmt.Errorf("%w: RSA key of %d octets with a %d-octet exponent (want a %d to %d-bit modulus, an exponent below 2^32)",
			ErrRecord, len(b), elen, MinRSABits, MaxRSABits)
	}
	k := &rsa.PublicKey{N: new(big.Int).SetBytes(b[off+elen:])}
	e := new(big.Int).SetBytes(b[off : off+elen])
	if !e.IsInt64() || e.Int64() > MaxRSAExponent {
		return nil, fmt.Errorf("%w: RSA exponent %v above %d", ErrRecord, e, MaxRSAExponent)
	}
	k.E = int(e.Int64())
	if err := checkRSA(k); err != nil {
		return nil, err
	}
	return k, nil
}

// checkRSA refuses RSA keys outside the bounds above.
func checkRSA(k *rsa.PublicKey) error {
	switch bits := k.N.BitLen(); {
	case bits < MinRSABits || bits > MaxRSABits:
		return fmt.Errorf("%w: RSA modulus of %d bits (want %d to %d)", ErrRecord, bits, MinRSABits, MaxRSABits)
	case k.N.Bit(0) == 0:
		return fmt.Errorf("%w: even RSA modulus", ErrRecord)
	case k.E < 3 || k.E > MaxRSAExponent || k.E%2 == 0:
		return fmt.Errorf("%w: RSA exponent %d (want odd, 3 to %d)", ErrRecord, k.E, MaxRSAExponent)
	}
	return nil
}

// encodeRFC3110 writes an RSA public key as RFC 3110 §2 does.
func encodeRFC3110(k *rsa.PublicKey) []byte {
	e := big.NewInt(int64(k.E)).Bytes()
	var b []byte
	if len(e) < 256 {
		b = append(b, byte(len(e)))
	} else {
		b = append(b, 0, byte(len(e)>>8), byte(len(e)))
	}
	return append(append(b, e...), k.N.Bytes()...)
}

// decodePoint reads an ECDSA public key as RFC 6605 §4 writes it: x | y.
func decodePoint(c elliptic.Curve, b []byte) (*ecdsa.PublicKey, error) {
	size := (c.Params().BitSize + 7) / 8
	if len(b) != 2*size {
		return nil, fmt.Errorf("%w: ECDSA key of %d octets, want %d", ErrRecord, len(b), 2*size)
	}
	// Parse through crypto/x509 to get the on-curve check.
	pk, err := x509.ParsePKIXPublicKey(pkixFor(c, append([]byte{4}, b...)))
	if err != nil {
		return nil, fmt.Errorf("%w: ECDSA point: %v", ErrRecord, err)
	}
	return pk.(*ecdsa.PublicKey), nil
}

// pkixFor wraps an uncompressed point in a SubjectPublicKeyInfo.
func pkixFor(c elliptic.Curve, point []byte) []byte {
	var oid []byte
	switch c {
	case elliptic.P256():
		oid = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	default:
		oid = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
	}
	alg := append([]byte{0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}, oid...)
	algSeq := append([]byte{0x30, byte(len(alg))}, alg...)
	bits := append([]byte{0x03, byte(len(point) + 1), 0}, point...)
	body := append(algSeq, bits...)
	return append([]byte{0x30, byte(len(body))}, body...)
}

func encodePoint(k *ecdsa.PublicKey) []byte {
	size := (k.Curve.Params().BitSize + 7) / 8
	b := make([]byte, 2*size)
	k.X.FillBytes(b[:size])
	k.Y.FillBytes(b[size:])
	return b
}

// decodeB64 decodes base64 with whitespace (zone files wrap keys).
func decodeB64(s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: key is not base64", ErrRecord)
	}
	return b, nil
}

// KeyFromIPSECKEY decodes the public key field of an IPSECKEY record.
func KeyFromIPSECKEY(alg uint8, key []byte) (crypto.PublicKey, error) {
	switch alg {
	case IPSECKEYNone:
		return nil, nil
	case IPSECKEYRSA:
		return decodeRFC3110(key)
	case IPSECKEYECDSA:
		switch len(key) {
		case 64:
			return decodePoint(elliptic.P256(), key)
		case 96:
			return decodePoint(elliptic.P384(), key)
		}
		return nil, fmt.Errorf("%w: ECDSA key of %d octets", ErrRecord, len(key))
	case IPSECKEYEdDSA:
		if len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: EdDSA key of %d octets (only Ed25519 is supported)", ErrKeyType, len(key))
		}
		return ed25519.PublicKey(append([]byte(nil), key...)), nil
	}
	return nil, fmt.Errorf("%w: IPSECKEY algorithm %d", ErrKeyType, alg)
}

// IPSECKEYOf encodes a public key for an IPSECKEY record.
func IPSECKEYOf(pub crypto.PublicKey) (alg uint8, key []byte, err error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return IPSECKEYRSA, encodeRFC3110(k), nil
	case *ecdsa.PublicKey:
		return IPSECKEYECDSA, encodePoint(k), nil
	case ed25519.PublicKey:
		return IPSECKEYEdDSA, []byte(k), nil
	}
	return 0, nil, fmt.Errorf("%w: %T", ErrKeyType, pub)
}

// KeyFromKEY decodes a KEY record's key (RFC 2535 §3 with protocol 4,
// IPsec), for the DNSSEC algorithms RSA, ECDSA P-256/P-384 and Ed25519.
func KeyFromKEY(protocol, alg uint8, key []byte) (crypto.PublicKey, error) {
	if protocol != keyProtocolIPsec && protocol != 255 {
		return nil, fmt.Errorf("%w: KEY record for protocol %d, not IPsec (4)", ErrRecord, protocol)
	}
	switch alg {
	case keyRSAMD5, keyRSASHA1, keyRSASHA256:
		return decodeRFC3110(key)
	case keyECDSAP256:
		return decodePoint(elliptic.P256(), key)
	case keyECDSAP384:
		return decodePoint(elliptic.P384(), key)
	case keyED25519:
		if len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: Ed25519 key of %d octets", ErrRecord, len(key))
		}
		return ed25519.PublicKey(append([]byte(nil), key...)), nil
	}
	return nil, fmt.Errorf("%w: KEY algorithm %d", ErrKeyType, alg)
}

// KEYOf encodes a public key for a KEY record: algorithm and key.
func KEYOf(pub crypto.PublicKey) (alg uint8, key []byte, err error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return keyRSASHA256, encodeRFC3110(k), nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return keyECDSAP384, encodePoint(k), nil
		}
		return keyECDSAP256, encodePoint(k), nil
	case ed25519.PublicKey:
		return keyED25519, []byte(k), nil
	}
	return 0, nil, fmt.Errorf("%w: %T", ErrKeyType, pub)
}
