package probe

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
)

var (
	g1Addr, g2Addr = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	h1Addr, h2Addr = netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("10.2.0.2")
	g1v6, h1v6     = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8:1::2")
	h2v6           = netip.MustParseAddr("2001:db8:2::2")
)

// wire joins two gateways: what G2 sends to H1 is intercepted by G1, what
// G1 sends to H2 by G2, and what G2 sends to G1 reaches G1. drop, if set,
// loses messages.
type wire struct {
	mu        sync.Mutex
	g1, g2    *Gateway
	drop      func(kind string, n int) bool
	counts    map[string]int
	completed []Completed
	captured  [][]byte // every message, for replay tests
}

type end struct {
	w    *wire
	self netip.Addr
}

func (e end) SendICMP(dst netip.Addr, icmp []byte) error {
	e.w.deliver("icmp", func() { e.w.g1.HandleICMP(icmp, e.self, dst) }, icmp)
	return nil
}

func (e end) SendUDP(dst netip.AddrPort, msg []byte) error {
	// To H1 or G1: G1 takes it; to H2: G2 does.
	to := e.w.g2
	if a := dst.Addr(); a == h1Addr || a == g1Addr || a == h1v6 || a == g1v6 {
		to = e.w.g1
	}
	e.w.deliver("udp", func() { to.HandleUDP(msg, netip.AddrPortFrom(e.self, 4500), dst.Addr()) }, msg)
	return nil
}

func (w *wire) deliver(kind string, f func(), msg []byte) {
	w.mu.Lock()
	w.counts[kind]++
	n := w.counts[kind]
	w.captured = append(w.captured, bytes.Clone(msg))
	lose := w.drop != nil && w.drop(kind, n)
	w.mu.Unlock()
	if !lose {
		go f()
	}
}

// last returns the last captured message of a type, encoded and decoded.
func (w *wire) last(typ MsgType) ([]byte, *Message) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.captured) - 1; i >= 0; i-- {
		b := w.captured[i]
		m, err := ParseICMP(b)
		if err != nil {
			m, err = ParseUDP(b)
		}
		if err == nil && m.Type == typ {
			return b, m
		}
	}
	return nil, nil
}

func newWire(t *testing.T, now func() time.Time) *wire {
	w := &wire{counts: map[string]int{}}
	w.g1 = NewGateway(Config{Sender: end{w, g1Addr}, Retransmit: 30 * time.Millisecond, Now: now,
		OnComplete: func(c Completed) { w.mu.Lock(); w.completed = append(w.completed, c); w.mu.Unlock() }})
	w.g2 = NewGateway(Config{Sender: end{w, g2Addr}, Retransmit: 30 * time.Millisecond, Now: now})
	t.Cleanup(w.g1.Close)
	t.Cleanup(w.g2.Close)
	return w
}

// synAck is H2's reply to H1: 10.2.0.2:80 → 10.1.0.2:40000, SYN+ACK.
func synAck() []byte {
	p := make([]byte, 40)
	p[0], p[9] = 0x45, 6
	binary.BigEndian.PutUint16(p[2:], 40)
	copy(p[12:], h2Addr.AsSlice())
	copy(p[16:], h1Addr.AsSlice())
	binary.BigEndian.PutUint16(p[20:], 80)
	binary.BigEndian.PutUint16(p[22:], 40000)
	p[33] = 0x12
	return p
}

func (w *wire) waitCompleted(t *testing.T, n int) []Completed {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		w.mu.Lock()
		c := append([]Completed(nil), w.completed...)
		w.mu.Unlock()
		if len(c) >= n {
			return c
		}
	}
	t.Fatalf("%d probes completed, want %d", len(w.completed), n)
	return nil
}

func TestExchange(t *testing.T) {
	w := newWire(t, nil)
	if err := w.g2.Probe(synAck(), paidInFull); err != nil {
		t.Fatal(err)
	}
	c := w.waitCompleted(t, 1)[0]
	if c.Gateway != g2Addr || c.Local != h1Addr || c.Remote != h2Addr || c.NAT {
		t.Fatalf("G1 completed %+v", c)
	}
	if c.Flow.Src != h1Addr || c.Flow.SrcPort != 40000 || c.Flow.DstPort != 80 {
		t.Fatalf("flow %+v", c.Flow)
	}
	// G2 accepts the IKE_SA_INIT nonce once, from G1 only.
	if _, ok := w.g2.Accept(c.NonceR, netip.MustParseAddr("192.0.2.99")); ok {
		t.Fatal("nonce accepted from another gateway")
	}
	a, ok := w.g2.Accept(c.NonceR, g1Addr)
	if !ok || a.Local != h2Addr || a.Remote != h1Addr {
		t.Fatalf("G2 accept %+v %v", a, ok)
	}
	if _, ok := w.g2.Accept(c.NonceR, g1Addr); ok {
		t.Fatal("nonce accepted twice")
	}
	bogus := bytes.Clone(c.NonceR)
	bogus[3] ^= 1
	if _, ok := w.g2.Accept(bogus, g1Addr); ok {
		t.Fatal("wrong nonce accepted")
	}
	// The peer is not probed again within 24 hours.
	if err := w.g2.Probe(synAck(), paidInFull); err != ErrLimited {
		t.Fatalf("second probe: %v", err)
	}
}

func TestRetransmissions(t *testing.T) {
	// The first two requests and the first complete are lost.
	w := newWire(t, nil)
	w.drop = func(kind string, n int) bool { return kind == "icmp" && (n == 1 || n == 2 || n == 4) }
	w.g2.Probe(synAck(), paidInFull)
	w.waitCompleted(t, 1)
	time.Sleep(100 * time.Millisecond)
	st := w.g2.Stats()
	if st.Requests != 3 || st.Completes < 2 || st.Completes > 3 {
		t.Fatalf("G2 %+v", st)
	}
	// Never more than three sends of a message, even when all are lost.
	w2 := newWire(t, nil)
	w2.drop = func(string, int) bool { return true }
	w2.g2.Probe(synAck(), paidInFull)
	time.Sleep(200 * time.Millisecond)
	if st := w2.g2.Stats(); st.Requests != 3 {
		t.Fatalf("%d requests sent into the void, want 3", st.Requests)
	}
}

func TestForgedAndReplayed(t *testing.T) {
	w := newWire(t, nil)
	w.g2.Probe(synAck(), paidInFull)
	w.waitCompleted(t, 1)
	time.Sleep(50 * time.Millisecond)
	before := w.g1.Stats().Completed
	// The genuine Complete, replayed: refused (it was used).
	complete, _ := w.last(Complete)
	w.g1.HandleICMP(complete, g2Addr, g1Addr)
	// A forged Complete: right shape, Nonce-I not ours.
	orig, _ := Original(synAck())
	f := &Message{Type: Complete, NonceI: bytes.Repeat([]byte{7}, 17), NonceR: bytes.Repeat([]byte{8}, 17), Fragment: orig}
	w.g1.HandleICMP(f.AppendICMP(nil), g2Addr, g1Addr)
	// A complete from another address than the one we answered.
	w.g1.HandleICMP(complete, netip.MustParseAddr("192.0.2.66"), g1Addr)
	// A forged response to G2: unknown Nonce-R.
	r := &Message{Type: Response, NonceI: bytes.Repeat([]byte{7}, 17), NonceR: bytes.Repeat([]byte{8}, 17)}
	w.g2.HandleUDP(r.AppendUDP(nil), netip.AddrPortFrom(g1Addr, 4500), h2Addr)
	// Truncated and mis-sized messages.
	w.g2.HandleUDP(r.AppendUDP(nil)[:PreambleLen+5], netip.AddrPortFrom(g1Addr, 4500), h2Addr)
	short := &Message{Type: Response, NonceI: []byte{1, 2, 3}, NonceR: bytes.Repeat([]byte{8}, 17)}
	w.g2.HandleUDP(short.AppendUDP(nil), netip.AddrPortFrom(g1Addr, 4500), h2Addr)
	if w.g1.Stats().Completed != before {
		t.Fatal("G1 completed a forged exchange")
	}
	if d1, d2 := w.g1.Stats().Dropped, w.g2.Stats().Dropped; d1 < 2 || d2 < 3 {
		t.Fatalf("dropped: G1 %d, G2 %d", d1, d2)
	}
}

func TestStaleKey(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	w := newWire(t, clock)
	w.g1.cfg.Nonces.Rollover = time.Minute
	w.drop = func(kind string, n int) bool { return kind == "icmp" && n >= 2 } // completes are lost
	w.g2.Probe(synAck(), paidInFull)
	time.Sleep(150 * time.Millisecond)
	complete, _ := w.last(Complete)
	if complete == nil {
		t.Fatal("no complete captured")
	}
	// Two key rollovers later the Complete is stale.
	mu.Lock()
	now = now.Add(3 * time.Minute)
	mu.Unlock()
	w.g1.HandleICMP(complete, g2Addr, g1Addr)
	if w.g1.Stats().Completed != 0 {
		t.Fatal("a complete with a retired key was accepted")
	}
}

func TestNATDetect(t *testing.T) {
	w := newWire(t, nil)
	// A NAT between the gateways: G2 saw H1 as 198.51.100.7:61000; the
	// NAT rewrote the fragment inside the ICMP error back to H1.
	public := netip.MustParseAddrPort("198.51.100.7:61000")
	reply := synAck()
	copy(reply[16:], public.Addr().AsSlice())
	binary.BigEndian.PutUint16(reply[22:], public.Port())
	frag, _ := Original(reply)
	m := &Message{Type: Request, NonceR: w.g2.cfg.Nonces.Mint(public.Addr(), frag), NAT: &NATDetect{Addr: public.Addr(), Port: public.Port()}}
	translated, _ := Original(synAck())
	m.Fragment = translated
	w.g1.HandleICMP(m.AppendICMP(nil), g2Addr, h1Addr)
	// Complete as G2 would send it, with the same (translated) fragment.
	_, resp := w.last(Response)
	if resp == nil {
		time.Sleep(20 * time.Millisecond)
		_, resp = w.last(Response)
	}
	if resp == nil {
		t.Fatal("no response")
	}
	done := &Message{Type: Complete, NonceI: resp.NonceI, NonceR: resp.NonceR, Fragment: translated}
	w.g1.HandleICMP(done.AppendICMP(nil), g2Addr, g1Addr)
	c := w.waitCompleted(t, 1)[0]
	if !c.NAT || c.Public != public || c.Local != public.Addr() || c.Flow.Src != h1Addr {
		t.Fatalf("NAT not detected: %+v", c)
	}
}

func TestNotAProbe(t *testing.T) {
	w := newWire(t, nil)
	plain := []byte{3, 3, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(plain[2:], ipview.Checksum(plain))
	if w.g1.HandleICMP(plain, g2Addr, h1Addr) {
		t.Fatal("a port unreachable was consumed")
	}
}

func TestOriginal(t *testing.T) {
	reply := synAck()
	binary.BigEndian.PutUint32(reply[28:], 0x01020304) // the reply's ACK number
	o, err := Original(reply)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := FlowOf(o)
	if f.Src != h1Addr || f.Dst != h2Addr || f.SrcPort != 40000 || f.DstPort != 80 || ipview.Checksum(o[:20]) != 0 {
		t.Fatalf("original %+v (header checksum %#x)", f, ipview.Checksum(o[:20]))
	}
	if binary.BigEndian.Uint32(o[24:]) != 0x01020304 {
		t.Fatalf("sequence number % x, want the reply's acknowledgment", o[24:28])
	}
}

// TestExchangeIPv6: over IPv6 every message is UDP/4500 with the fragment
// in its own payload.
func TestExchangeIPv6(t *testing.T) {
	w := newWire(t, nil)
	g2v6 := netip.MustParseAddr("2001:db8::2")
	w.g2.cfg.Sender = end{w, g2v6}
	w.g1.cfg.Sender = end{w, g1v6}
	reply := make([]byte, 60)
	reply[0], reply[6], reply[7] = 0x60, 6, 64
	binary.BigEndian.PutUint16(reply[4:], 20)
	copy(reply[8:], h2v6.AsSlice())
	copy(reply[24:], h1v6.AsSlice())
	binary.BigEndian.PutUint16(reply[40:], 443)
	binary.BigEndian.PutUint16(reply[42:], 50000)
	reply[53] = 0x12
	if err := w.g2.Probe(reply, paidInFull); err != nil {
		t.Fatal(err)
	}
	c := w.waitCompleted(t, 1)[0]
	if c.Gateway != g2v6 || c.Local != h1v6 || c.Remote != h2v6 || c.Flow.SrcPort != 50000 {
		t.Fatalf("completed %+v", c)
	}
	if w.counts["icmp"] != 0 || w.counts["udp"] < 3 {
		t.Fatalf("messages %v: IPv6 must use UDP only", w.counts)
	}
	if _, ok := w.g2.Accept(c.NonceR, g1v6); !ok {
		t.Fatal("G2 did not accept the IPv6 exchange's nonce")
	}
}

// paidInFull is what a long flow brought: enough for any probe.
const paidInFull = 1 << 20
