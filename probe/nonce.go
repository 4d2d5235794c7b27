package probe

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync"
	"time"
)

// nonceMACLen is the part of the HMAC a nonce carries: with the key ID,
// 17 octets (draft §5.5 allows 8 to 64).
const nonceMACLen = 16

// DefaultRollover is how often the nonce key changes.
const DefaultRollover = 10 * time.Minute

// Nonces mints and checks stateless nonces (draft §5.5): key-ID ||
// HMAC-SHA256(K, gateway-IP || packet-fragment). The key rolls over every
// Rollover; a nonce minted with the previous key still validates, so one
// minted just before a rollover is good for at least one more period.
// Safe for concurrent use.
type Nonces struct {
	// Rollover is how often the key changes (default DefaultRollover).
	Rollover time.Duration
	// Now, if set, is the clock (tests).
	Now func() time.Time

	mu      sync.Mutex
	keys    [2][]byte // keys[0] current, keys[1] previous
	ids     [2]byte   // their key IDs
	rotated time.Time
}

func (n *Nonces) now() time.Time {
	if n.Now != nil {
		return n.Now()
	}
	return time.Now()
}

// rollLocked rotates the keys as often as time has passed.
func (n *Nonces) rollLocked() {
	period := n.Rollover
	if period <= 0 {
		period = DefaultRollover
	}
	now := n.now()
	if n.keys[0] == nil {
		n.keys[0], n.ids[0], n.rotated = newKey(), 0, now
		return
	}
	for steps := 0; now.Sub(n.rotated) >= period && steps < 2; steps++ {
		n.keys[1], n.ids[1] = n.keys[0], n.ids[0]
		n.keys[0], n.ids[0] = newKey(), n.ids[0]+1
		n.rotated = n.rotated.Add(period)
	}
	if now.Sub(n.rotated) >= period {
		n.rotated = now // idle for long: both keys are new
		n.keys[1] = nil
	}
}

func newKey() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func mac(key []byte, gw netip.Addr, frag []byte) []byte {
	h := hmac.New(sha256.New, key)
	a := gw.Unmap().AsSlice()
	h.Write(a)
	h.Write(frag)
	return h.Sum(nil)[:nonceMACLen]
}

// Mint returns a nonce bound to the gateway address and packet fragment.
func (n *Nonces) Mint(gw netip.Addr, frag []byte) []byte {
	n.mu.Lock()
	n.rollLocked()
	key, id := n.keys[0], n.ids[0]
	n.mu.Unlock()
	return append([]byte{id}, mac(key, gw, frag)...)
}

// Valid reports whether nonce was minted by n, with the current or the
// previous key, for gw and frag.
func (n *Nonces) Valid(nonce []byte, gw netip.Addr, frag []byte) bool {
	if len(nonce) != 1+nonceMACLen {
		return false
	}
	n.mu.Lock()
	n.rollLocked()
	keys, ids := n.keys, n.ids
	n.mu.Unlock()
	for i, k := range keys {
		if k != nil && ids[i] == nonce[0] && hmac.Equal(mac(k, gw, frag), nonce[1:]) {
			return true
		}
	}
	return false
}
