package dnsoe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
)

// AutoSEC is the content of an IP AutoSEC KEY record
// (draft-kechel-ip-autosec §2.1): the peer's algorithms in its order of
// preference and its public key.
type AutoSEC struct {
	Encryption []string // e.g. "ENCR_AES_CBC-256"
	Integrity  []string // e.g. "AUTH_HMAC_SHA2_256_128"
	DH         []string // e.g. "MODP2048"
	Key        crypto.PublicKey
	// Proposals is what of the above oevpn implements, as IKE proposals
	// (ike.ParseProposals syntax) in the peer's order.
	Proposals string
}

var autosecEncr = map[string]string{
	"ENCR_AES_CBC-128": "aes128", "ENCR_AES_CBC-256": "aes256",
	"ENCR_AES_GCM_16-128": "aes128gcm16", "ENCR_AES_GCM_16-256": "aes256gcm16",
	"ENCR_CHACHA20_POLY1305": "chacha20poly1305",
}
var autosecInteg = map[string]string{
	"AUTH_HMAC_SHA2_256_128": "sha256", "AUTH_HMAC_SHA2_384_192": "sha384", "AUTH_HMAC_SHA2_512_256": "sha512",
}
var autosecPRF = map[string]string{
	"AUTH_HMAC_SHA2_256_128": "prfsha256", "AUTH_HMAC_SHA2_384_192": "prfsha384", "AUTH_HMAC_SHA2_512_256": "prfsha512",
}
var autosecDH = map[string]string{
	"MODP2048": "modp2048", "ECP256": "ecp256", "ECP_256": "ecp256", "CURVE25519": "x25519", "CURVE_25519": "x25519",
}

// ParseAutoSEC reads the text of an IP AutoSEC KEY record:
// "ENCR,…;HASH,…;DH,…;BASE64-KEY" with whitespace and newlines ignored. The
// key is a DER SubjectPublicKeyInfo, or an RSA key as in RFC 3110.
func ParseAutoSEC(text string) (AutoSEC, error) {
	var a AutoSEC
	text = strings.Join(strings.Fields(strings.Trim(strings.TrimSpace(text), `"`)), "")
	parts := strings.Split(text, ";")
	if len(parts) != 4 {
		return a, fmt.Errorf("%w: AutoSEC record has %d sections, want 4 (encryption;hash;dh;key)", ErrRecord, len(parts))
	}
	list := func(s string) []string {
		var l []string
		for _, x := range strings.Split(s, ",") {
			if x != "" {
				l = append(l, strings.ToUpper(x))
			}
		}
		return l
	}
	a.Encryption, a.Integrity, a.DH = list(parts[0]), list(parts[1]), list(parts[2])
	if len(a.Encryption) == 0 || len(a.DH) == 0 {
		return a, fmt.Errorf("%w: AutoSEC record without encryption or DH algorithms", ErrRecord)
	}
	der, err := decodeB64(parts[3])
	if err != nil {
		return a, err
	}
	if pk, err := x509.ParsePKIXPublicKey(der); err == nil {
		switch k := pk.(type) {
		case *rsa.PublicKey:
			if err := checkRSA(k); err != nil {
				return a, fmt.Errorf("AutoSEC key: %w", err)
			}
		case *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			return a, fmt.Errorf("%w: AutoSEC key of type %T", ErrKeyType, pk)
		}
		a.Key = pk
	} else if a.Key, err = decodeRFC3110(der); err != nil {
		return a, fmt.Errorf("%w: AutoSEC key is neither a SubjectPublicKeyInfo nor an RFC 3110 RSA key (%v)", ErrRecord, err)
	}
	a.Proposals, err = a.proposals()
	return a, err
}

// proposals builds IKE proposals from the algorithms oevpn implements, in
// the record's order: the AEAD ciphers in one proposal, CBC ones with the
// integrity algorithms in another.
func (a *AutoSEC) proposals() (string, error) {
	var aead, cbc, integ, prf, dh []string
	for _, e := range a.Encryption {
		if v, ok := autosecEncr[e]; ok {
			if strings.Contains(v, "gcm") || strings.Contains(v, "chacha") {
				aead = append(aead, v)
			} else {
				cbc = append(cbc, v)
			}
		}
	}
	for _, h := range a.Integrity {
		if v, ok := autosecInteg[h]; ok {
			integ = append(integ, v)
			prf = append(prf, autosecPRF[h])
		}
	}
	for _, g := range a.DH {
		if v, ok := autosecDH[g]; ok {
			dh = append(dh, v)
		}
	}
	if len(dh) == 0 {
		return "", fmt.Errorf("%w: none of the AutoSEC DH groups %v is supported", ErrKeyType, a.DH)
	}
	if len(prf) == 0 {
		prf = []string{"prfsha256"}
	}
	var props []string
	if len(aead) > 0 {
		props = append(props, strings.Join(append(append(aead, prf...), dh...), "-"))
	}
	if len(cbc) > 0 && len(integ) > 0 {
		props = append(props, strings.Join(append(append(append(cbc, integ...), prf...), dh...), "-"))
	}
	if len(props) == 0 {
		return "", fmt.Errorf("%w: none of the AutoSEC ciphers %v is supported", ErrKeyType, a.Encryption)
	}
	return strings.Join(props, ","), nil
}
