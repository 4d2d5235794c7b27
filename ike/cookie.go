package ike

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"
)

// Stateless cookies (RFC 7296 §2.6): Cookie = <VersionIDofSecret> |
// Hash(Ni | IPi | SPIi | <secret>), with the secret replaced every few
// minutes and the previous one still accepted.

const (
	defaultCookieThreshold = 32
	cookieSecretLifetime   = 5 * time.Minute
)

// cookieJar holds the cookie secrets. Both are random from the start, the
// version of the first is random too, and the previous secret is accepted
// only once a rotation made one: no cookie is ever checked against a
// secret that was not drawn from crypto/rand (an all-zero previous secret
// made cookies computable by anyone, for any spoofed source). A jar is
// never changed once published: a rotation publishes a new one, so that
// cookies are checked and made on the receiving goroutines too.
type cookieJar struct {
	version uint32
	secret  [2][32]byte // current, previous
	hasPrev bool        // secret[1] is a real previous secret
	made    time.Time
}

func newCookieJar() *cookieJar {
	j := &cookieJar{}
	rand.Read(j.secret[0][:])
	rand.Read(j.secret[1][:]) // never used before a rotation, but never zero either
	var v [4]byte
	rand.Read(v[:])
	j.version = binary.BigEndian.Uint32(v[:])
	j.made = time.Now()
	return j
}

// rotated returns the jar that follows j.
func (j *cookieJar) rotated() *cookieJar {
	n := &cookieJar{version: j.version + 1, hasPrev: true, made: time.Now()}
	n.secret[1] = j.secret[0]
	rand.Read(n.secret[0][:])
	return n
}

// cookies publishes the current cookie jar.
type cookies struct{ jar atomic.Pointer[cookieJar] }

func newCookies() *cookies {
	c := &cookies{}
	c.jar.Store(newCookieJar())
	return c
}

// current returns the jar, rotated first if its secret is old.
func (c *cookies) current() *cookieJar {
	for {
		j := c.jar.Load()
		if time.Since(j.made) <= cookieSecretLifetime || c.jar.CompareAndSwap(j, j.rotated()) {
			return c.jar.Load()
		}
	}
}

func (c *cookies) make(ni []byte, ip netip.Addr, spiI uint64) []byte {
	j := c.current()
	return j.compute(j.version, j.secret[0][:], ni, ip, spiI)
}

func (c *cookies) valid(cookie, ni []byte, ip netip.Addr, spiI uint64) bool {
	return c.current().valid(cookie, ni, ip, spiI)
}

func (j *cookieJar) compute(version uint32, secret []byte, ni []byte, ip netip.Addr, spiI uint64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(ni)
	m.Write(ip.Unmap().AsSlice())
	binary.Write(m, binary.BigEndian, spiI)
	out := binary.BigEndian.AppendUint32(nil, version)
	return append(out, m.Sum(nil)[:16]...)
}

func (j *cookieJar) valid(c, ni []byte, ip netip.Addr, spiI uint64) bool {
	if len(c) != 20 {
		return false
	}
	v := binary.BigEndian.Uint32(c)
	switch {
	case v == j.version:
		return hmac.Equal(c, j.compute(v, j.secret[0][:], ni, ip, spiI))
	case v == j.version-1 && j.hasPrev:
		return hmac.Equal(c, j.compute(v, j.secret[1][:], ni, ip, spiI))
	}
	return false
}

// underAttack reports whether new IKE_SA_INIT requests must carry a cookie.
func (d *Daemon) underAttack() bool { return d.underAttackAt(len(d.half)) }

// underAttackAt reports whether they must with half half-open IKE SAs.
func (d *Daemon) underAttackAt(half int) bool {
	t := d.cfg.CookieThreshold
	if t == 0 {
		t = defaultCookieThreshold
	}
	return t < 0 || half >= t
}
