package tunnel

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// Bounds of opportunism's memory of the destinations that published keys.
const (
	// keyMemory is how long a destination's key is remembered past the
	// end of the DNS answer that gave it: for that long, a resolver that
	// fails or answers falsely cannot make us send its traffic in the
	// clear or let an unauthenticated peer speak for it.
	keyMemory = 24 * time.Hour
	// maxKeyed bounds the destinations remembered (in each of the two
	// sets: those we looked up, those whose initiators signed); the least
	// recently learned is forgotten first.
	maxKeyed = 65536
)

// keyedSet remembers the destinations that published a key (DNS said so,
// or a tunnel authenticated with it), until some time. It is bounded:
// when full, the destination learned least recently is forgotten.
type keyedSet struct {
	mu  sync.Mutex
	m   map[netip.Addr]*list.Element // of *keyedEntry
	lru list.List                    // most recently learned at the front
}

type keyedEntry struct {
	addr  netip.Addr
	until time.Time
}

// learn remembers that a published a key in an answer valid until
// expires (keyMemory more is added).
func (k *keyedSet) learn(a netip.Addr, expires, now time.Time) {
	until := expires
	if until.Before(now) {
		until = now
	}
	until = until.Add(keyMemory)
	a = a.Unmap()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = make(map[netip.Addr]*list.Element)
	}
	if el, ok := k.m[a]; ok {
		if e := el.Value.(*keyedEntry); e.until.Before(until) {
			e.until = until
		}
		k.lru.MoveToFront(el)
		return
	}
	for k.lru.Len() >= maxKeyed {
		old := k.lru.Back()
		delete(k.m, old.Value.(*keyedEntry).addr)
		k.lru.Remove(old)
	}
	k.m[a] = k.lru.PushFront(&keyedEntry{addr: a, until: until})
}

// known reports whether a is remembered as publishing a key at now.
func (k *keyedSet) known(a netip.Addr, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	el, ok := k.m[a.Unmap()]
	if !ok {
		return false
	}
	if e := el.Value.(*keyedEntry); now.After(e.until) {
		delete(k.m, e.addr)
		k.lru.Remove(el)
		return false
	}
	return true
}

// forget forgets a (DNS says it publishes no key any more).
func (k *keyedSet) forget(a netip.Addr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if el, ok := k.m[a.Unmap()]; ok {
		delete(k.m, a.Unmap())
		k.lru.Remove(el)
	}
}

// len returns how many destinations are remembered.
func (k *keyedSet) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lru.Len()
}
