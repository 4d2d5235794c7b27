package ike

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"
)

// Stateless cookies (RFC 7296 §2.6): Cookie = <VersionIDofSecret> |
// Hash(Ni | IPi | SPIi | <secret>), with the secret replaced every few
// minutes and the previous one still accepted.

const (
	defaultCookieThreshold = 32
	cookieSecretLifetime   = 5 * time.Minute
)

type cookieJar struct {
	version uint32
	secret  [2][32]byte // current, previous
	made    time.Time
}

func (j *cookieJar) rotate() {
	if j.made.IsZero() || time.Since(j.made) > cookieSecretLifetime {
		j.secret[1] = j.secret[0]
		rand.Read(j.secret[0][:])
		j.version++
		j.made = time.Now()
	}
}

func (j *cookieJar) compute(version uint32, secret []byte, ni []byte, ip netip.Addr, spiI uint64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(ni)
	m.Write(ip.Unmap().AsSlice())
	binary.Write(m, binary.BigEndian, spiI)
	out := binary.BigEndian.AppendUint32(nil, version)
	return append(out, m.Sum(nil)[:16]...)
}

func (j *cookieJar) make(ni []byte, ip netip.Addr, spiI uint64) []byte {
	j.rotate()
	return j.compute(j.version, j.secret[0][:], ni, ip, spiI)
}

func (j *cookieJar) valid(c, ni []byte, ip netip.Addr, spiI uint64) bool {
	if len(c) != 20 || j.made.IsZero() {
		return false
	}
	v := binary.BigEndian.Uint32(c)
	switch v {
	case j.version:
		return hmac.Equal(c, j.compute(v, j.secret[0][:], ni, ip, spiI))
	case j.version - 1:
		return hmac.Equal(c, j.compute(v, j.secret[1][:], ni, ip, spiI))
	}
	return false
}

// underAttack reports whether new IKE_SA_INIT requests must carry a cookie.
func (d *Daemon) underAttack() bool {
	t := d.cfg.CookieThreshold
	if t == 0 {
		t = defaultCookieThreshold
	}
	return t < 0 || len(d.half) >= t
}
