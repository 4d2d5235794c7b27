package tunnel

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/ike"
)

// TestNodeStatus brings two nodes up, sends a datagram through ESP and
// reads both nodes' status: the configured peers with their IKE and Child
// SAs, selectors, SPIs, counters, last packet and rekey times, and JSON
// with arrays, never null, for lists.
func TestNodeStatus(t *testing.T) {
	a, b := nodePair(t)
	pb, err := b.ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	pa, err := a.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	buf := make([]byte, 64)
	for i := 0; ; i++ {
		pa.WriteTo([]byte("ping"), &net.UDPAddr{IP: net.IPv4(10, 97, 0, 2), Port: 5353})
		pb.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := pb.ReadFrom(buf); err == nil {
			break
		}
		if i == 25 {
			t.Fatal("no datagram reached B in 5 s")
		}
	}
	st := a.Status()
	if st.Mode != "netstack" || st.ClearPath != "forwarder" || st.IKEPort == 0 {
		t.Errorf("status header: %+v", st)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("peers: %+v", st.Peers)
	}
	p := st.Peers[0]
	if p.Name != "b" || p.Kind != PeerConfigured || p.State != PeerUp || p.Start != "start" || p.Address != "127.0.0.1" || p.LastError != "" {
		t.Errorf("peer: %+v", p)
	}
	if len(p.IKESAs) != 1 || len(p.IKESAs[0].ChildSAs) != 1 {
		t.Fatalf("SAs: %+v", p.IKESAs)
	}
	sa := p.IKESAs[0]
	if !sa.Initiator || sa.State != "established" || sa.Auth != "psk" || sa.Suite == "" || len(sa.SPIi) != 16 ||
		sa.RekeyInSeconds == nil || *sa.RekeyInSeconds < 3600 || sa.LastHeard == nil || *sa.LastHeard > 5 {
		t.Errorf("IKE SA: %+v", sa)
	}
	c := sa.ChildSAs[0]
	if strings.Join(c.LocalTS, ",") != "10.97.0.1" || strings.Join(c.RemoteTS, ",") != "10.97.0.2" || len(c.SPIIn) != 8 ||
		c.Out.Packets == 0 || c.Out.Bytes == 0 || c.Out.LastPacketSeconds == nil || *c.Out.LastPacketSeconds > 5 ||
		c.RekeyInSeconds == nil || c.ExpireInSeconds == nil || *c.ExpireInSeconds < *c.RekeyInSeconds {
		t.Errorf("Child SA: %+v", c)
	}
	if st.Events.IKEEstablished == 0 || st.Events.IKEFailed["other"] != 0 {
		t.Errorf("events: %+v", st.Events)
	}
	if bs := b.Status(); len(bs.Peers) != 1 || bs.Peers[0].State != PeerUp || bs.Peers[0].Start != "none" || bs.Peers[0].IKESAs[0].Initiator {
		t.Errorf("B's peers: %+v", bs.Peers)
	}
	j, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, list := range []string{"static_sas", "opportunistic", "autovpn_peers"} {
		if !strings.Contains(string(j), `"`+list+`":[]`) {
			t.Errorf("%s is not an empty array in %s", list, j)
		}
	}
}

// TestNodeStatusLastError: a configured peer that does not answer is shown
// down, with why.
func TestNodeStatusLastError(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	pc.Close() // nothing answers there
	addr := netip.MustParseAddr("10.97.0.1")
	psk := []byte("node test pre-shared key, long enough")
	n, err := NewNode(NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addr, 32)},
		Peers: []Peer{{IKE: &ike.PeerConfig{Name: "gone", Addr: netip.MustParseAddr("127.0.0.1"), IKEPort: port, NATTPort: port,
			Auth: ike.Credential{PSK: psk}, PeerAuth: ike.PeerAuth{PSK: psk}, LocalTS: hostSel(addr), RemoteTS: hostSel(netip.MustParseAddr("10.97.0.2")),
			RetransmitBase: 20 * time.Millisecond, RetransmitTries: 2}, Start: StartNever}},
		Logger: testLog(t, "A")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if p := n.Status().Peers[0]; p.State != PeerDown || p.LastError != "" || p.LastErrorSeconds != nil {
		t.Errorf("before: %+v", p)
	}
	if err := n.Up("gone"); err != nil {
		t.Fatal(err)
	}
	if err := n.Up("nobody"); err == nil {
		t.Error("Up of an unknown peer succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := n.Status().Peers[0]
		if p.LastError != "" {
			if p.State != PeerDown || p.LastErrorSeconds == nil || p.Start != "none" {
				t.Errorf("after: %+v", p)
			}
			if ev := n.Status().Events; ev.IKEFailed["no_answer"] != 1 || ev.IKEEstablished != 0 || len(ev.IKEFailed) != len(IKEFailureReasons) {
				t.Errorf("events: %+v (last error %q)", ev, p.LastError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no last error: %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recordingBypass is a device's bypass routes.
type recordingBypass struct {
	mu  sync.Mutex
	set map[netip.Addr]bool
}

func (r *recordingBypass) AddBypass(a netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set[a] = true
	return nil
}

func (r *recordingBypass) RemoveBypass(a netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.set, a)
	return nil
}

func (r *recordingBypass) has(a netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set[a]
}

// TestFlushRemovesBypass: flushing a clear verdict must also remove the
// bypass route it installed, or the destination's later flows keep going
// around oevpn in the clear while status says the next packet negotiates.
// Pending destinations (held packets, a negotiation under way) stay.
func TestFlushRemovesBypass(t *testing.T) {
	te, _, _ := oeEndpoint(t)
	bp := &recordingBypass{set: map[netip.Addr]bool{}}
	te.eng.cfg.Bypass = bp
	n := &Node{eng: te.eng, oe: &Opportunism{}}
	clear, drop, pending := netip.MustParseAddr("10.98.0.7"), netip.MustParseAddr("10.97.0.8"), netip.MustParseAddr("10.98.0.9")
	te.eng.Decide(clear, VerdictClear, time.Now().Add(time.Hour))
	te.eng.Decide(drop, VerdictDrop, time.Now().Add(time.Hour))
	n.oe.notes.tried(drop, "IPSECKEY")
	n.oe.notes.failed(drop, VerdictDrop, "no gateway answered")
	sendUDP(t, te, pending, 1)
	waitFor(t, func() bool { _, _, ok := te.eng.VerdictFor(pending); return ok }, "pending verdict")
	if !bp.has(clear) {
		t.Fatal("no bypass route for the clear verdict")
	}
	sh := n.Shunts()
	if len(sh) != 2 || sh[0].Destination != "10.97.0.8" || sh[0].Verdict != "drop" || sh[0].Class != "private" ||
		sh[0].Reason != "no gateway answered" || sh[0].Source != "IPSECKEY" || sh[0].ExpiresInSeconds == nil || *sh[0].ExpiresInSeconds != 3600 ||
		sh[1].Destination != "10.98.0.7" || sh[1].Verdict != "clear" {
		t.Errorf("shunts: %+v", sh)
	}
	if got := n.Flush(clear); got != 1 {
		t.Errorf("Flush(%v) = %d", clear, got)
	}
	if bp.has(clear) {
		t.Error("the bypass route outlived the flushed clear verdict")
	}
	if _, _, ok := te.eng.VerdictFor(clear); ok {
		t.Error("verdict still there")
	}
	if got := n.Flush(netip.Addr{}); got != 1 {
		t.Errorf("Flush(all) = %d, want 1 (the drop; pending stays)", got)
	}
	if _, _, ok := te.eng.VerdictFor(pending); !ok {
		t.Error("Flush removed a pending destination")
	}
	if ev := n.oe.notes.events.snapshot(); ev.OEFallbacks["drop"] != 1 || ev.OEFallbacks["clear"] != 0 {
		t.Errorf("fallbacks counted: %+v", ev.OEFallbacks)
	}
	if n.oe.notes.get(drop) != (oeNote{}) {
		t.Error("notes of a flushed destination kept")
	}
}

// TestPeerKind: a peer that is not configured is opportunistic or AutoVPN
// only by the names those make; any other is one a program added.
func TestPeerKind(t *testing.T) {
	for name, want := range map[string]string{
		"oe-out-192.0.2.1":          PeerOpportunistic,
		"oe-in-192.0.2.1":           PeerOpportunistic,
		"av-out-192.0.2.1-10.0.0.1": PeerAutoVPN,
		"av-in-192.0.2.1-10.0.0.1":  PeerAutoVPN,
		"autovpn-203.0.113.2":       PeerAutoVPN,
		"office":                    PeerAdded,
		"":                          PeerAdded,
	} {
		if got := peerKind(name); got != want {
			t.Errorf("peerKind(%q) = %q, want %q", name, got, want)
		}
	}
}
