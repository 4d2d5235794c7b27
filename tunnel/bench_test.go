package tunnel

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/oevpn/oevpn/ike"
)

// BenchmarkHandshake measures full handshakes (IKE_SA_INIT and IKE_AUTH with
// the first Child SA installed; X25519, Ed25519, AES-GCM) between an
// initiator and a responder in this process over loopback UDP. Many
// handshakes run at once so that both cores work; each established IKE SA
// is deleted again (INFORMATIONAL). With sas=10000 both engines hold
// 10,000 other SA pairs meanwhile (installed directly: the responder
// would not hold 10,000 IKE SAs from the one address of this process).
func BenchmarkHandshake(b *testing.B) {
	for _, n := range []int{0, 10000} {
		b.Run(fmt.Sprintf("sas=%d", n), func(b *testing.B) { benchHandshakes(b, n) })
	}
}

func benchHandshakes(b *testing.B, others int) {
	// Four at once: the responder keeps at most MaxHalfOpenPerAddr
	// half-open IKE SAs for one address (all of ours come from 127.0.0.1).
	const parallel = ike.MaxHalfOpenPerAddr
	ia := newIKEEnd(b, netip.MustParseAddr("10.96.0.1"))
	ib := newIKEEnd(b, netip.MustParseAddr("10.96.0.2"))
	lo := netip.MustParseAddr("127.0.0.1")
	aIKE, aNATT := ia.ports()
	bIKE, bNATT := ib.ports()
	edA, edAPub := keyPair(b, "ed25519")
	edB, edBPub := keyPair(b, "ed25519")
	idA, _ := ike.ParseIdentity("a.oevpn.test")
	idB, _ := ike.ParseIdentity("b.oevpn.test")
	props, _ := ike.ParseProposals("aes128gcm16-prfsha256-x25519", ike.ProtoIKE)
	up := make(chan string, parallel)
	var peers []*ike.PeerConfig
	var nodePeers []Peer
	for i := 0; i < parallel; i++ {
		peers = append(peers, &ike.PeerConfig{Name: fmt.Sprintf("b%d", i), Addr: lo, IKEPort: bIKE, NATTPort: bNATT,
			LocalID: idA, RemoteID: idB, Auth: ike.Credential{Signer: edA}, PeerAuth: ike.PeerAuth{PublicKey: edBPub},
			IKEProposals: props, LocalTS: hostSel(ia.addr), RemoteTS: hostSel(ib.addr)})
		nodePeers = append(nodePeers, Peer{IKE: peers[i], Start: StartNever})
	}
	na, err := NewNode(NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(ia.addr, 32)},
		IKEPort: aIKE, NATTPort: aNATT, Peers: nodePeers, ikeConfig: func(c *ike.Config) {
			onChange := c.OnChange
			c.OnChange = func(peer string, isUp bool, err error) {
				onChange(peer, isUp, err)
				if isUp {
					up <- peer
				}
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer na.Close()
	da := na.IKE()
	ia.eng = na.Engine()
	startDaemon(b, ib, &ike.PeerConfig{Name: "a", Addr: lo, IKEPort: aIKE, NATTPort: aNATT, LocalID: idB, RemoteID: idA,
		Auth: ike.Credential{Signer: edB}, PeerAuth: ike.PeerAuth{PublicKey: edAPub}, IKEProposals: props,
		LocalTS: hostSel(ib.addr), RemoteTS: hostSel(ia.addr)})
	for _, e := range []*Engine{ia.eng, ib.eng} {
		for i := range others {
			if _, err := e.Install(scalePairConfig(i, false)); err != nil {
				b.Fatal(err)
			}
		}
	}

	perPeer := 0.0
	if others == 0 {
		// The second time: the first one pays for what the daemons
		// allocate once.
		ikeBytesPerPeer(b, da, ib.d, peers, up)
		perPeer = ikeBytesPerPeer(b, da, ib.d, peers, up)
	}

	b.ResetTimer()
	start := time.Now()
	started := 0
	for ; started < parallel && started < b.N; started++ {
		da.Initiate(peers[started].Name)
	}
	for done := 0; done < b.N; done++ {
		select {
		case name := <-up:
			da.Down(name)
			if started < b.N {
				da.Initiate(name)
				started++
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("handshake %d did not complete", done)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
	if perPeer != 0 {
		b.ReportMetric(perPeer, "B/peer")
	}
}

// BenchmarkFirstPacket measures the latency from the first packet to an
// on-demand peer, which is held while IKE runs (X25519, Ed25519), to its
// delivery through the new Child SA; it reports the median and the 99th
// percentile.
func BenchmarkFirstPacket(b *testing.B) {
	a, bb := onDemandPair(b)
	l, err := bb.net.ListenUDPAddrPort(netip.AddrPortFrom(bb.addr, 7100))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c, err := a.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(bb.addr, 7100))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		a.d.Down("b")
		for len(a.eng.Pairs())+len(bb.eng.Pairs()) != 0 || len(bb.d.SAs()) != 0 {
			time.Sleep(100 * time.Microsecond)
		}
		b.StartTimer()
		t0 := time.Now()
		c.Write([]byte("first packet"))
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := l.ReadFrom(buf); err != nil {
			b.Fatalf("first packet not delivered: %v", err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "µs-median")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "µs-p99")
}

// ikeBytesPerPeer brings every peer up and returns the heap that each
// holds: the IKE SAs and Child SA pairs at both ends. Then it brings them
// down again.
func ikeBytesPerPeer(b *testing.B, da, db *ike.Daemon, peers []*ike.PeerConfig, up <-chan string) float64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for _, p := range peers {
		da.Initiate(p.Name)
	}
	for range peers {
		select {
		case <-up:
		case <-time.After(10 * time.Second):
			b.Fatal("a handshake did not complete")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	for _, p := range peers {
		da.Down(p.Name)
	}
	waitFor(b, func() bool { return len(da.SAs())+len(db.SAs()) == 0 }, "the IKE SAs to go")
	return float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(len(peers))
}
