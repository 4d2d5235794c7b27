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
// Pairs are kept in a path-compressed binary trie per address family,
// under the prefixes that make up their remote selectors' address ranges;
// a lookup walks the destination's path and tries the longest prefix
// first, in O(address length) steps without allocating.
type routeTable struct {
	v4, v6 *rnode
	traps  []*trap
}

// rnode is a node of the route trie: the pairs routed by the prefix
// key/bits, newest first, and the subtrees whose prefixes extend it by a
// 0 or a 1 bit (and maybe more). A node without pairs has two children.
type rnode struct {
	key   addrKey
	bits  uint8
	child [2]*rnode
	pairs []*SAPair
}

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

// bit returns bit i of k, counting from the left.
func (k addrKey) bit(i int) int {
	if i < 64 {
		return int(k.hi>>(63-i)) & 1
	}
	return int(k.lo>>(127-i)) & 1
}

// common returns the number of leading bits k and o share.
func (k addrKey) common(o addrKey) int {
	if x := k.hi ^ o.hi; x != 0 {
		return bits.LeadingZeros64(x)
	}
	return 64 + bits.LeadingZeros64(k.lo^o.lo)
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
		rangePrefixes(s, func(k addrKey, n int) {
			r := nt.root(s.Start.Unmap().Is4())
			*r = (*r).update(k, n, f)
		})
	}
	return &nt
}

// update returns a copy of the trie under n in which the pairs at k/bits
// are f of the current ones; it copies only the nodes on the way.
func (n *rnode) update(k addrKey, bits int, f func([]*SAPair) []*SAPair) *rnode {
	if n == nil {
		if l := f(nil); len(l) > 0 {
			return &rnode{key: k, bits: uint8(bits), pairs: l}
		}
		return nil
	}
	c := min(n.key.common(k), int(n.bits), bits)
	switch {
	case c == int(n.bits) && c == bits:
		m := *n
		m.pairs = f(n.pairs)
		return pruned(m)
	case c == int(n.bits): // k is under n
		m := *n
		b := k.bit(c)
		m.child[b] = n.child[b].update(k, bits, f)
		return pruned(m)
	}
	l := f(nil)
	if len(l) == 0 {
		return n
	}
	leaf := &rnode{key: k, bits: uint8(bits), pairs: l}
	if c == bits { // n is under k
		leaf.child[n.key.bit(c)] = n
		return leaf
	}
	fork := &rnode{key: k.masked(c), bits: uint8(c)}
	fork.child[k.bit(c)] = leaf
	fork.child[n.key.bit(c)] = n
	return fork
}

// pruned returns m, or what replaces it if it has no pairs and fewer
// than two children.
func pruned(m rnode) *rnode {
	if len(m.pairs) > 0 || m.child[0] != nil && m.child[1] != nil {
		return &m
	}
	if m.child[0] != nil {
		return m.child[0]
	}
	return m.child[1]
}

// routePath holds the nodes with pairs on the way to an address, from the
// shortest prefix to the longest.
type routePath struct {
	n     int
	nodes [129]*rnode
}

// walk fills path with the nodes whose prefixes contain a.
func (rt *routeTable) walk(a netip.Addr, path *routePath) {
	n := rt.v6
	if a.Is4() {
		n = rt.v4
	}
	k, w := keyOf(a)
	path.n = 0
	for n != nil && k.common(n.key) >= int(n.bits) {
		if len(n.pairs) > 0 {
			path.nodes[path.n] = n
			path.n++
		}
		if int(n.bits) == w {
			break
		}
		n = n.child[k.bit(int(n.bits))]
	}
}

// deepest returns the node with pairs of the longest prefix that
// contains a, or nil.
func (rt *routeTable) deepest(a netip.Addr) *rnode {
	n := rt.v6
	if a.Is4() {
		n = rt.v4
	}
	k, w := keyOf(a)
	var found *rnode
	for n != nil && k.common(n.key) >= int(n.bits) {
		if len(n.pairs) > 0 {
			found = n
		}
		if int(n.bits) == w {
			break
		}
		n = n.child[k.bit(int(n.bits))]
	}
	return found
}

// lookup returns the pair for the packet: of the pairs that cover it, by
// the longest prefix of their remote selectors and then the newest, the
// first that may carry outbound traffic, or else the first.
func (rt *routeTable) lookup(p *ipview.Packet) *SAPair {
	// Most often the longest prefix decides, with no path to keep.
	n := rt.deepest(p.Dst)
	if n == nil {
		return nil
	}
	for _, pair := range n.pairs {
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
		for _, pair := range path.nodes[i].pairs {
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
		for _, p := range path.nodes[i].pairs {
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
		for _, p := range path.nodes[i].pairs {
			if !p.unauth {
				return true
			}
		}
	}
	return false
}
