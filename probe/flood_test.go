package probe

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// meter is a Sender that counts what a gateway sends, in bytes of IP
// packets, by destination.
type meter struct {
	mu    sync.Mutex
	bytes int
	to    map[netip.Addr]int // messages
}

func (m *meter) SendICMP(dst netip.Addr, icmp []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bytes += 20 + len(icmp)
	m.to[dst]++
	return nil
}

func (m *meter) SendUDP(dst netip.AddrPort, msg []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bytes += 40 + 8 + len(msg)
	m.to[dst.Addr()]++
	return nil
}

func (m *meter) sent() (int, map[netip.Addr]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	to := make(map[netip.Addr]int, len(m.to))
	for a, n := range m.to {
		to[a] = n
	}
	return m.bytes, to
}

// synAckTo is our host H2's SYN+ACK to a (spoofed) peer.
func synAckTo(peer netip.Addr) []byte {
	p := synAck()
	copy(p[16:], peer.AsSlice())
	return p
}

// spoofed is the i-th source of a flood: one per /24, outside 10.1/16.
func spoofed(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(11 + i>>16), byte(i >> 8), byte(i), 7})
}

// synLen is a spoofed SYN with the usual options: what each trigger of
// the flood brings.
const synLen = 60

// TestProbeFloodSpoofed performs issue 10 item 10: a flood of triggers
// from spoofed sources, more than the per-peer table holds. G2 must
// reflect fewer bytes than the flood brought (retransmissions counted),
// keep its tables bounded, still probe a new real peer, and still
// remember the real peer whose gateway answered.
func TestProbeFloodSpoofed(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m := &meter{to: map[netip.Addr]int{}}
	g := NewGateway(Config{Sender: m, Retransmit: time.Millisecond, Now: clock})
	t.Cleanup(g.Close)

	// A real peer A, whose gateway answers: its entry must survive.
	realA := h1Addr
	if err := g.Probe(synAck(), 4*synLen+3*1500); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	req := g.probing.oldest().msg
	g.mu.Unlock()
	resp := &Message{Type: Response, NonceI: nonce(9), NonceR: req.NonceR}
	g.HandleUDP(resp.AppendUDP(nil), netip.AddrPortFrom(g1Addr, 4500), h2Addr)

	flood := func(n, paid int) (in int) {
		for i := 0; i < n; i++ {
			g.Probe(synAckTo(spoofed(i)), paid)
			in += paid
			mu.Lock()
			now = now.Add(time.Millisecond) // a flood of 1,000 triggers a second
			mu.Unlock()
		}
		time.Sleep(50 * time.Millisecond) // the retransmissions
		return in
	}
	time.Sleep(20 * time.Millisecond) // the Complete's retransmissions
	base, _ := m.sent()
	// Spoofed SYNs alone, more than the table holds.
	in := flood(MaxPeers+4464, synLen)
	out, _ := m.sent()
	if out -= base; out >= in {
		t.Errorf("spoofed SYNs: %d bytes reflected for %d bytes sent", out, in)
	}
	t.Logf("spoofed SYNs: %d bytes in, %d bytes of probes out", in, out)
	// Spoofed flows that pay for their probes (SYN and junk): each is
	// probed, and still reflects less than it brought.
	paid := synLen + 700
	in = flood(MaxPeers+4464, paid)
	out2, _ := m.sent()
	if out2 -= base + out; out2 >= in {
		t.Errorf("paid spoofed flows: %d bytes reflected for %d bytes sent", out2, in)
	}
	t.Logf("paid spoofed flows: %d bytes in, %d bytes of probes out (%.2f)", in, out2, float64(out2)/float64(in))

	g.mu.Lock()
	peers, under := g.peers.tried.len()+g.peers.answered.len(), g.probing.len()+g.completed.len()
	g.mu.Unlock()
	if peers > MaxPeers || under > maxProbes {
		t.Errorf("tables grew: %d peers (max %d), %d exchanges (max %d)", peers, MaxPeers, under, maxProbes)
	}
	// A new real peer is still probed.
	realB := netip.MustParseAddr("10.7.0.9")
	_, before := m.sent()
	if err := g.Probe(synAckTo(realB), 4*synLen+3*1500); err != nil {
		t.Fatalf("a real peer after the flood: %v", err)
	}
	if _, after := m.sent(); after[realB] != before[realB]+1 {
		t.Fatal("no probe request went to the real peer")
	}
	// The peer that answered is remembered (not probed again).
	if err := g.Probe(synAckTo(realA), 4*synLen+3*1500); err != ErrLimited {
		t.Fatalf("the answered peer was forgotten by the flood: %v", err)
	}
}

// TestProbePrefixLimit: triggers for many hosts of one /24 (or /48) get
// PrefixBurst probes, then one per PrefixRefill.
func TestProbePrefixLimit(t *testing.T) {
	for _, victim := range []string{"198.51.100.0", "2001:db8:77::"} {
		now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
		var mu sync.Mutex
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		m := &meter{to: map[netip.Addr]int{}}
		g := NewGateway(Config{Sender: m, Retransmit: time.Hour, Now: clock})
		probe := func(i int) error {
			a := netip.MustParseAddr(victim).As16()
			a[15], a[11] = byte(i), byte(i>>8) // same /24, same /48
			host := netip.AddrFrom16(a).Unmap()
			var reply []byte
			if host.Is4() {
				reply = synAckTo(host)
			} else {
				reply = make([]byte, 60)
				reply[0], reply[6] = 0x60, 6
				binary.BigEndian.PutUint16(reply[4:], 20)
				copy(reply[8:], netip.MustParseAddr("2001:db8:2::2").AsSlice())
				copy(reply[24:], host.AsSlice())
				reply[53] = 0x12
			}
			return g.Probe(reply, paidInFull)
		}
		sent := 0
		for i := 1; i <= 50; i++ {
			if probe(i) == nil {
				sent++
			}
		}
		if sent != PrefixBurst {
			t.Errorf("%s: %d probes to one prefix at once, want %d", victim, sent, PrefixBurst)
		}
		mu.Lock()
		now = now.Add(5 * PrefixRefill)
		mu.Unlock()
		sent = 0
		for i := 51; i <= 100; i++ {
			if probe(i) == nil {
				sent++
			}
		}
		if sent != 5 {
			t.Errorf("%s: %d probes after 5 refill periods, want 5", victim, sent)
		}
		g.Close()
	}
}

// TestProbeUnpaid: a trigger that brought fewer bytes than the probe
// costs is refused, and leaves no state.
func TestProbeUnpaid(t *testing.T) {
	if minProbeCost > 3*144 || maxProbeCost < 3*198 {
		t.Fatalf("cost bounds %d..%d miss the IPv6 (3 × 144) or IPv4 (3 × 198) probe", minProbeCost, maxProbeCost)
	}
	m := &meter{to: map[netip.Addr]int{}}
	g := NewGateway(Config{Sender: m})
	defer g.Close()
	for _, paid := range []int{0, synLen, minProbeCost, 3 * 198} {
		if err := g.Probe(synAck(), paid); err != ErrUnpaid {
			t.Errorf("paid %d: %v, want ErrUnpaid", paid, err)
		}
	}
	if err := g.Probe(synAck(), 3*198+1); err != nil {
		t.Errorf("paid one byte more than the probe costs: %v", err)
	}
	if st := g.Stats(); st.Unpaid != 4 || st.Requests != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestAnswerFlood: as G1, a flood of probe requests (from a server our
// host talks to, say) fills the table of answers awaiting their Complete;
// a real probe must still complete.
func TestAnswerFlood(t *testing.T) {
	w := newWire(t, nil)
	w.drop = func(kind string, n int) bool { return kind == "udp" && n <= maxProbes+100 } // the flood's responses
	for i := 0; i < maxProbes+100; i++ {
		frag, _ := Original(synAckTo(spoofed(i)))
		m := &Message{Type: Request, NonceR: nonce(byte(i)), NAT: &NATDetect{Addr: spoofed(i), Port: 40000}, Fragment: frag}
		w.g1.HandleICMP(m.AppendICMP(nil), netip.MustParseAddr("203.0.113.9"), spoofed(i))
	}
	if err := w.g2.Probe(synAck(), paidInFull); err != nil {
		t.Fatal(err)
	}
	w.waitCompleted(t, 1)
}

// TestProbeEvictedRetried: a flood of probes (from peers that complete
// TCP handshakes at their own addresses, say) pushes a real peer's probe
// out while it is under way; the real peer's next reply must probe it
// again, not find it "probed recently" for 24 hours.
func TestProbeEvictedRetried(t *testing.T) {
	m := &meter{to: map[netip.Addr]int{}}
	g := NewGateway(Config{Sender: m, Retransmit: time.Hour})
	defer g.Close()
	peer := netip.MustParseAddr("10.7.0.9")
	if err := g.Probe(synAckTo(peer), ProvenPeer); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxProbes; i++ {
		if err := g.Probe(synAckTo(spoofed(i)), ProvenPeer); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	if err := g.Probe(synAckTo(peer), ProvenPeer); err != nil {
		t.Fatalf("the real peer, its probe pushed out: %v", err)
	}
}
