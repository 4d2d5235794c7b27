package tunnel

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
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

// BenchmarkScalePacket measures the datapath's per-packet work without
// I/O, with N SA pairs installed whose remote selectors are host addresses
// or /30 subnets: seal is parse, route lookup and ESP Seal of a 128-octet
// packet; open is SPI lookup, ESP Open, parse and the selector check. The
// packets go to (come from) 256 pairs chosen at random.
func BenchmarkScalePacket(b *testing.B) {
	const size, ring = 128, 256
	for _, subnet := range []bool{false, true} {
		kind := "host"
		if subnet {
			kind = "subnet"
		}
		for _, n := range scaleSizes() {
			var e *Engine
			var pairs []*SAPair
			setup := func(b *testing.B) {
				if e == nil {
					e, pairs, _ = scaleEngine(b, n, subnet)
					// The tables stay; the engine's timers (which tick
					// every SA each second) stop disturbing the figures.
					e.Close()
				}
			}
			idx := make([]int, ring)
			for i := range idx {
				idx[i] = rand.IntN(n)
			}
			b.Run(fmt.Sprintf("seal/%s/pairs=%d", kind, n), func(b *testing.B) {
				setup(b)
				pkts := make([][]byte, ring)
				for i, j := range idx {
					dst := scaleAddr(j)
					if subnet {
						dst = scaleAddr(4*j + 1)
					}
					pkts[i] = scalePacket(scaleLocal, dst, size)
				}
				buf := make([]byte, esp.Headroom+size+esp.Tailroom)
				b.SetBytes(size)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i = (i + 1) % ring
					pkt := buf[esp.Headroom : esp.Headroom+size]
					copy(pkt, pkts[i])
					p, err := ipview.Parse(pkt)
					if err != nil {
						b.Fatal(err)
					}
					pair := e.routes.Load().lookup(&p)
					if pair == nil || pair != pairs[idx[i]] {
						b.Fatalf("packet to %v: pair %p, want %p", p.Dst, pair, pairs[idx[i]])
					}
					if _, err := pair.Out.Seal(buf, esp.Headroom, p.Len, ipview.ProtoIPv4); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("open/%s/pairs=%d", kind, n), func(b *testing.B) {
				setup(b)
				pkts := make([][]byte, ring)
				for i, j := range idx {
					src := scaleAddr(j)
					if subnet {
						src = scaleAddr(4*j + 2)
					}
					pc := scalePairConfig(j, subnet)
					out, err := esp.NewSA(pc.In)
					if err != nil {
						b.Fatal(err)
					}
					inner := scalePacket(src, scaleLocal, size)
					sb := make([]byte, esp.Headroom+size+esp.Tailroom)
					copy(sb[esp.Headroom:], inner)
					sealed, err := out.Seal(sb, esp.Headroom, size, ipview.ProtoIPv4)
					if err != nil {
						b.Fatal(err)
					}
					pkts[i] = sealed
				}
				buf := make([]byte, esp.Headroom+size+esp.Tailroom+64)
				b.SetBytes(size)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					i = (i + 1) % ring
					d := buf[esp.Headroom:]
					copy(d, pkts[i])
					pair, ok := e.spis.Lookup(esp.Header(d).SPI())
					if !ok || pair != pairs[idx[i]] {
						b.Fatal("SPI not found")
					}
					inner, _, err := pair.In.Open(buf, esp.Headroom, len(pkts[i]))
					if err != nil {
						b.Fatal(err)
					}
					p, err := ipview.Parse(inner)
					if err != nil || !pair.Remote.MatchSrc(&p) || !pair.Local.MatchDst(&p) {
						b.Fatal("selector check failed", err)
					}
				}
			})
			e, pairs = nil, nil // the next engine is measured alone
		}
	}
}
