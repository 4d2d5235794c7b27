package tunnel

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// scaleSizes are the numbers of SA pairs the scale benchmarks install;
// OEVPN_BENCH_MAX caps them (e.g. to compare with a slower build).
func scaleSizes() []int {
	sizes := []int{1, 1000, 10000, 100000}
	if s := os.Getenv("OEVPN_BENCH_MAX"); s != "" {
		max, _ := strconv.Atoi(s)
		for len(sizes) > 1 && sizes[len(sizes)-1] > max {
			sizes = sizes[:len(sizes)-1]
		}
	}
	return sizes
}

var (
	scaleLocal = netip.MustParseAddr("10.255.255.254")
	scalePeer  = netip.MustParseAddrPort("127.0.0.1:4500")
	scaleKey   = make([]byte, esp.AESGCM128.KeyLen())
)

// scaleRemote is pair i's remote selector: one address of 10.0.0.0/8, or
// the /30 of 10.0.0.0/8 that holds it.
func scaleRemote(i int, subnet bool) policy.Selectors {
	if subnet {
		return policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(scaleAddr(4*i), 30))}
	}
	return hostSel(scaleAddr(i))
}

func scaleAddr(i int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 10<<24+uint32(i))
	return netip.AddrFrom4(b)
}

// scaleSPI is pair i's inbound SPI (its outbound SPI has the top bit set).
func scaleSPI(i int) uint32 { return 0x1000 + uint32(i) }

func scalePairConfig(i int, subnet bool) PairConfig {
	return PairConfig{Peer: scalePeer, Local: hostSel(scaleLocal), Remote: scaleRemote(i, subnet),
		Out: esp.Config{Transform: esp.AESGCM128, SPI: 1<<31 | scaleSPI(i), Key: scaleKey},
		In:  esp.Config{Transform: esp.AESGCM128, SPI: scaleSPI(i), Key: scaleKey, ReplayWindow: -1}}
}

// scaleEngine returns an engine with n SA pairs installed (pair i is
// scalePairConfig(i)) and the heap it grew by per pair.
func scaleEngine(b *testing.B, n int, subnet bool) (*Engine, []*SAPair, float64) {
	b.Helper()
	e := newTestEndpoint(b, scaleLocal).eng
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	pairs := make([]*SAPair, n)
	for i := range n {
		p, err := e.Install(scalePairConfig(i, subnet))
		if err != nil {
			b.Fatal(err)
		}
		pairs[i] = p
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	return e, pairs, float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)-int64(8*n)) / float64(n)
}

// BenchmarkScaleInstall measures the installation of an SA pair (and, as
// ns/remove, its removal) into an engine that holds N pairs already, and
// reports the heap each installed pair holds (B/pair: both SAs, the SPI
// table and the route table).
func BenchmarkScaleInstall(b *testing.B) {
	for _, n := range scaleSizes() {
		b.Run(fmt.Sprintf("pairs=%d", n), func(b *testing.B) {
			e, _, perPair := scaleEngine(b, n, false)
			b.ResetTimer()
			added := make([]*SAPair, 0, b.N)
			for i := 0; i < b.N; i++ {
				p, err := e.Install(scalePairConfig(n+i, false))
				if err != nil {
					b.Fatal(err)
				}
				added = append(added, p)
			}
			b.StopTimer()
			elapsed := b.Elapsed()
			t0 := time.Now()
			for _, p := range added {
				e.Remove(p)
			}
			b.ReportMetric(float64(time.Since(t0).Nanoseconds())/float64(b.N), "ns/remove")
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N), "ns/install")
			b.ReportMetric(perPair, "B/pair")
		})
	}
}

// scalePacket returns an IPv4 UDP packet of n octets from src to dst.
func scalePacket(src, dst netip.Addr, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[8] = 64
	p[9] = ipview.ProtoUDP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], 5000)
	binary.BigEndian.PutUint16(p[22:], 6000)
	binary.BigEndian.PutUint16(p[24:], uint16(n-20))
	return p
}

// packetSize and packetRing are the size of the scale benchmarks' packets
// and the number of pairs (chosen at random) they go to.
const packetSize, packetRing = 128, 256

// packetSteps returns the per-packet work of the scale benchmarks on
// engine e, whose pairs are pairs, for packet i of a ring that goes to (or
// comes from) pairs[idx[i%len(idx)]]: the route lookup alone; seal (parse,
// route lookup and ESP Seal); open (SPI lookup, ESP Open, parse and the
// selector check).
func packetSteps(tb testing.TB, e *Engine, pairs []*SAPair, idx []int, subnet bool) (lookup, seal, open func(i int)) {
	ring := len(idx)
	out := make([][]byte, ring) // to the pairs' remote addresses
	views := make([]ipview.Packet, ring)
	in := make([][]byte, ring) // sealed by the pairs' peers
	for i, j := range idx {
		dst, src := scaleAddr(j), scaleAddr(j)
		if subnet {
			dst, src = scaleAddr(4*j+1), scaleAddr(4*j+2)
		}
		out[i] = scalePacket(scaleLocal, dst, packetSize)
		views[i], _ = ipview.Parse(out[i])
		pc := scalePairConfig(j, subnet)
		peer, err := esp.NewSA(pc.In)
		if err != nil {
			tb.Fatal(err)
		}
		sb := make([]byte, esp.Headroom+packetSize+esp.Tailroom)
		copy(sb[esp.Headroom:], scalePacket(src, scaleLocal, packetSize))
		if in[i], err = peer.Seal(sb, esp.Headroom, packetSize, ipview.ProtoIPv4); err != nil {
			tb.Fatal(err)
		}
	}
	buf := make([]byte, esp.Headroom+packetSize+esp.Tailroom+64)
	lookup = func(i int) {
		i %= ring
		if pair := e.routes.Load().lookup(&views[i]); pair != pairs[idx[i]] {
			tb.Fatalf("packet to %v: pair %p, want %p", views[i].Dst, pair, pairs[idx[i]])
		}
	}
	seal = func(i int) {
		i %= ring
		pkt := buf[esp.Headroom : esp.Headroom+packetSize]
		copy(pkt, out[i])
		p, err := ipview.Parse(pkt)
		if err != nil {
			tb.Fatal(err)
		}
		pair := e.routes.Load().lookup(&p)
		if pair == nil || pair != pairs[idx[i]] {
			tb.Fatalf("packet to %v: pair %p, want %p", p.Dst, pair, pairs[idx[i]])
		}
		if _, err := pair.Out.Seal(buf, esp.Headroom, p.Len, ipview.ProtoIPv4); err != nil {
			tb.Fatal(err)
		}
	}
	open = func(i int) {
		i %= ring
		d := buf[esp.Headroom:]
		copy(d, in[i])
		pair, ok := e.spis.Lookup(esp.Header(d).SPI())
		if !ok || pair != pairs[idx[i]] {
			tb.Fatal("SPI not found")
		}
		inner, _, err := pair.In.Open(buf, esp.Headroom, len(in[i]))
		if err != nil {
			tb.Fatal(err)
		}
		p, err := ipview.Parse(inner)
		if err != nil || !pair.Remote.MatchSrc(&p) || !pair.Local.MatchDst(&p) {
			tb.Fatal("selector check failed", err)
		}
	}
	return lookup, seal, open
}

// packetEngine returns an engine with n pairs installed, its timers
// stopped (they tick every SA each second and would disturb the
// figures), and the pairs a ring of packets goes to.
func packetEngine(b *testing.B, n int, subnet bool) (*Engine, []*SAPair, []int) {
	e, pairs, _ := scaleEngine(b, n, subnet)
	e.Close() // the tables stay
	idx := make([]int, packetRing)
	for i := range idx {
		idx[i] = rand.IntN(n)
	}
	return e, pairs, idx
}

// BenchmarkScalePacket measures the datapath's per-packet work (see
// packetSteps) without I/O, with N SA pairs installed whose remote
// selectors are host addresses or /30 subnets.
func BenchmarkScalePacket(b *testing.B) {
	for _, subnet := range []bool{false, true} {
		kind := "host"
		if subnet {
			kind = "subnet"
		}
		for _, n := range scaleSizes() {
			var lookup, seal, open func(int)
			setup := func(b *testing.B) {
				if lookup == nil {
					e, pairs, idx := packetEngine(b, n, subnet)
					lookup, seal, open = packetSteps(b, e, pairs, idx, subnet)
				}
			}
			for _, step := range []struct {
				name string
				f    *func(int)
			}{{"lookup", &lookup}, {"seal", &seal}, {"open", &open}} {
				b.Run(fmt.Sprintf("%s/%s/pairs=%d", step.name, kind, n), func(b *testing.B) {
					setup(b)
					if step.name != "lookup" {
						b.SetBytes(packetSize)
					}
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						i++
						(*step.f)(i)
					}
				})
			}
			lookup, seal, open = nil, nil, nil // the next engine is measured alone
		}
	}
}

// BenchmarkScaleRatio measures the per-packet cost with the largest number
// of pairs against the cost with one (the bar: within 2×), on a
// shared machine: the two engines are timed in turns, in short runs of
// the same packets, and each figure is the median of the runs (ratio is
// the median of the ratios of runs taken side by side; ratio-best that of
// the fastest runs, the least disturbed).
func BenchmarkScaleRatio(b *testing.B) {
	sizes := scaleSizes()
	large := sizes[len(sizes)-1]
	const runs, perRun = 41, 20000
	for _, subnet := range []bool{false, true} {
		kind := "host"
		if subnet {
			kind = "subnet"
		}
		e1, p1, i1 := packetEngine(b, 1, subnet)
		eN, pN, iN := packetEngine(b, large, subnet)
		l1, s1, o1 := packetSteps(b, e1, p1, i1, subnet)
		lN, sN, oN := packetSteps(b, eN, pN, iN, subnet)
		for _, c := range []struct {
			name   string
			one, n func(int)
		}{{"lookup", l1, lN}, {"seal", s1, sN}, {"open", o1, oN}} {
			b.Run(fmt.Sprintf("%s/%s/pairs=%d", c.name, kind, large), func(b *testing.B) {
				time1 := func(f func(int)) float64 {
					t0 := time.Now()
					for i := range perRun {
						f(i)
					}
					return float64(time.Since(t0).Nanoseconds()) / perRun
				}
				var ones, ns, ratios []float64
				for range b.N {
					for range runs {
						a, z := time1(c.one), time1(c.n)
						ones, ns, ratios = append(ones, a), append(ns, z), append(ratios, z/a)
					}
				}
				b.ReportMetric(median(ones), "ns/1pair")
				b.ReportMetric(median(ns), "ns/Npairs")
				b.ReportMetric(median(ratios), "ratio")
				// The fastest runs are the least disturbed.
				b.ReportMetric(slices.Min(ns)/slices.Min(ones), "ratio-best")
			})
		}
	}
}

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}
