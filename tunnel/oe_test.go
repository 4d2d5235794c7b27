package tunnel

import (
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/oevpn/oevpn/internal/dnstest"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/internal/memnet"
	conn "github.com/oevpn/oevpn/internal/wgconn"
	"github.com/oevpn/oevpn/policy"
)

// testLog keeps a log and shows it if the test fails.
func testLog(t testing.TB, name string) *slog.Logger {
	var buf lockedBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// oeNode is an oevpn endpoint with opportunism, made by NewNode as oevpn up makes it:
// 10.98.0.0/24 is private-or-clear, 10.97.0.0/24 private; a recording
// clear path; its resolver is dnsAddr (DNSSEC off: the test server's
// answers count as they are).
type oeNode struct {
	*testEndpoint
	d   *ike.Daemon
	o   *Opportunism
	rc  *recordingClear
	t   *testing.T
	dns *dnstest.Server
}

func newOENode(t *testing.T, mn *memnet.Network, addr netip.Addr, dnsAddr string) *oeNode {
	t.Helper()
	n := &oeNode{rc: &recordingClear{}}
	res := &dnsoe.Resolver{Server: dnsAddr, Mode: dnsoe.DNSSECOff, Timeout: time.Second} // well above the 200 ms delays some tests add, under -race and load
	node, err := NewNode(NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addr, 32)},
		IKEPort: 500, NATTPort: 4500, Bind: func() conn.Bind { return mn.Bind(addr) },
		Policy: Policy{PrivateOrClear: []netip.Prefix{netip.MustParsePrefix("10.98.0.0/24")},
			Private: []netip.Prefix{netip.MustParsePrefix("10.97.0.0/24")}},
		Opportunism:  &OEConfig{Resolver: res, Auth: ike.Credential{Null: true}, Timeout: 600 * time.Millisecond, ShuntTTL: time.Second},
		Logger:       testLog(t, addr.String()+" node"),
		engineConfig: func(c *Config) { c.Clear = n.rc }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	n.testEndpoint = &testEndpoint{eng: node.Engine(), net: node.Net(), addr: addr}
	n.d, n.o = node.IKE(), node.oe
	return n
}

// newMemIKEEnd prepares an IKE test endpoint on the memnet, on ports 500
// and 4500 of its address.
func newMemIKEEnd(mn *memnet.Network, addr netip.Addr) *ikeEnd {
	return &ikeEnd{testEndpoint: &testEndpoint{addr: addr}, ikePort: 500, nattPort: 4500,
		bind: func() conn.Bind { return mn.Bind(addr) }}
}

// nullAttacker is a second oevpn at addr that initiates IKE to victim
// with AUTH_NULL, proposing remoteTS as the victim's traffic selector.
func nullAttacker(t *testing.T, mn *memnet.Network, addr netip.Addr, victim netip.Addr, remoteTS policy.Selectors) *ikeEnd {
	t.Helper()
	m := newMemIKEEnd(mn, addr)
	peer := &ike.PeerConfig{Name: "victim", Addr: victim, Auth: ike.Credential{Null: true}, PeerAuth: ike.PeerAuth{Null: true},
		LocalTS: hostSel(addr), RemoteTS: remoteTS, RetransmitBase: 100 * time.Millisecond, RetransmitTries: 4}
	startDaemonCfg(t, m, peer, ike.Config{Logger: testLog(t, addr.String()+" attacker IKE")})
	return m
}

// startOEDNS starts an in-process DNS server for the opportunism tests,
// whose denials have a TTL of 1 s, so that resolvers ask again soon.
func startOEDNS(t *testing.T) *dnstest.Server {
	s := dnstest.Start(t)
	s.SetNegativeTTL(1)
	return s
}

// publish publishes in s a fresh Ed25519 key for addr (an IPSECKEY record
// with a TTL of 1 s, the address its own gateway) and returns its private
// key.
func publish(t *testing.T, s *dnstest.Server, addr netip.Addr) ed25519.PrivateKey {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(crand.Reader)
	lines, err := dnsoe.Records(addr.String(), "", 10, priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	rr, err := dns.NewRR(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	rr.Header().Ttl = 1
	s.AddRR(rr)
	return priv
}

// udpListen listens on port 9999 of an endpoint's netstack and counts
// what arrives.
func udpListen(t *testing.T, te *testEndpoint) *atomic.Int32 {
	t.Helper()
	c, err := te.net.ListenUDPAddrPort(netip.AddrPortFrom(te.addr, 9999))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var n atomic.Int32
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return &n
}

// udpPacket builds an IPv4 UDP datagram from src to dst:9999.
func udpPacket(src, dst netip.Addr, payload string) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, ipview.ProtoUDP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 4444)
	binary.BigEndian.PutUint16(p[22:], 9999)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload) // UDP checksum 0: none (IPv4)
	return p
}

// inject seals pkt with the attacker's outbound SA whatever its selectors
// say, and sends it: what a hostile peer can put in an SA.
func inject(t *testing.T, m *testEndpoint, pair *SAPair, pkt []byte) {
	t.Helper()
	buf := make([]byte, esp.Headroom+len(pkt)+esp.Tailroom)
	copy(buf[esp.Headroom:], pkt)
	out, err := pair.Out.Seal(buf, esp.Headroom, len(pkt), ipview.ProtoIPv4)
	if err != nil {
		t.Fatal(err)
	}
	m.eng.send(pair, [][]byte{out})
}

func onlyPair(t *testing.T, e *Engine) *SAPair {
	t.Helper()
	var p *SAPair
	waitFor(t, func() bool {
		ps := e.Pairs()
		if len(ps) == 1 {
			p = ps[0]
		}
		return p != nil
	}, "one SA pair")
	return p
}

var (
	oeVictim = netip.MustParseAddr("10.98.0.1")
	oeNullM  = netip.MustParseAddr("10.98.0.7") // publishes nothing
	oeKeyedB = netip.MustParseAddr("10.98.0.9") // publishes a key
	oePrivP  = netip.MustParseAddr("10.97.0.5") // class private, publishes nothing
	oeBehind = netip.MustParseAddr("10.98.0.50")
)

// TestOpportunisticResponderSelectors performs the attack of issue 10
// item 3: an AUTH_NULL initiator proposes TSr = everything, then puts
// packets for another host behind the responder into its SA. The
// responder must narrow TSr to the one address the initiator reached, and
// its datapath must drop the packets for any other inner destination.
func TestOpportunisticResponderSelectors(t *testing.T) {
	mn := &memnet.Network{}
	ns := startOEDNS(t)
	a := newOENode(t, mn, oeVictim, ns.Addr)
	everything := policy.Selectors{policy.PrefixSelector(netip.MustParsePrefix("0.0.0.0/0"))}
	m := nullAttacker(t, mn, oeNullM, oeVictim, everything)
	got := udpListen(t, a.testEndpoint)
	if err := m.d.Initiate("victim"); err != nil {
		t.Fatal(err)
	}
	ap := onlyPair(t, a.eng)
	mp := onlyPair(t, m.eng)
	if want := hostSel(oeVictim); fmt.Sprint(ap.Local) != fmt.Sprint(want) || fmt.Sprint(mp.Remote) != fmt.Sprint(want) {
		t.Errorf("responder's local selector %v, initiator's remote %v: want both %v", ap.Local, mp.Remote, want)
	}
	inject(t, m.testEndpoint, mp, udpPacket(oeNullM, oeVictim, "to the address reached"))
	waitFor(t, func() bool { return got.Load() == 1 }, "the packet to the address reached")
	before := a.eng.Stats()
	inject(t, m.testEndpoint, mp, udpPacket(oeNullM, oeBehind, "to a host behind the responder"))
	waitFor(t, func() bool {
		st := a.eng.Stats()
		return st.SelectorDrops > before.SelectorDrops || st.RxPackets > before.RxPackets
	}, "the packet to be dropped or delivered")
	if st := a.eng.Stats(); st.RxPackets != before.RxPackets || st.SelectorDrops == before.SelectorDrops {
		t.Errorf("the packet for %v was delivered (RxPackets %d → %d)", oeBehind, before.RxPackets, st.RxPackets)
	}
	// The initiator publishes no key: our traffic to it, which would go
	// clear, goes through its SA once we looked it up.
	gotM := udpListen(t, m.testEndpoint)
	sendUDP(t, a.testEndpoint, oeNullM, 3)
	waitFor(t, func() bool { return gotM.Load() == 3 }, "our packets through the unauthenticated SA")
	if n := a.rc.count(); n > 0 {
		t.Errorf("%d packets sent in the clear", n)
	}
}

// TestOpportunisticNullHijack performs the attack of issue 10 item 2: an
// attacker that can receive at a destination's address initiates with
// AUTH_NULL before we talk to it, to take our traffic to it into its own
// SA. The destination publishes a key (or is private): the responder
// refuses AUTH_NULL for it if it knows (private, or looked up before), or
// else the SA waits, carrying nothing of ours, until our lookup finds the
// key and bars it. Either way the refusal is counted, and our traffic is
// carried by nobody, and not in the clear either.
func TestOpportunisticNullHijack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		addr   netip.Addr
		keyed  bool
		before func(a *oeNode) // what the victim did before the attack
	}{
		{name: "publishes a key, never looked up", addr: oeKeyedB, keyed: true},
		{name: "publishes a key, looked up before", addr: oeKeyedB, keyed: true, before: func(a *oeNode) {
			a.o.discover(oeVictim, oeKeyedB, policy.ClassPrivateOrClear)
		}},
		{name: "publishes a key, our lookup under way", addr: oeKeyedB, keyed: true, before: func(a *oeNode) {
			a.dns.SetDelay(200 * time.Millisecond)
			sendUDP(a.t, a.testEndpoint, oeKeyedB, 3) // held while DNS answers
		}},
		{name: "private", addr: oePrivP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mn := &memnet.Network{}
			ns := startOEDNS(t)
			if tc.keyed {
				publish(t, ns, tc.addr) // the real host's key: the attacker has not got it
			}
			a := newOENode(t, mn, oeVictim, ns.Addr)
			a.t, a.dns = t, ns
			if tc.before != nil {
				tc.before(a)
			}
			m := nullAttacker(t, mn, tc.addr, oeVictim, hostSel(oeVictim))
			got := udpListen(t, m.testEndpoint)
			if err := m.d.Initiate("victim"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return a.eng.Stats().NullRefused > 0 || len(a.eng.Pairs()) > 0 }, "the IKE_AUTH exchange")
			// Our traffic to the destination: into no unauthenticated SA,
			// not in the clear.
			sendUDP(t, a.testEndpoint, tc.addr, 3)
			waitFor(t, func() bool {
				v, _, ok := a.eng.VerdictFor(tc.addr)
				return ok && v == VerdictDrop || got.Load() > 0
			}, "a drop verdict, or the attacker to get our packets")
			time.Sleep(300 * time.Millisecond)
			if n := got.Load(); n > 0 {
				t.Errorf("the attacker received %d of our packets", n)
			}
			if n := a.rc.count(); n > 0 {
				t.Errorf("%d packets sent in the clear", n)
			}
			if a.eng.HasSA(tc.addr) {
				t.Errorf("an SA carries %v:\n%s", tc.addr, dumpPairs(a.eng))
			}
			if a.eng.Stats().NullRefused == 0 {
				t.Error("refusal not counted")
			}
			if n := a.eng.Stats().TxPackets; n > 0 {
				t.Errorf("%d of our packets sent into the attacker's SA", n)
			}
		})
	}
}

// TestOpportunisticNullBarred: an unauthenticated SA accepted while its
// address published nothing is barred, both ways, once the address is
// found to publish a key (here by a lookup, as when its tunnel ends and
// traffic starts again, or a name is resolved through the stub): the
// attacker can neither take our traffic nor send in.
func TestOpportunisticNullBarred(t *testing.T) {
	mn := &memnet.Network{}
	ns := startOEDNS(t)
	a := newOENode(t, mn, oeVictim, ns.Addr)
	// The attacker, at the address, first: nothing is published.
	m := nullAttacker(t, mn, oeKeyedB, oeVictim, hostSel(oeVictim))
	got := udpListen(t, m.testEndpoint)
	if err := m.d.Initiate("victim"); err != nil {
		t.Fatal(err)
	}
	mp := onlyPair(t, m.eng)
	onlyPair(t, a.eng)
	inject(t, m.testEndpoint, mp, udpPacket(oeKeyedB, oeVictim, "accepted: nothing is published"))
	waitFor(t, func() bool { return a.eng.Stats().RxPackets == 1 }, "the first packet")
	// The real host publishes its key, and we look it up.
	publish(t, ns, oeKeyedB)
	time.Sleep(1100 * time.Millisecond) // the cached denial runs out
	a.o.discover(oeVictim, oeKeyedB, policy.ClassPrivateOrClear)
	if a.eng.MayBeUnauthenticated(oeKeyedB) {
		t.Error("an address that publishes a key may be unauthenticated")
	}
	before := a.eng.Stats()
	inject(t, m.testEndpoint, mp, udpPacket(oeKeyedB, oeVictim, "from the attacker"))
	waitFor(t, func() bool {
		st := a.eng.Stats()
		return st.NullDrops > before.NullDrops || st.RxPackets > before.RxPackets
	}, "the attacker's packet to be dropped or delivered")
	if a.eng.Stats().RxPackets != before.RxPackets {
		t.Error("a packet from the barred SA was delivered")
	}
	sendUDP(t, a.testEndpoint, oeKeyedB, 3)
	waitFor(t, func() bool {
		v, _, ok := a.eng.VerdictFor(oeKeyedB)
		return ok && v == VerdictDrop || got.Load() > 0
	}, "a drop verdict, or the attacker to get our packets")
	time.Sleep(300 * time.Millisecond)
	if n := got.Load(); n > 0 {
		t.Errorf("the attacker received %d of our packets", n)
	}
	if n := a.rc.count(); n > 0 {
		t.Errorf("%d packets sent in the clear", n)
	}
}

// TestUnauthenticatedPairRefused: the engine refuses an unauthenticated
// pair for an address that an authenticated pair carries, and bars one
// when an authenticated pair comes for its address.
func TestUnauthenticatedPairRefused(t *testing.T) {
	a, _, _ := oeEndpoint(t)
	keys := func() (esp.Config, esp.Config) {
		k1, k2 := make([]byte, 36), make([]byte, 36)
		crand.Read(k1)
		crand.Read(k2)
		spi := 0x1000 + mrand.Uint32()%0x100000
		return esp.Config{Transform: esp.AESGCM256, SPI: spi, Key: k1}, esp.Config{Transform: esp.AESGCM256, SPI: spi + 1, Key: k2}
	}
	install := func(dst string, unauth bool) (*SAPair, error) {
		out, in := keys()
		return a.eng.Install(PairConfig{Peer: netip.MustParseAddrPort(dst + ":4500"), Local: hostSel(a.addr),
			Remote: hostSel(netip.MustParseAddr(dst)), Out: out, In: in, Unauthenticated: unauth})
	}
	if _, err := install("10.98.0.2", false); err != nil {
		t.Fatal(err)
	}
	if _, err := install("10.98.0.2", true); !errors.Is(err, ErrMustAuthenticate) {
		t.Errorf("unauthenticated pair over an authenticated one: %v", err)
	}
	if _, err := install("10.97.0.2", true); !errors.Is(err, ErrMustAuthenticate) {
		t.Errorf("unauthenticated pair for a private address: %v", err)
	}
	if n := a.eng.Stats().NullRefused; n != 2 {
		t.Errorf("NullRefused = %d, want 2", n)
	}
	null, err := install("10.98.0.3", true)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := install("10.98.0.3", false)
	if err != nil {
		t.Fatal(err)
	}
	p := ipview.Packet{Flow: ipview.Flow{Src: a.addr, Dst: netip.MustParseAddr("10.98.0.3")}}
	if !null.barred.Load() || a.eng.routes.Load().lookup(&p) != auth {
		t.Error("the unauthenticated pair still carries an address an authenticated one carries")
	}
}

// TestOpportunisticResolverFailsClosed performs the attack of issue 10
// item 9: a destination published a key, then its lookups fail (the
// resolver answers SERVFAIL, as a validating one does for a forged answer,
// or nothing at all). Its traffic must be dropped, never sent in the
// clear.
func TestOpportunisticResolverFailsClosed(t *testing.T) {
	for _, mode := range []string{"servfail", "silent"} {
		t.Run(mode, func(t *testing.T) {
			mn := &memnet.Network{}
			ns := startOEDNS(t)
			dst := netip.MustParseAddr("10.98.0.20")
			publish(t, ns, dst) // nobody answers IKE there: hard fail, dropped
			a := newOENode(t, mn, oeVictim, ns.Addr)
			sendUDP(t, a.testEndpoint, dst, 1)
			waitFor(t, func() bool { v, _, ok := a.eng.VerdictFor(dst); return ok && v == VerdictDrop }, "the hard fail")
			ns.SetFail(mode)
			// Once the verdict and the DNS answer ran out (1 s each), the
			// next packets look dst up again, and the lookups fail.
			q := ns.Queries.Load()
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
				sendUDP(t, a.testEndpoint, dst, 1)
				if v, _, ok := a.eng.VerdictFor(dst); ok && v == VerdictClear {
					t.Fatalf("clear verdict after the resolver failed (%d queries)", ns.Queries.Load()-q)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if ns.Queries.Load() == q {
				t.Fatal("dst was not looked up again")
			}
			if n := a.rc.count(); n > 0 {
				t.Errorf("%d packets sent in the clear", n)
			}
		})
	}
}

// TestOpportunisticLookupVerdicts: the verdict of each lookup failure, by
// class and by whether the destination is known to publish a key.
func TestOpportunisticLookupVerdicts(t *testing.T) {
	busy := fmt.Errorf("lookup: %w", dnsoe.ErrBusy)
	servfail := errors.New("dnsoe: 1.2.0.192.in-addr.arpa. IPSECKEY: SERVFAIL")
	for _, tc := range []struct {
		class policy.Class
		err   error
		known bool
		want  Verdict
		short bool // a failure: asked again soon
	}{
		{policy.ClassPrivateOrClear, dnsoe.ErrNoRecord, false, VerdictClear, false},
		{policy.ClassPrivateOrClear, dnsoe.ErrNoRecord, true, VerdictClear, false}, // withdrawn
		{policy.ClassPrivateOrClear, busy, false, VerdictClear, true},
		{policy.ClassPrivateOrClear, servfail, false, VerdictClear, true},
		{policy.ClassPrivateOrClear, busy, true, VerdictDrop, true},
		{policy.ClassPrivateOrClear, servfail, true, VerdictDrop, true},
		{policy.ClassPrivateOrClear, dnsoe.ErrUnvalidated, true, VerdictDrop, true},
		{policy.ClassPrivateOrClear, dnsoe.ErrBogus, false, VerdictDrop, true},
		{policy.ClassPrivateOrClear, dnsoe.ErrUnusableKey, false, VerdictDrop, false}, // it asked for encryption
		{policy.ClassPrivate, dnsoe.ErrNoRecord, false, VerdictDrop, false},
		{policy.ClassPrivate, servfail, false, VerdictDrop, true},
		{policy.ClassPrivate, dnsoe.ErrBogus, false, VerdictDrop, true},
	} {
		t.Run(fmt.Sprintf("%v/%v/known=%v", tc.class, tc.err, tc.known), func(t *testing.T) {
			a, _, _ := oeEndpoint(t)
			o := NewOpportunism(a.eng, OEConfig{})
			dst := netip.MustParseAddr("192.0.2.1")
			if tc.known {
				o.keys.learn(dst, time.Now(), time.Now())
			}
			o.lookupFailed(dst, tc.class, dnsoe.Result{Err: tc.err}, time.Now())
			v, until, ok := a.eng.VerdictFor(dst)
			if !ok || v != tc.want {
				t.Fatalf("verdict %v (%v), want %v", v, ok, tc.want)
			}
			if short := time.Until(until) <= resolverRetry; short != tc.short {
				t.Errorf("verdict for %v: short = %v, want %v", time.Until(until).Round(time.Second), short, tc.short)
			}
		})
	}
}

// TestKeyedSetBounded: the memory of keys is bounded, forgets the least
// recently learned first, and forgets past keyMemory.
func TestKeyedSetBounded(t *testing.T) {
	var k keyedSet
	now := time.Now()
	first := netip.AddrFrom4([4]byte{10, 0, 0, 0})
	for i := range maxKeyed + 10 {
		k.learn(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now, now)
		if i == maxKeyed-1 {
			k.learn(first, now, now) // learnt again: kept
		}
	}
	if n := k.len(); n != maxKeyed {
		t.Errorf("%d remembered, want %d", n, maxKeyed)
	}
	if !k.known(first, now) || k.known(netip.AddrFrom4([4]byte{10, 0, 0, 1}), now) {
		t.Error("not the least recently learned forgotten")
	}
	if k.known(first, now.Add(keyMemory+time.Minute)) {
		t.Error("remembered past keyMemory")
	}
}

// TestOpportunisticRecheckResolverDown: an authenticated opportunistic
// tunnel whose key cannot be checked again because the resolver fails
// carries on (DNS said nothing new), rather than leaving its destination
// to a resolver an attacker may be silencing. It is also opportunism
// end to end between two oevpn endpoints, one signing with its published
// key.
func TestOpportunisticRecheckResolverDown(t *testing.T) {
	mn := &memnet.Network{}
	ns := startOEDNS(t)
	bAddr := netip.MustParseAddr("10.98.0.30")
	priv := publish(t, ns, bAddr)
	a := newOENode(t, mn, oeVictim, ns.Addr)
	b := newOENode(t, mn, bAddr, ns.Addr)
	b.o.cfg.Auth = ike.Credential{Signer: priv}
	got := udpListen(t, b.testEndpoint)
	sendUDP(t, a.testEndpoint, bAddr, 3)
	waitFor(t, func() bool { return got.Load() == 3 }, "our packets through the tunnel")
	var tun *oeTunnel
	a.o.mu.Lock()
	tun = a.o.tunnels[initiatorName(bAddr)]
	a.o.mu.Unlock()
	if tun == nil || !tun.up {
		t.Fatal("no opportunistic tunnel up")
	}
	ns.SetFail("servfail")
	time.Sleep(1100 * time.Millisecond) // the cached answer runs out
	a.o.recheckKey(tun)
	if ps := a.d.SAs(); len(ps) != 1 {
		t.Fatalf("%d IKE SAs after a failed re-check, want the tunnel kept", len(ps))
	}
	sendUDP(t, a.testEndpoint, bAddr, 2)
	waitFor(t, func() bool { return got.Load() == 5 }, "our packets through the kept tunnel")
	if n := a.rc.count(); n > 0 {
		t.Errorf("%d packets sent in the clear", n)
	}
}
