package ike

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"math/big"

	"golang.org/x/crypto/chacha20poly1305"
)

// ErrUnsupported is wrapped when a transform or group is not implemented.
var ErrUnsupported = errors.New("ike: unsupported algorithm")

// prfFunc is a pseudorandom function (§3.3.2 type 2).
type prfFunc struct {
	id   uint16
	hash func() hash.Hash
	size int
}

func newPRF(id uint16) (*prfFunc, error) {
	switch id {
	case PRF_HMAC_SHA2_256:
		return &prfFunc{id, sha256.New, 32}, nil
	case PRF_HMAC_SHA2_384:
		return &prfFunc{id, sha512.New384, 48}, nil
	case PRF_HMAC_SHA2_512:
		return &prfFunc{id, sha512.New, 64}, nil
	}
	return nil, fmt.Errorf("%w: PRF %d", ErrUnsupported, id)
}

// sum computes prf(key, data...).
func (p *prfFunc) sum(key []byte, data ...[]byte) []byte {
	m := hmac.New(p.hash, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// plus computes prf+ (RFC 7296 §2.13): T1 | T2 | … with
// Tn = prf(K, Tn-1 | S | n), truncated to n octets.
func (p *prfFunc) plus(key, seed []byte, n int) []byte {
	out := make([]byte, 0, n+p.size)
	var t []byte
	for i := 1; len(out) < n; i++ {
		if i > 255 {
			panic("ike: prf+ asked for more than 255 blocks") // callers never do
		}
		t = p.sum(key, t, seed, []byte{byte(i)})
		out = append(out, t...)
	}
	return out[:n]
}

// dhGroup is a Diffie-Hellman group (§3.3.2 type 4).
type dhGroup interface {
	id() uint16
	// generate returns a private key and the public value for KE.
	generate() (priv any, pub []byte, err error)
	// shared computes g^ir from our private key and the peer's KE data.
	shared(priv any, peer []byte) ([]byte, error)
}

func newDH(id uint16) (dhGroup, error) {
	switch id {
	case DH_CURVE25519:
		return ecdhGroup{DH_CURVE25519, ecdh.X25519()}, nil
	case DH_ECP_256:
		return ecdhGroup{DH_ECP_256, ecdh.P256()}, nil
	case DH_MODP_2048:
		return modp2048, nil
	}
	return nil, fmt.Errorf("%w: DH group %d", ErrUnsupported, id)
}

type ecdhGroup struct {
	gid   uint16
	curve ecdh.Curve
}

func (g ecdhGroup) id() uint16 { return g.gid }

func (g ecdhGroup) generate() (any, []byte, error) {
	k, err := g.curve.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	pub := k.PublicKey().Bytes()
	if g.gid == DH_ECP_256 {
		pub = pub[1:] // RFC 5903 §7: x | y without the 0x04 prefix
	}
	return k, pub, nil
}

func (g ecdhGroup) shared(priv any, peer []byte) ([]byte, error) {
	if g.gid == DH_ECP_256 {
		if len(peer) != 64 {
			return nil, fmt.Errorf("%w: ECP-256 KE of %d octets", ErrMalformed, len(peer))
		}
		peer = append([]byte{4}, peer...)
	}
	pk, err := g.curve.NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: bad KE: %v", ErrMalformed, err)
	}
	s, err := priv.(*ecdh.PrivateKey).ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("%w: bad KE: %v", ErrMalformed, err)
	}
	return s, nil // for ECP-256 the x coordinate (RFC 5903 §7)
}

type modpGroup struct {
	gid uint16
	p   *big.Int
	g   *big.Int
	len int
}

// modp2048 is RFC 3526 group 14.
var modp2048 = &modpGroup{gid: DH_MODP_2048, g: big.NewInt(2), len: 256, p: mustHex(
	"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD" +
		"EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED" +
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F" +
		"83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B" +
		"E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510" +
		"15728E5A8AACAA68FFFFFFFFFFFFFFFF")}

func mustHex(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		panic("bad constant")
	}
	return n
}

func (g *modpGroup) id() uint16 { return g.gid }

func (g *modpGroup) generate() (any, []byte, error) {
	// A 256-bit exponent is ample for group 14 (RFC 3526 §8).
	x, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 320))
	if err != nil {
		return nil, nil, err
	}
	pub := new(big.Int).Exp(g.g, x, g.p)
	return x, pub.FillBytes(make([]byte, g.len)), nil
}

func (g *modpGroup) shared(priv any, peer []byte) ([]byte, error) {
	if len(peer) != g.len {
		return nil, fmt.Errorf("%w: MODP KE of %d octets", ErrMalformed, len(peer))
	}
	y := new(big.Int).SetBytes(peer)
	// Reject 0, 1 and p-1 and anything ≥ p (RFC 6989 §2.1).
	pm1 := new(big.Int).Sub(g.p, big.NewInt(1))
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(pm1) >= 0 {
		return nil, fmt.Errorf("%w: MODP KE out of range", ErrMalformed)
	}
	s := new(big.Int).Exp(y, priv.(*big.Int), g.p)
	return s.FillBytes(make([]byte, g.len)), nil
}

// skCipher protects SK payloads in one direction (§3.14, RFC 5282, RFC 7634).
type skCipher struct {
	aead   cipher.AEAD // AEAD transforms
	salt   []byte
	block  cipher.Block // AES-CBC
	integ  func() hash.Hash
	intKey []byte
	icvLen int
}

// encrSpec describes an ENCR transform with its key length in octets.
type encrSpec struct {
	id     uint16
	keyLen int // cipher key only
	salt   int
	aead   bool
}

func newEncrSpec(t Transform) (encrSpec, error) {
	switch t.ID {
	case ENCR_AES_GCM_16:
		if t.KeyLen != 128 && t.KeyLen != 256 {
			return encrSpec{}, fmt.Errorf("%w: AES-GCM key length %d", ErrUnsupported, t.KeyLen)
		}
		return encrSpec{t.ID, int(t.KeyLen) / 8, 4, true}, nil
	case ENCR_CHACHA20_POLY1305:
		if t.KeyLen != 0 {
			return encrSpec{}, fmt.Errorf("%w: ChaCha20-Poly1305 takes no key length", ErrMalformed)
		}
		return encrSpec{t.ID, 32, 4, true}, nil
	case ENCR_AES_CBC:
		if t.KeyLen != 128 && t.KeyLen != 256 {
			return encrSpec{}, fmt.Errorf("%w: AES-CBC key length %d", ErrUnsupported, t.KeyLen)
		}
		return encrSpec{t.ID, int(t.KeyLen) / 8, 0, false}, nil
	}
	return encrSpec{}, fmt.Errorf("%w: ENCR %d", ErrUnsupported, t.ID)
}

// integSpec describes an INTEG transform: key and ICV lengths.
type integSpec struct {
	id             uint16
	keyLen, icvLen int
	hash           func() hash.Hash
}

func newIntegSpec(id uint16) (integSpec, error) {
	switch id {
	case AUTH_HMAC_SHA2_256_128:
		return integSpec{id, 32, 16, sha256.New}, nil
	case AUTH_HMAC_SHA2_384_192:
		return integSpec{id, 48, 24, sha512.New384}, nil
	case AUTH_HMAC_SHA2_512_256:
		return integSpec{id, 64, 32, sha512.New}, nil
	}
	return integSpec{}, fmt.Errorf("%w: INTEG %d", ErrUnsupported, id)
}

func newSKCipher(e encrSpec, in integSpec, encKey, intKey []byte) (*skCipher, error) {
	c := &skCipher{}
	var err error
	switch e.id {
	case ENCR_AES_GCM_16:
		var b cipher.Block
		if b, err = aes.NewCipher(encKey[:e.keyLen]); err == nil {
			c.aead, err = cipher.NewGCM(b)
		}
		c.salt = encKey[e.keyLen:]
		c.icvLen = 16
	case ENCR_CHACHA20_POLY1305:
		c.aead, err = chacha20poly1305.New(encKey[:32])
		c.salt = encKey[32:]
		c.icvLen = 16
	case ENCR_AES_CBC:
		c.block, err = aes.NewCipher(encKey)
		c.integ, c.intKey, c.icvLen = in.hash, intKey, in.icvLen
	}
	return c, err
}

func (c *skCipher) ivLen() int {
	if c.aead != nil {
		return 8
	}
	return aes.BlockSize
}

// seal encrypts plaintext (the inner payload chain) for an SK payload whose
// content starts at len(msg): msg holds the IKE header and the SK generic
// header (the AAD), both with their final lengths already set. It returns msg
// with IV, ciphertext and ICV appended.
func (c *skCipher) seal(msg, plaintext []byte) ([]byte, error) {
	iv := make([]byte, c.ivLen())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	if c.aead != nil {
		// RFC 5282 §3: padding is allowed but not needed: pad length 0.
		pt := append(append([]byte(nil), plaintext...), 0)
		nonce := append(append([]byte(nil), c.salt...), iv...)
		aad := msg
		out := append(append([]byte(nil), msg...), iv...)
		return c.aead.Seal(out, nonce, pt, aad), nil
	}
	padLen := (aes.BlockSize - (len(plaintext)+1)%aes.BlockSize) % aes.BlockSize
	pt := make([]byte, len(plaintext)+padLen+1)
	copy(pt, plaintext)
	pt[len(pt)-1] = byte(padLen)
	out := append(append([]byte(nil), msg...), iv...)
	ctStart := len(out)
	out = append(out, pt...)
	cipher.NewCBCEncrypter(c.block, iv).CryptBlocks(out[ctStart:], out[ctStart:])
	m := hmac.New(c.integ, c.intKey)
	m.Write(out)
	return append(out, m.Sum(nil)[:c.icvLen]...), nil
}

// ErrIntegrity is returned when an SK payload fails its integrity check.
var ErrIntegrity = errors.New("ike: integrity check failed")

// open verifies and decrypts an SK payload: msg is the whole message, skBody
// the offset of the SK payload's content (after its generic header).
func (c *skCipher) open(msg []byte, skBody int) ([]byte, error) {
	ivl := c.ivLen()
	if len(msg)-skBody < ivl+c.icvLen+1 {
		return nil, fmt.Errorf("%w: SK payload too short", ErrTruncated)
	}
	iv := msg[skBody : skBody+ivl]
	ct := msg[skBody+ivl:]
	var pt []byte
	if c.aead != nil {
		nonce := append(append([]byte(nil), c.salt...), iv...)
		var err error
		if pt, err = c.aead.Open(nil, nonce, ct, msg[:skBody]); err != nil {
			return nil, ErrIntegrity
		}
	} else {
		icv := ct[len(ct)-c.icvLen:]
		ct = ct[:len(ct)-c.icvLen]
		m := hmac.New(c.integ, c.intKey)
		m.Write(msg[:len(msg)-c.icvLen])
		if subtle.ConstantTimeCompare(m.Sum(nil)[:c.icvLen], icv) != 1 {
			return nil, ErrIntegrity
		}
		if len(ct)%aes.BlockSize != 0 || len(ct) == 0 {
			return nil, fmt.Errorf("%w: ciphertext not a multiple of the block size", ErrMalformed)
		}
		pt = make([]byte, len(ct))
		cipher.NewCBCDecrypter(c.block, iv).CryptBlocks(pt, ct)
	}
	if len(pt) == 0 {
		return nil, fmt.Errorf("%w: empty SK plaintext", ErrMalformed)
	}
	padLen := int(pt[len(pt)-1])
	if padLen+1 > len(pt) {
		return nil, fmt.Errorf("%w: SK pad length", ErrMalformed)
	}
	return pt[:len(pt)-1-padLen], nil
}
