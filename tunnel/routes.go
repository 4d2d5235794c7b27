package tunnel

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// routeTable maps outbound packets to SA pairs. It is immutable once
// published: the datapath loads it with one atomic read and takes no
// lock. The control plane derives the next table from the current one by
// path copying (with, without), which costs O(prefix length) per prefix
// of the pair's selectors, whatever the number of pairs.
//
// Pairs are kept in a multibit trie per address family, under the
// prefixes that make up their remote selectors' address ranges. Each
// level of the trie takes one octet of the address, and a subtree that
// holds one prefix is a leaf, so a lookup visits at most 5 nodes for IPv4
// and 17 for IPv6, whatever the number of pairs, and fewer where the
// addresses are sparse, without allocating: with 100,000 pairs a binary
// trie took 17 dependent memory reads per IPv4 packet, most of them cache
// misses.
type routeTable struct {
	v4, v6 *rnode
	traps  []*trap
}

// rnode is a node of the route trie at depth d (octet d of the address
// picks its children). It holds the pairs routed by the prefixes of
// lengths 8d to 8d+7 under its own prefix (length 8d), each list newest
// first, and its children; both are compressed arrays indexed by the rank
// of their index in a bitmap. The prefix of length 8d+l is at index
// o>>(8-l) | 1<<l, where o is octet d of the prefix (the heap order of a
// complete binary tree: the deeper prefix has the larger index).
//
// A leaf stands for a subtree that holds a single prefix, of any length
// its place allows: its key (in kids, which a leaf does not need) and
// length are in the node, and lists holds its pairs. The root is never a
// leaf.
//
// What each level of a lookup reads comes first (one cache line when
// the node has no prefixes of its own).
type rnode struct {
	kids  bitmap256
	child []*rnode
	npfx  int32 // number of prefixes here (bits set in pfx)
	leaf  bool
	bits  uint8 // a leaf's prefix length
	pfx   bitmap256
	lists []pairList
}

func newLeaf(k addrKey, bits int, l []*SAPair) *rnode {
	return &rnode{kids: bitmap256{k.hi, k.lo}, leaf: true, bits: uint8(bits), lists: []pairList{{l[0], l}}}
}

// contains reports whether leaf n's prefix contains k.
func (n *rnode) contains(k addrKey) bool {
	return k.masked(int(n.bits)) == addrKey{n.kids[0], n.kids[1]}
}

// pairList is the pairs of a prefix, newest first, with the first one at
// hand (most prefixes have one pair).
type pairList struct {
	first *SAPair
	all   []*SAPair
}

// bitmap256 is a set of octets.
type bitmap256 [4]uint64

func (b *bitmap256) has(i int) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b *bitmap256) set(i int)      { b[i>>6] |= 1 << (i & 63) }
func (b *bitmap256) clear(i int)    { b[i>>6] &^= 1 << (i & 63) }

// rank returns the number of members below i.
func (b *bitmap256) rank(i int) int {
	r := 0
	for w := range i >> 6 {
		r += bits.OnesCount64(b[w])
	}
	return r + bits.OnesCount64(b[i>>6]&(1<<(i&63)-1))
}

// highest returns the largest member of b that is also in m, or 0.
func (b *bitmap256) highest(m *bitmap256) int {
	for w := 3; w >= 0; w-- {
		if x := b[w] & m[w]; x != 0 {
			return w<<6 | (63 - bits.LeadingZeros64(x))
		}
	}
	return 0
}

// pathMask[o] holds the indexes of the prefixes of lengths 0 to 7 that
// contain octet o, so that pfx.highest(&pathMask[o]) is the longest
// prefix of a node that holds it.
var pathMask = func() (m [256]bitmap256) {
	for o := range 256 {
		for l := range 8 {
			m[o].set(pfxIndex(o, l))
		}
	}
	return m
}()

// pfxIndex returns the index in a node of the prefix of length l (0 to 7)
// of octet o.
func pfxIndex(o, l int) int { return o>>(8-l) | 1<<l }

// addrKey is an address as a 128-bit number, left-aligned: an IPv4
// address takes the 32 leftmost bits.
type addrKey struct{ hi, lo uint64 }

func keyOf(a netip.Addr) (addrKey, int) {
	if a.Is4() {
		b := a.As4()
		return addrKey{hi: uint64(binary.BigEndian.Uint32(b[:])) << 32}, 32
	}
	b := a.As16()
	return addrKey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}, 128
}

// octet returns octet d of k, counting from the left.
func (k addrKey) octet(d int) int {
	if d < 8 {
		return int(k.hi>>(56-8*d)) & 0xff
	}
	return int(k.lo>>(56-8*(d-8))) & 0xff
}

// ones returns the key of the n leftmost bits set.
func ones(n int) addrKey {
	switch {
	case n <= 0:
		return addrKey{}
	case n < 64:
		return addrKey{hi: ^uint64(0) << (64 - n)}
	case n < 128:
		return addrKey{^uint64(0), ^uint64(0) << (128 - n)}
	}
	return addrKey{^uint64(0), ^uint64(0)}
}

func (k addrKey) masked(n int) addrKey { m := ones(n); return addrKey{k.hi & m.hi, k.lo & m.lo} }

// last returns the last address of the prefix k/n, of a family of width w.
func (k addrKey) last(n, w int) addrKey {
	m, f := ones(n), ones(w)
	return addrKey{k.hi | f.hi&^m.hi, k.lo | f.lo&^m.lo}
}

func (k addrKey) cmp(o addrKey) int {
	if k.hi != o.hi {
		if k.hi < o.hi {
			return -1
		}
		return 1
	}
	if k.lo != o.lo {
		if k.lo < o.lo {
			return -1
		}
		return 1
	}
	return 0
}

// next returns the address after k, of a family of width w (k is not the
// last one).
func (k addrKey) next(w int) addrKey {
	if w == 32 {
		return addrKey{hi: k.hi + 1<<32}
	}
	lo, carry := bits.Add64(k.lo, 1, 0)
	return addrKey{k.hi + carry, lo}
}

// rangePrefixes calls f with the fewest prefixes that make up the address
// range of s (at most twice the address length).
func rangePrefixes(s policy.Selector, f func(k addrKey, n int)) {
	start, w := keyOf(s.Start.Unmap())
	end, we := keyOf(s.End.Unmap())
	if w != we || end.cmp(start) < 0 {
		return
	}
	for {
		n := w
		for n > 0 && start.masked(n-1) == start && start.last(n-1, w).cmp(end) <= 0 {
			n--
		}
		f(start, n)
		last := start.last(n, w)
		if last.cmp(end) >= 0 {
			return
		}
		start = last.next(w)
	}
}

// root returns the address of the trie root for a family.
func (rt *routeTable) root(v4 bool) **rnode {
	if v4 {
		return &rt.v4
	}
	return &rt.v6
}

// with returns a table that also routes outbound traffic to p.
func (rt *routeTable) with(p *SAPair) *routeTable {
	return rt.update(p, func(l []*SAPair) []*SAPair {
		if slices.Contains(l, p) { // two selectors sharing a prefix
			return l
		}
		// Newest first: a rekeyed SA takes over the traffic at once,
		// while the old one still accepts what is in flight.
		i, _ := slices.BinarySearchFunc(l, p, func(a, b *SAPair) int { return cmp.Compare(b.seq, a.seq) })
		return slices.Insert(slices.Clip(l), i, p)
	})
}

// without returns a table that no longer routes traffic to p.
func (rt *routeTable) without(p *SAPair) *routeTable {
	return rt.update(p, func(l []*SAPair) []*SAPair {
		i := slices.Index(l, p)
		if i < 0 {
			return l
		}
		return slices.Delete(slices.Clone(l), i, i+1)
	})
}

// update returns a copy of rt in which the pairs at each prefix of p's
// remote selectors are f of those of rt.
func (rt *routeTable) update(p *SAPair, f func([]*SAPair) []*SAPair) *routeTable {
	nt := *rt
	for _, s := range p.Remote {
		v4 := s.Start.Unmap().Is4()
		w := 128
		if v4 {
			w = 32
		}
		rangePrefixes(s, func(k addrKey, n int) {
			r := nt.root(v4)
			*r = (*r).update(k, n, 0, w, f)
		})
	}
	return &nt
}

// update returns a copy of the trie under n, at depth d of a family of
// width w, in which the pairs at k/bits are f of the current ones; it
// copies only the nodes on the way, and returns nil for a trie left
// empty.
func (n *rnode) update(k addrKey, bits, d, w int, f func([]*SAPair) []*SAPair) *rnode {
	switch {
	case n == nil && d > 0:
		if l := f(nil); len(l) > 0 {
			return newLeaf(k, bits, l)
		}
		return nil
	case n != nil && n.leaf:
		lk, lb := addrKey{n.kids[0], n.kids[1]}, int(n.bits)
		if lk == k && lb == bits {
			old := n.lists[0].all
			switch l := f(old); {
			case len(l) == len(old) && &l[0] == &old[0]:
				return n
			case len(l) > 0:
				return newLeaf(k, bits, l)
			}
			return nil
		}
		if len(f(nil)) == 0 {
			return n
		}
		// Two prefixes: the leaf becomes a node of depth d.
		old := n.lists[0].all
		m := (*rnode)(nil).updateNode(lk, lb, d, w, func([]*SAPair) []*SAPair { return old })
		return m.updateNode(k, bits, d, w, f)
	}
	return n.updateNode(k, bits, d, w, f)
}

// updateNode is update for a node that is not a leaf (or nil: an empty
// node of depth d).
func (n *rnode) updateNode(k addrKey, bits, d, w int, f func([]*SAPair) []*SAPair) *rnode {
	var m rnode
	if n != nil {
		m = *n
	}
	if bits < 8*(d+1) { // the prefix is here
		l, o := bits-8*d, 0
		if d < w/8 {
			o = k.octet(d)
		}
		i := pfxIndex(o, l)
		r, had := m.pfx.rank(i), m.pfx.has(i)
		var old []*SAPair
		if had {
			old = m.lists[r].all
		}
		l2 := f(old)
		switch {
		case len(l2) == len(old) && (len(old) == 0 || &l2[0] == &old[0]):
			return n
		case len(l2) > 0 && had:
			m.lists = replaced(m.lists, r, pairList{l2[0], l2})
		case len(l2) > 0:
			m.lists = inserted(m.lists, r, pairList{l2[0], l2})
			m.pfx.set(i)
			m.npfx++
		default:
			m.lists = deleted(m.lists, r)
			m.pfx.clear(i)
			m.npfx--
		}
	} else {
		o := k.octet(d)
		r, had := m.kids.rank(o), m.kids.has(o)
		var c *rnode
		if had {
			c = m.child[r]
		}
		c2 := c.update(k, bits, d+1, w, f)
		switch {
		case c2 == c:
			return n
		case c2 != nil && had:
			m.child = replaced(m.child, r, c2)
		case c2 != nil:
			m.child = inserted(m.child, r, c2)
			m.kids.set(o)
		default:
			m.child = deleted(m.child, r)
			m.kids.clear(o)
		}
	}
	if m.npfx == 0 && m.kids == (bitmap256{}) {
		return nil
	}
	return &m
}

// The copies of a node's arrays are of the exact length: the trie holds
// only what it needs, and a change makes as little garbage as it can.

func replaced[T any](s []T, i int, v T) []T {
	c := append(make([]T, 0, len(s)), s...)
	c[i] = v
	return c
}

func inserted[T any](s []T, i int, v T) []T {
	c := make([]T, len(s)+1)
	copy(c, s[:i])
	c[i] = v
	copy(c[i+1:], s[i:])
	return c
}

func deleted[T any](s []T, i int) []T {
	if len(s) == 1 {
		return nil
	}
	c := make([]T, len(s)-1)
	copy(c, s[:i])
	copy(c[i:], s[i+1:])
	return c
}

// routePath holds the lists of pairs of the prefixes that contain an
// address, from the shortest prefix to the longest.
type routePath struct {
	n     int
	lists [129][]*SAPair
}

// walk fills path with the lists of the prefixes that contain a.
func (rt *routeTable) walk(a netip.Addr, path *routePath) {
	n, k, w := rt.start(a)
	path.n = 0
	for d := 0; n != nil; d++ {
		if n.leaf {
			if n.contains(k) {
				path.lists[path.n] = n.lists[0].all
				path.n++
			}
			return
		}
		o := 0
		if d < w/8 {
			o = k.octet(d)
		}
		if n.npfx > 0 {
			m := n.pfx
			for j := range m {
				m[j] &= pathMask[o][j]
			}
			for j, x := range m {
				for x != 0 {
					i := j<<6 | bits.TrailingZeros64(x)
					x &= x - 1
					path.lists[path.n] = n.lists[n.pfx.rank(i)].all
					path.n++
				}
			}
		}
		if d == w/8 || !n.kids.has(o) {
			return
		}
		n = n.child[n.kids.rank(o)]
	}
}

// start returns the root of a's family, a's key and the family's width.
func (rt *routeTable) start(a netip.Addr) (*rnode, addrKey, int) {
	k, w := keyOf(a)
	if w == 32 {
		return rt.v4, k, w
	}
	return rt.v6, k, w
}

// deepest returns the pairs of the longest prefix that contains a, or
// nil.
func (rt *routeTable) deepest(a netip.Addr) *pairList {
	n, k, w := rt.start(a)
	var found *pairList
	for d := 0; n != nil; d++ {
		if n.leaf {
			if n.contains(k) {
				return &n.lists[0]
			}
			break
		}
		o := 0
		if d < w/8 {
			o = k.octet(d)
		}
		if n.npfx > 0 {
			if i := n.pfx.highest(&pathMask[o]); i > 0 {
				found = &n.lists[n.pfx.rank(i)]
			}
		}
		if d == w/8 || !n.kids.has(o) {
			break
		}
		n = n.child[n.kids.rank(o)]
	}
	return found
}

// lookup returns the pair for the packet: of the pairs that cover it, by
// the longest prefix of their remote selectors and then the newest, the
// first that may carry outbound traffic, or else the first.
func (rt *routeTable) lookup(p *ipview.Packet) *SAPair {
	// Most often the longest prefix decides, with no path to keep.
	l := rt.deepest(p.Dst)
	if l == nil {
		return nil
	}
	if pair := l.first; pair.ready.Load() && pair.Remote.MatchDst(p) && pair.Local.MatchSrc(p) {
		return pair
	}
	for _, pair := range l.all[1:] {
		if pair.ready.Load() && pair.Remote.MatchDst(p) && pair.Local.MatchSrc(p) {
			return pair
		}
	}
	return rt.lookupPath(p)
}

// lookupPath is lookup through every prefix on the way to the destination.
func (rt *routeTable) lookupPath(p *ipview.Packet) *SAPair {
	var path routePath
	rt.walk(p.Dst, &path)
	var fallback *SAPair
	for i := path.n - 1; i >= 0; i-- {
		for _, pair := range path.lists[i] {
			if pair.Remote.MatchDst(p) && pair.Local.MatchSrc(p) {
				if pair.ready.Load() {
					return pair
				}
				if fallback == nil {
					fallback = pair
				}
			}
		}
	}
	return fallback
}

// pairFor is lookup by destination address alone.
func (rt *routeTable) pairFor(dst netip.Addr) *SAPair {
	var path routePath
	rt.walk(dst, &path)
	var fallback *SAPair
	for i := path.n - 1; i >= 0; i-- {
		for _, p := range path.lists[i] {
			if p.ready.Load() {
				return p
			}
			if fallback == nil {
				fallback = p
			}
		}
	}
	return fallback
}

// authenticated reports whether an authenticated pair carries traffic to a.
func (rt *routeTable) authenticated(a netip.Addr) bool {
	var path routePath
	rt.walk(a, &path)
	for i := range path.n {
		for _, p := range path.lists[i] {
			if !p.unauth {
				return true
			}
		}
	}
	return false
}
