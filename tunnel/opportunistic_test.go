package tunnel

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// recordingClear is a clear path that keeps what it is given (the real
// one, a raw socket, is exercised by the lab tests).
type recordingClear struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (r *recordingClear) Send(pkt []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pkts = append(r.pkts, append([]byte(nil), pkt...))
	return nil
}
func (r *recordingClear) Close() error { return nil }
func (r *recordingClear) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pkts)
}

type acquire struct {
	src, dst netip.Addr
	class    policy.Class
}

// oeEndpoint is a netstack endpoint whose 10.98.0.0/24 is private-or-clear,
// 10.97.0.0/24 private and 10.96.0.0/24 clear (routed in by an exception's
// prefix), with a recording clear path.
func oeEndpoint(t *testing.T) (*testEndpoint, *recordingClear, chan acquire) {
	t.Helper()
	a := newTestEndpoint(t, netip.MustParseAddr("10.98.0.1"))
	rc := &recordingClear{}
	a.eng.clear = rc
	classes, err := policy.NewClasses(map[policy.Class][]netip.Prefix{
		policy.ClassPrivateOrClear: {netip.MustParsePrefix("10.98.0.0/24")},
		policy.ClassPrivate:        {netip.MustParsePrefix("10.97.0.0/24")},
		policy.ClassClear:          {netip.MustParsePrefix("10.96.0.0/24")},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.eng.SetClasses(classes)
	acq := make(chan acquire, 16)
	a.route(func(c *testControl) {
		c.oe = func(src, dst netip.Addr, class policy.Class) { acq <- acquire{src, dst, class} }
	})
	return a, rc, acq
}

// sendUDP sends n datagrams from the endpoint to dst.
func sendUDP(t *testing.T, from *testEndpoint, dst netip.Addr, n int) {
	t.Helper()
	c, err := from.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(dst, 9999))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		if _, err := c.Write([]byte("held")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpportunisticHoldAndDecide(t *testing.T) {
	a, rc, acq := oeEndpoint(t)
	dst := netip.MustParseAddr("10.98.0.7")
	sendUDP(t, a, dst, maxHeldPerDest+8)
	got := <-acq
	if got.dst != dst || got.src != a.addr || got.class != policy.ClassPrivateOrClear {
		t.Fatalf("acquire %+v", got)
	}
	// One acquire per destination, however many packets; the surplus
	// over the bound is dropped.
	waitFor(t, func() bool { return a.eng.Stats().NoSA == 8 }, "the surplus to be dropped")
	select {
	case extra := <-acq:
		t.Fatalf("second acquire %+v", extra)
	case <-time.After(50 * time.Millisecond):
	}
	if v, _, ok := a.eng.VerdictFor(dst); !ok || v != VerdictPending {
		t.Fatalf("verdict %v %v, want pending", v, ok)
	}
	// Fallback to clear: the held packets leave by the clear path, and so
	// do later ones, without a new acquire.
	a.eng.Decide(dst, VerdictClear, time.Now().Add(200*time.Millisecond))
	if n := rc.count(); n != maxHeldPerDest {
		t.Fatalf("%d packets sent in the clear, want the %d held", n, maxHeldPerDest)
	}
	sendUDP(t, a, dst, 3)
	waitFor(t, func() bool { return rc.count() == maxHeldPerDest+3 }, "clear sends")
	if p, err := ipview.Parse(rc.pkts[0]); err != nil || p.Dst != dst || p.DstPort != 9999 {
		t.Fatalf("clear packet %+v %v", p, err)
	}
	// The verdict runs out: the next packet asks again.
	time.Sleep(250 * time.Millisecond)
	sendUDP(t, a, dst, 1)
	if got := <-acq; got.dst != dst {
		t.Fatalf("acquire %+v", got)
	}
	// Drop: held and later packets are counted as blocked.
	a.eng.Decide(dst, VerdictDrop, time.Now().Add(time.Minute))
	sendUDP(t, a, dst, 2)
	waitFor(t, func() bool { return a.eng.Stats().Blocked == 3 }, "blocked")
}

func TestOpportunisticClasses(t *testing.T) {
	a, rc, acq := oeEndpoint(t)
	// private: held too (dropped on failure, by the control plane).
	sendUDP(t, a, netip.MustParseAddr("10.97.0.5"), 1)
	if got := <-acq; got.class != policy.ClassPrivate {
		t.Fatalf("acquire %+v", got)
	}
	// An explicit clear prefix goes out at once; an address in no class
	// (a configured tunnel's, without its SA) is dropped, never sent.
	sendUDP(t, a, netip.MustParseAddr("10.96.0.5"), 2)
	sendUDP(t, a, netip.MustParseAddr("10.95.0.5"), 2)
	waitFor(t, func() bool { return rc.count() == 2 && a.eng.Stats().NoSA == 2 }, "clear and dropped")
}

// TestOpportunisticFlushOnInstall: the pair installed for a pending
// destination carries its held packets, in order, and forgets the
// destination.
func TestOpportunisticFlushOnInstall(t *testing.T) {
	a, _, acq := oeEndpoint(t)
	b := newTestEndpoint(t, netip.MustParseAddr("10.98.0.2"))
	sendUDP(t, a, b.addr, 5)
	<-acq
	l, err := b.net.ListenUDPAddrPort(netip.AddrPortFrom(b.addr, 9999))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	connect(t, a, b, esp.AESGCM128)
	l.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 100)
	for i := 0; i < 5; i++ {
		if _, err := l.Read(buf); err != nil {
			t.Fatalf("held datagram %d: %v", i, err)
		}
	}
	if _, _, ok := a.eng.VerdictFor(b.addr); ok {
		t.Fatal("the destination is still pending after its SA was installed")
	}
	if st := a.eng.Stats(); st.TxPackets != 5 {
		t.Fatalf("stats %+v", st)
	}
}

// TestOpportunisticSweep: verdicts that ran out leave the table without a
// packet to notice them.
func TestOpportunisticSweep(t *testing.T) {
	a, _, _ := oeEndpoint(t)
	for i := 0; i < 100; i++ {
		a.eng.Decide(netip.AddrFrom4([4]byte{10, 98, 1, byte(i)}), VerdictClear, time.Now().Add(-time.Second))
	}
	if n := a.eng.oeDests.Load(); n != 100 {
		t.Fatalf("%d destinations, want 100", n)
	}
	a.eng.sweepOE(time.Now())
	if n := a.eng.oeDests.Load(); n != 0 {
		t.Fatalf("%d destinations after the sweep, want 0", n)
	}
}

// TestOpportunisticHoldRacesInstall: the outbound routine routes a batch
// on the table it loaded first. A packet of that batch that reaches the
// destination's stage after a pair was installed and flushed it is sent
// through the pair: it is neither held where no flush will come (and
// counted against the global bound for ever) nor the cause of a second
// acquire. So is one that meets a verdict Decide replaced.
func TestOpportunisticHoldRacesInstall(t *testing.T) {
	a, rc, acq := oeEndpoint(t)
	b := newTestEndpoint(t, netip.MustParseAddr("10.98.0.2"))
	l, err := b.net.ListenUDPAddrPort(netip.AddrPortFrom(b.addr, 9999))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sendUDP(t, a, b.addr, 1)
	<-acq
	stale := a.eng.routes.Load()
	v, _ := a.eng.oe.Load(b.addr)
	connect(t, a, b, esp.AESGCM128)

	late := ipv4Packet(ipview.ProtoUDP, a.addr, b.addr, 4444, 9999, []byte("late"))
	p, err := ipview.Parse(late)
	if err != nil {
		t.Fatal(err)
	}
	if a.eng.holdOE(v.(*oeDest), &p, late) {
		t.Fatal("a packet was held for a destination its pair's flush forgot")
	}
	a.eng.unrouted(stale, &p, late)
	readDatagrams(t, l, "held", "late")
	noneOn(t, acq, "a second acquire for a destination with an SA")
	if n := a.eng.oeHeld.Load(); n != 0 {
		t.Fatalf("%d packets counted as held", n)
	}
	if _, _, ok := a.eng.VerdictFor(b.addr); ok {
		t.Fatal("the destination has state again")
	}

	// A verdict replaced under a packet: the clear verdict decides it.
	dst := netip.MustParseAddr("10.98.0.9")
	sendUDP(t, a, dst, 1)
	<-acq
	v, _ = a.eng.oe.Load(dst)
	a.eng.Decide(dst, VerdictClear, time.Now().Add(time.Minute))
	late = ipv4Packet(ipview.ProtoUDP, a.addr, dst, 4444, 9999, []byte("late"))
	if p, err = ipview.Parse(late); err != nil {
		t.Fatal(err)
	}
	if a.eng.holdOE(v.(*oeDest), &p, late) {
		t.Fatal("a packet was held for a destination Decide replaced")
	}
	a.eng.unrouted(a.eng.routes.Load(), &p, late)
	if n := rc.count(); n != 2 {
		t.Fatalf("%d packets sent in the clear, want the held one and the late one", n)
	}
	if n := a.eng.oeHeld.Load(); n != 0 {
		t.Fatalf("%d packets counted as held", n)
	}
}

// readDatagrams reads datagrams from l until each of want came, in order.
func readDatagrams(t *testing.T, l interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}, want ...string) {
	t.Helper()
	l.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 100)
	for _, w := range want {
		n, err := l.Read(buf)
		if err != nil || string(buf[:n]) != w {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, w)
		}
	}
}

// noneOn fails if ch delivers within 50 ms.
func noneOn[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("%s: %+v", what, got)
	case <-time.After(50 * time.Millisecond):
	}
}
