package probe

import (
	"container/list"
	"net/netip"
	"time"
)

// Limits of G2's probing, against floods of triggers from spoofed sources
// (see README, "Security model"). A probe for an unsolicited trigger never
// sends more bytes than the trigger brought (Probe's paid); the per-peer
// table forgets, when full, the least recently probed peer whose gateway
// never answered before one whose gateway did; and each source prefix is
// probed at most PrefixBurst times at once, then once per PrefixRefill.
const (
	// MaxPeers bounds the per-peer table (the 24-hour memory of whom we
	// probed).
	MaxPeers = 1 << 16
	// PrefixBurst and PrefixRefill are the token bucket of probes to one
	// source prefix: PrefixBits4 for IPv4, PrefixBits6 for IPv6.
	PrefixBurst  = 10
	PrefixRefill = 6 * time.Second
	PrefixBits4  = 24
	PrefixBits6  = 48
	// maxBuckets bounds the prefixes whose buckets are kept; the least
	// recently used goes first.
	maxBuckets = 4096
)

// lru is a map that, when asked, gives up its least recently used entry
// first. Not safe for concurrent use.
type lru[K comparable, V any] struct {
	m map[K]*list.Element
	l list.List // of *lruEntry, least recently used first
}

type lruEntry[K comparable, V any] struct {
	k K
	v V
}

func (c *lru[K, V]) len() int { return len(c.m) }

// get returns k's value and marks it used.
func (c *lru[K, V]) get(k K) (V, bool) {
	e, ok := c.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.l.MoveToBack(e)
	return e.Value.(*lruEntry[K, V]).v, true
}

// put sets k's value and marks it used.
func (c *lru[K, V]) put(k K, v V) {
	if e, ok := c.m[k]; ok {
		e.Value.(*lruEntry[K, V]).v = v
		c.l.MoveToBack(e)
		return
	}
	if c.m == nil {
		c.m = map[K]*list.Element{}
	}
	c.m[k] = c.l.PushBack(&lruEntry[K, V]{k, v})
}

func (c *lru[K, V]) remove(k K) {
	if e, ok := c.m[k]; ok {
		c.l.Remove(e)
		delete(c.m, k)
	}
}

// oldest returns the least recently used entry.
func (c *lru[K, V]) oldest() (K, V, bool) {
	e := c.l.Front()
	if e == nil {
		var k K
		var v V
		return k, v, false
	}
	le := e.Value.(*lruEntry[K, V])
	return le.k, le.v, true
}

// peerTable is the per-peer table: when each peer host was last probed,
// in two lists so that a flood of probes nobody answers evicts only its
// own kind: tried (no answer yet) goes before answered.
type peerTable struct {
	tried, answered lru[netip.Addr, time.Time]
}

// last returns when the peer was last probed.
func (t *peerTable) last(a netip.Addr) (time.Time, bool) {
	if at, ok := t.answered.get(a); ok {
		return at, true
	}
	return t.tried.get(a)
}

// probed notes a probe of a, making room by forgetting entries older than
// interval, then the least recently probed unanswered peer, then the
// least recently probed answered one.
func (t *peerTable) probed(a netip.Addr, now time.Time, interval time.Duration) {
	t.answered.remove(a)
	for _, l := range []*lru[netip.Addr, time.Time]{&t.tried, &t.answered} {
		for k, at, ok := l.oldest(); ok && now.Sub(at) >= interval; k, at, ok = l.oldest() {
			l.remove(k)
		}
	}
	for t.tried.len()+t.answered.len() >= MaxPeers {
		l := &t.tried
		if l.len() == 0 {
			l = &t.answered
		}
		k, _, _ := l.oldest()
		l.remove(k)
	}
	t.tried.put(a, now)
}

// answered notes that a's gateway answered our probe.
func (t *peerTable) answer(a netip.Addr) {
	if at, ok := t.tried.get(a); ok {
		t.tried.remove(a)
		t.answered.put(a, at)
	}
}

// bucket is a token bucket of probes to one source prefix.
type bucket struct {
	tokens float64
	at     time.Time
}

// take spends a token, if there is one at now.
func (b *bucket) take(now time.Time) bool {
	b.tokens = min(PrefixBurst, b.tokens+float64(now.Sub(b.at))/float64(PrefixRefill))
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sourcePrefix is the prefix a's probes are limited by.
func sourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := PrefixBits6
	if a.Is4() {
		bits = PrefixBits4
	}
	p, _ := a.Prefix(bits)
	return p
}

// prefixLimiter holds the buckets of the most recently probed prefixes.
type prefixLimiter struct {
	buckets lru[netip.Prefix, *bucket]
}

// allow spends a token of a's prefix.
func (l *prefixLimiter) allow(a netip.Addr, now time.Time) bool {
	p := sourcePrefix(a)
	b, ok := l.buckets.get(p)
	if !ok {
		if l.buckets.len() >= maxBuckets {
			k, _, _ := l.buckets.oldest()
			l.buckets.remove(k)
		}
		b = &bucket{tokens: PrefixBurst, at: now}
		l.buckets.put(p, b)
	}
	return b.take(now)
}
