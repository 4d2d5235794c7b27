package tunnel

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// TestRangePrefixes checks that the prefixes of a range are disjoint,
// aligned, few and cover exactly the range.
func TestRangePrefixes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		lo := r.Uint32N(1 << 12)
		hi := lo + r.Uint32N(1<<12)
		s := policy.Selector{Start: v4(lo), End: v4(hi), EndPort: 65535}
		next := lo
		count := 0
		rangePrefixes(s, func(k addrKey, n int) {
			count++
			first := uint32(k.hi >> 32)
			size := uint32(1) << (32 - n)
			if first != next || first%size != 0 {
				t.Fatalf("%v: prefix %v/%d not aligned at %v", s, v4(first), n, v4(next))
			}
			next = first + size
		})
		if next != hi+1 || count > 64 {
			t.Fatalf("%v: prefixes end at %v, %d of them", s, v4(next), count)
		}
	}
	// Whole families, and IPv6.
	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"0.0.0.0/0", []string{"0.0.0.0/0"}},
		{"::/0", []string{"::/0"}},
		{"2001:db8::1", []string{"2001:db8::1/128"}},
		{"2001:db8::-2001:db8::2", []string{"2001:db8::/127", "2001:db8::2/128"}},
		{"10.0.0.1-10.0.0.6", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}},
		{"255.255.255.254-255.255.255.255", []string{"255.255.255.254/31"}},
	} {
		var got []string
		sel := mustSelector(t, tc.sel)
		rangePrefixes(sel, func(k addrKey, n int) { got = append(got, keyPrefix(k, n, sel.Start.Is4())) })
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.sel, got, tc.want)
		}
	}
}

func keyPrefix(k addrKey, n int, is4 bool) string { return k.prefix(n, is4).String() }

func v4(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

func mustSelector(t *testing.T, s string) policy.Selector {
	t.Helper()
	sel, err := policy.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// TestRouteTableLongestPrefix compares the trie with a linear search: the
// longest prefix wins, then the newest pair, and a pair that may carry
// traffic before one that waits. Older tables are unchanged by updates.
func TestRouteTableLongestPrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	local := append(hostSel(netip.MustParseAddr("192.0.2.1")), hostSel(netip.MustParseAddr("2001:db8:ffff::1"))...)
	var pairs []*SAPair
	rt := &routeTable{}
	var snapshots []*routeTable
	var snapPairs [][]*SAPair
	for i := range 400 {
		var p netip.Prefix
		if r.IntN(2) == 0 {
			p = netip.PrefixFrom(v4(10<<24|r.Uint32N(1<<10)), 22+r.IntN(11)).Masked()
		} else {
			a := netip.MustParseAddr("2001:db8::").As16()
			a[15], a[14] = byte(r.IntN(256)), byte(r.IntN(4))
			p = netip.PrefixFrom(netip.AddrFrom16(a), 112+r.IntN(17)).Masked()
		}
		sp := &SAPair{Local: local, Remote: policy.Selectors{policy.PrefixSelector(p)}, seq: uint64(i + 1)}
		sp.ready.Store(r.IntN(4) != 0)
		prefixBits[sp] = p.Bits()
		pairs = append(pairs, sp)
		rt = rt.with(sp)
		if r.IntN(3) == 0 {
			j := r.IntN(len(pairs))
			rt = rt.without(pairs[j])
			pairs = append(pairs[:j], pairs[j+1:]...)
		}
		if i%50 == 0 {
			snapshots = append(snapshots, rt)
			snapPairs = append(snapPairs, append([]*SAPair(nil), pairs...))
		}
	}
	snapshots = append(snapshots, rt)
	snapPairs = append(snapPairs, pairs)
	for s, rt := range snapshots {
		for range 2000 {
			var dst netip.Addr
			if r.IntN(2) == 0 {
				dst = v4(10<<24 | r.Uint32N(1<<10))
			} else {
				a := netip.MustParseAddr("2001:db8::").As16()
				a[15], a[14] = byte(r.IntN(256)), byte(r.IntN(4))
				dst = netip.AddrFrom16(a)
			}
			pkt := ipview.Packet{Flow: ipview.Flow{Src: netip.MustParseAddr("192.0.2.1"), Dst: dst}}
			if dst.Is6() {
				pkt.Src = netip.MustParseAddr("2001:db8:ffff::1")
			}
			if got, want := rt.lookup(&pkt), linearLookup(snapPairs[s], &pkt); got != want {
				t.Fatalf("snapshot %d, %v: got %v, want %v", s, dst, describe(got), describe(want))
			}
			if got, want := rt.pairFor(dst), linearPairFor(snapPairs[s], dst); got != want {
				t.Fatalf("snapshot %d, pairFor %v: got %v, want %v", s, dst, describe(got), describe(want))
			}
		}
	}
	for _, p := range pairs {
		rt = rt.without(p)
	}
	if rt.v4 != nil || rt.v6 != nil {
		t.Fatal("nodes left after every pair was removed")
	}
}

// TestRouteTableAnyPrefix is TestRouteTableLongestPrefix with prefixes of
// every length anywhere in the address space: short ones, long ones
// alone in a subtree (leaves) and long ones side by side, and addresses
// in and near them.
func TestRouteTableAnyPrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	local := append(hostSel(netip.MustParseAddr("192.0.2.1")), hostSel(netip.MustParseAddr("2001:db8:ffff::1"))...)
	random := func(v6 bool) netip.Addr {
		if v6 {
			var a [16]byte
			for i := range a {
				a[i] = byte(r.Uint32())
			}
			return netip.AddrFrom16(a)
		}
		return v4(r.Uint32())
	}
	// near returns an address in p with some of its last bits random.
	near := func(p netip.Prefix) netip.Addr {
		a := random(p.Addr().Is6())
		keep := p.Bits() + r.IntN(p.Addr().BitLen()-p.Bits()+1)
		// The first keep bits from p, the rest from a.
		b, c := p.Addr().AsSlice(), a.AsSlice()
		for i := range c {
			for j := 7; j >= 0; j-- {
				if bit := i*8 + 7 - j; bit < keep {
					c[i] = c[i]&^(1<<j) | b[i]&(1<<j)
				}
			}
		}
		out, _ := netip.AddrFromSlice(c)
		return out
	}
	var pairs []*SAPair
	var prefixes []netip.Prefix
	rt := &routeTable{}
	for i := range 600 {
		v6 := r.IntN(2) == 0
		var p netip.Prefix
		if len(prefixes) > 0 && r.IntN(2) == 0 {
			// Near another prefix, longer or shorter.
			q := prefixes[r.IntN(len(prefixes))]
			if q.Addr().Is6() == v6 {
				p = netip.PrefixFrom(near(q), r.IntN(q.Addr().BitLen()+1)).Masked()
			}
		}
		if !p.IsValid() {
			a := random(v6)
			p = netip.PrefixFrom(a, r.IntN(a.BitLen()+1)).Masked()
		}
		sp := &SAPair{Local: local, Remote: policy.Selectors{policy.PrefixSelector(p)}, seq: uint64(i + 1)}
		sp.ready.Store(r.IntN(4) != 0)
		prefixBits[sp] = p.Bits()
		pairs, prefixes = append(pairs, sp), append(prefixes, p)
		rt = rt.with(sp)
		if r.IntN(3) == 0 {
			j := r.IntN(len(pairs))
			rt = rt.without(pairs[j])
			pairs = append(pairs[:j], pairs[j+1:]...)
			prefixes = append(prefixes[:j], prefixes[j+1:]...)
		}
		if i%20 != 0 {
			continue
		}
		for range 200 {
			dst := random(r.IntN(2) == 0)
			if len(prefixes) > 0 && r.IntN(4) != 0 {
				dst = near(prefixes[r.IntN(len(prefixes))])
			}
			pkt := ipview.Packet{Flow: ipview.Flow{Src: netip.MustParseAddr("192.0.2.1"), Dst: dst}}
			if dst.Is6() {
				pkt.Src = netip.MustParseAddr("2001:db8:ffff::1")
			}
			if got, want := rt.lookup(&pkt), linearLookup(pairs, &pkt); got != want {
				t.Fatalf("after %d pairs, %v: got %v, want %v", i, dst, describe(got), describe(want))
			}
			if got, want := rt.pairFor(dst), linearPairFor(pairs, dst); got != want {
				t.Fatalf("after %d pairs, pairFor %v: got %v, want %v", i, dst, describe(got), describe(want))
			}
		}
	}
	for _, p := range pairs {
		rt = rt.without(p)
	}
	if rt.v4 != nil || rt.v6 != nil {
		t.Fatal("nodes left after every pair was removed")
	}
}

func describe(p *SAPair) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("%v seq %d ready %v", p.Remote, p.seq, p.ready.Load())
}

// prefixBits holds the prefix length of each pair of
// TestRouteTableLongestPrefix (Selector.Prefix is slow).
var prefixBits = map[*SAPair]int{}

// byPreference sorts the pairs that cover dst as the route table must
// prefer them: longest prefix, then newest.
func byPreference(pairs []*SAPair, dst netip.Addr) []*SAPair {
	var l []*SAPair
	for _, p := range pairs {
		if p.Remote.Contains(dst) {
			l = append(l, p)
		}
	}
	bitsOf := func(p *SAPair) int { return prefixBits[p] }
	sort.SliceStable(l, func(i, j int) bool {
		if bi, bj := bitsOf(l[i]), bitsOf(l[j]); bi != bj {
			return bi > bj
		}
		return l[i].seq > l[j].seq
	})
	return l
}

func linearLookup(pairs []*SAPair, pkt *ipview.Packet) *SAPair {
	var l []*SAPair
	for _, p := range byPreference(pairs, pkt.Dst) {
		if p.Remote.MatchDst(pkt) && p.Local.MatchSrc(pkt) {
			l = append(l, p)
		}
	}
	return firstReady(l)
}

func linearPairFor(pairs []*SAPair, dst netip.Addr) *SAPair {
	return firstReady(byPreference(pairs, dst))
}

func firstReady(l []*SAPair) *SAPair {
	for _, p := range l {
		if p.ready.Load() {
			return p
		}
	}
	if len(l) > 0 {
		return l[0]
	}
	return nil
}

// TestRouteLookupScale installs 10,000 SA pairs for /30 subnets and checks
// that a lookup stays fast and allocates nothing (it used to try every
// non-host pair in turn: 112 µs per packet at 10,000), and that an
// installation stays cheap (the table used to be rebuilt and sorted for
// each: ~4.5 ms at 10,000).
func TestRouteLookupScale(t *testing.T) {
	if testing.Short() {
		t.Skip("installs 10,000 SA pairs")
	}
	const n = 10000
	e := newTestEndpoint(t, scaleLocal).eng
	for i := range n {
		if _, err := e.Install(scalePairConfig(i, true)); err != nil {
			t.Fatal(err)
		}
	}
	// Installations: the median of 101 (install and remove one more).
	var installs []time.Duration
	for i := range 101 {
		t0 := time.Now()
		p, err := e.Install(scalePairConfig(n+i, true))
		installs = append(installs, time.Since(t0))
		if err != nil {
			t.Fatal(err)
		}
		e.Remove(p)
	}
	sort.Slice(installs, func(i, j int) bool { return installs[i] < installs[j] })
	if med := installs[50]; med > 500*time.Microsecond {
		t.Errorf("installing an SA pair next to %d takes %v (median), want < 500µs", n, med)
	}
	rt := e.routes.Load()
	pkts := make([]ipview.Packet, 256)
	for i := range pkts {
		j := rand.IntN(n)
		pkts[i], _ = ipview.Parse(scalePacket(scaleLocal, scaleAddr(4*j+1), 64))
	}
	if a := testing.AllocsPerRun(100, func() { rt.lookup(&pkts[0]) }); a != 0 {
		t.Errorf("a lookup allocates %v times", a)
	}
	var rounds []time.Duration
	for range 21 {
		t0 := time.Now()
		for i := range pkts {
			if rt.lookup(&pkts[i]) == nil {
				t.Fatalf("no pair for %v", pkts[i].Dst)
			}
		}
		rounds = append(rounds, time.Since(t0)/time.Duration(len(pkts)))
	}
	sort.Slice(rounds, func(i, j int) bool { return rounds[i] < rounds[j] })
	if med := rounds[10]; med > 10*time.Microsecond {
		t.Errorf("a lookup among %d /30 pairs takes %v (median), want < 10µs", n, med)
	}
}

// TestUnauthenticatedBarredBySubnet checks that an authenticated pair for
// a subnet bars the unauthenticated pairs of the addresses in it, whether
// the engine looks them up address by address (a small subnet) or goes
// through all of them (a large one), and only those.
func TestUnauthenticatedBarredBySubnet(t *testing.T) {
	e := newTestEndpoint(t, scaleLocal).eng
	i := 0
	install := func(remote string, unauth bool) *SAPair {
		t.Helper()
		pc := scalePairConfig(i, false)
		i++
		pc.Remote = policy.Selectors{mustSelector(t, remote)}
		pc.Unauthenticated = unauth
		p, err := e.Install(pc)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	n5, n6, other := install("10.50.0.5", true), install("10.50.0.6", true), install("10.60.0.1", true)
	for _, p := range []*SAPair{n5, n6, other} {
		if a, _ := singleRemote(p); e.PairFor(a) != p {
			t.Fatalf("%v: the unauthenticated pair does not carry its address", a)
		}
	}
	small := install("10.50.0.6/31", false) // 2 addresses, fewer than 3 pairs
	if n5.barred.Load() || !n6.barred.Load() || e.PairFor(netip.MustParseAddr("10.50.0.6")) != small {
		t.Errorf("after 10.50.0.6/31: barred .5 %v .6 %v", n5.barred.Load(), n6.barred.Load())
	}
	large := install("10.50.0.0/16", false)
	if !n5.barred.Load() || e.PairFor(netip.MustParseAddr("10.50.0.5")) != large {
		t.Error("after 10.50.0.0/16: the pair of 10.50.0.5 is not barred")
	}
	if other.barred.Load() || e.PairFor(netip.MustParseAddr("10.60.0.1")) != other {
		t.Error("the pair of 10.60.0.1, outside both subnets, was barred")
	}
	if n := e.Stats().NullRefused; n != 2 {
		t.Errorf("NullRefused = %d, want 2", n)
	}
	if e.MayBeUnauthenticated(netip.MustParseAddr("10.50.9.9")) || !e.MayBeUnauthenticated(netip.MustParseAddr("10.61.0.1")) {
		t.Error("MayBeUnauthenticated ignores the authenticated subnet")
	}
}

// TestEngineIdleHeap checks what an idle engine holds: its packet buffers
// used to take 64 KiB each, 128 per receiving routine (~47 MB).
func TestEngineIdleHeap(t *testing.T) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	te := newTestEndpoint(t, scaleLocal)
	time.Sleep(100 * time.Millisecond) // the routines allocate their buffers
	runtime.GC()
	runtime.ReadMemStats(&m1)
	grown := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("an idle engine holds %.1f MiB (batch %d)", float64(grown)/(1<<20), te.eng.natt.BatchSize())
	if grown > 12<<20 {
		t.Errorf("an idle engine holds %.1f MiB, want ≤ 12 MiB", float64(grown)/(1<<20))
	}
	m := ReadMemory()
	if m.HeapInUse == 0 || m.Goroutines == 0 || runtime.GOOS == "linux" && m.RSS == 0 {
		t.Errorf("ReadMemory = %+v", m)
	}
}
