package ike

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// routerDatapath delivers what a daemon sends to the daemons it knows by
// address and drops the rest (spoofed sources); it counts Child SA
// installs.
type routerDatapath struct {
	memDatapath
	mu       sync.Mutex
	to       map[netip.Addr]*Daemon
	installs atomic.Int64
}

func newRouter(self netip.AddrPort, spiBase uint32) *routerDatapath {
	return &routerDatapath{memDatapath: memDatapath{self: self, nextSPI: spiBase, children: map[uint32]bool{}}, to: map[netip.Addr]*Daemon{}}
}

func (r *routerDatapath) route(a netip.Addr, d *Daemon) {
	r.mu.Lock()
	r.to[a] = d
	r.mu.Unlock()
}

func (r *routerDatapath) SendIKE(msg []byte, to netip.AddrPort, natt bool) error {
	r.mu.Lock()
	d := r.to[to.Addr()]
	r.mu.Unlock()
	if d != nil {
		d.HandlePacket(msg, r.self, natt)
	}
	return nil
}

func (r *routerDatapath) InstallChild(c *ChildSA) error {
	r.installs.Add(1)
	return r.memDatapath.InstallChild(c)
}

// countingHandler counts log records whose message contains one of the
// watched strings.
type countingHandler struct {
	slog.Handler
	mu     sync.Mutex
	counts map[string]int
}

func newCounting(watch ...string) *countingHandler {
	h := &countingHandler{Handler: slog.DiscardHandler, counts: map[string]int{}}
	for _, w := range watch {
		h.counts[w] = 0
	}
	return h
}

func (h *countingHandler) Enabled(_ context.Context, _ slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.counts {
		if strings.Contains(r.Message, w) {
			h.counts[w]++
		}
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(w string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[w]
}

// queuePeers makes the configurations of two PSK peers at a1 and a2.
func queuePeers(t *testing.T, a1, a2 netip.Addr, tweak func(*PeerConfig)) (p1, p2 *PeerConfig) {
	psk := []byte("queues queues queues")
	ts1 := Selectors{mustSelector(t, a1.String())}
	ts2 := Selectors{mustSelector(t, a2.String())}
	mk := func(name string, self, addr netip.Addr, local, remote Selectors) *PeerConfig {
		p := &PeerConfig{Name: name, Addr: addr, NATTPort: 4500, IKEPort: 4500, Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk},
			LocalID: IdentityOf(self), RemoteID: IdentityOf(addr), LocalTS: local, RemoteTS: remote, DPD: -1}
		if tweak != nil {
			tweak(p)
		}
		return p
	}
	return mk("to-"+a2.String(), a1, a2, ts1, ts2), mk("to-"+a1.String(), a2, a1, ts2, ts1)
}

// floodMessages builds n IKE_SA_INIT requests from n spoofed sources, and
// n messages that are not IKE at all.
func floodMessages(t *testing.T, n int) (inits [][]byte, srcs []netip.AddrPort, junk [][]byte) {
	for i := 0; i < n; i++ {
		ni := make([]byte, 32)
		rand.Read(ni)
		inits = append(inits, initRequest(t, uint64(i+1), ni, nil, 0))
		srcs = append(srcs, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}), 500))
		j := make([]byte, 64)
		rand.Read(j)
		binary.BigEndian.PutUint32(j[24:], 64) // a header that parses, for an SA nobody has
		j[17] = 0x20
		junk = append(junk, j)
	}
	return inits, srcs, junk
}

// flood sends the messages to d from goroutines goroutines at full speed
// until stop is closed.
func flood(d *Daemon, goroutines int, inits [][]byte, srcs []netip.AddrPort, junk [][]byte, stop chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := i % len(inits)
				d.HandlePacket(inits[k], srcs[k], false)
				d.HandlePacket(junk[k], srcs[k], false)
			}
		}()
	}
	return &wg
}

// TestTimersSurvivePacketFlood (issue 11, item 1): packets and timer
// callbacks shared one queue that dropped when full, so a timer that fired
// during a flood was lost for good: Child SA rekeys, liveness checks and
// the expiry of half-open IKE SAs stopped. Flood the daemon's packet path
// until its queues overflow and check that all three go on.
func TestTimersSurvivePacketFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods")
	}
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	p1, p2 := queuePeers(t, a1, a2, func(p *PeerConfig) {
		p.ChildLifetime, p.DPD = time.Second, 150*time.Millisecond
	})
	r1, r2 := newRouter(netip.AddrPortFrom(a1, 4500), 0x1000), newRouter(netip.AddrPortFrom(a2, 4500), 0x2000)
	logs := newCounting("liveness check", "IKE SA failed") // only half-open ones fail here
	d1, err := New(Config{Datapath: r1, Peers: []*PeerConfig{p1}, Responder: anyResponder(t), Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Close()
	d2, err := New(Config{Datapath: r2, Peers: []*PeerConfig{p2}})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	r1.route(a2, d2)
	r2.route(a1, d1)
	const halfOpenLife = time.Second
	d1.call(func() { d1.halfOpenTimeout = halfOpenLife })
	if err := d1.Initiate(p1.Name); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return oneEstablished(d1) && oneEstablished(d2) }, "IKE SA up")

	inits, srcs, junk := floodMessages(t, 1024)
	stop := make(chan struct{})
	wg := flood(d1, 3, inits, srcs, junk, stop)
	const floodFor = 6 * time.Second
	start := time.Now()
	installs0, checks0 := r1.installs.Load(), logs.count("liveness check")
	var lastInstalls int64
	var lastChecks int
	var stale int
	for time.Since(start) < floodFor {
		time.Sleep(500 * time.Millisecond)
		// No half-open IKE SA may outlive its timeout by much.
		d1.call(func() {
			for _, sa := range d1.half {
				if time.Since(sa.created) > halfOpenLife+time.Second {
					stale++
				}
			}
		})
		if time.Since(start) > floodFor-1500*time.Millisecond && lastInstalls == 0 {
			lastInstalls, lastChecks = r1.installs.Load(), logs.count("liveness check")
		}
	}
	close(stop)
	wg.Wait()
	installs, checks := r1.installs.Load()-installs0, logs.count("liveness check")-checks0
	lateInstalls, lateChecks := r1.installs.Load()-lastInstalls, logs.count("liveness check")-lastChecks
	st := d1.Stats()
	t.Logf("during %v of flood: %d Child SAs installed (rekeys of both ends), %d liveness checks, %d half-open expired, %d stale half-open sightings; %d packets dropped",
		floodFor, installs, checks, logs.count("IKE SA failed"), stale, st.PacketsDropped)
	if st.PacketsDropped == 0 {
		t.Fatal("the flood did not fill the packet queues: the test proves nothing")
	}
	// Child lifetime 1 s (minus up to 10%): about 6 rekeys, each
	// installing one Child SA here.
	if installs < 4 || lateInstalls == 0 {
		t.Errorf("Child SA rekeys stopped during the flood: %d in all, %d in the last 1.5 s", installs, lateInstalls)
	}
	if checks < 5 || lateChecks == 0 {
		t.Errorf("liveness checks stopped during the flood: %d in all, %d in the last 1.5 s", checks, lateChecks)
	}
	if stale > 0 || logs.count("IKE SA failed") == 0 {
		t.Errorf("half-open IKE SAs outlived their timeout by over a second (%d sightings, %d expired)", stale, logs.count("IKE SA failed"))
	}
	waitUntil(t, func() bool { return oneEstablished(d1) }, "the IKE SA after the flood") // (not mid-rekey)
}

// TestLegitimateUnderSpoofedFlood (issue 11, item 2): one goroutine floods
// a responder with spoofed IKE_SA_INIT at full speed; meanwhile a
// configured peer must connect within 5 s, every time, and an
// established IKE SA must keep rekeying its Child SA.
func TestLegitimateUnderSpoofedFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods")
	}
	aR, aL, aE := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.3")
	pL, pRL := queuePeers(t, aL, aR, nil)
	pE, pRE := queuePeers(t, aE, aR, func(p *PeerConfig) { p.ChildLifetime = time.Second })
	rR := newRouter(netip.AddrPortFrom(aR, 4500), 0x2000)
	rL := newRouter(netip.AddrPortFrom(aL, 4500), 0x1000)
	rE := newRouter(netip.AddrPortFrom(aE, 4500), 0x3000)
	// The responder also answers anyone, as the opportunistic one does:
	// the spoofed requests are acceptable but for their cookies.
	dR, err := New(Config{Datapath: rR, Peers: []*PeerConfig{pRL, pRE}, Responder: anyResponder(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer dR.Close()
	dL, err := New(Config{Datapath: rL, Peers: []*PeerConfig{pL}})
	if err != nil {
		t.Fatal(err)
	}
	defer dL.Close()
	dE, err := New(Config{Datapath: rE, Peers: []*PeerConfig{pE}})
	if err != nil {
		t.Fatal(err)
	}
	defer dE.Close()
	rR.route(aL, dL)
	rR.route(aE, dE)
	rL.route(aR, dR)
	rE.route(aR, dR)
	if err := dE.Initiate(pE.Name); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return oneEstablished(dE) }, "the established tunnel")

	inits, srcs, _ := floodMessages(t, 4096)
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // one goroutine, full speed, spoofed IKE_SA_INIT only
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := i % len(inits)
			dR.HandlePacket(inits[k], srcs[k], false)
			sent.Add(1)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(200 * time.Millisecond) // the flood is under way

	installs0 := rE.installs.Load()
	start := time.Now()
	const tries = 4
	var worst time.Duration
	for i := 0; i < tries; i++ {
		t0 := time.Now()
		if err := dL.Initiate(pL.Name); err != nil {
			t.Fatal(err)
		}
		for !oneEstablished(dL) {
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("attempt %d: the legitimate initiator did not connect within 5 s during the flood (%+v)", i+1, dR.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		worst = max(worst, time.Since(t0))
		if _, err := dL.Down(pL.Name); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, func() bool { return current(dL) == nil }, "the legitimate tunnel down")
	}
	for time.Since(start) < 3*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)
	rekeys := rE.installs.Load() - installs0
	t.Logf("flood of %.0f IKE_SA_INIT/s: %d connections, slowest %v; %d Child SA rekeys of the established tunnel in %v; %+v",
		float64(sent.Load())/time.Since(start).Seconds(), tries, worst.Round(time.Millisecond), rekeys, elapsed.Round(time.Millisecond), dR.Stats())
	if rekeys < int64(elapsed/time.Second)-1 {
		t.Errorf("the established tunnel rekeyed %d times in %v (every second expected)", rekeys, elapsed)
	}
	waitUntil(t, func() bool { return oneEstablished(dE) }, "the established tunnel after the flood")
}

// FuzzHandlePacket feeds arbitrary datagrams through the checks before the
// queues (header, COOKIE demanded of every IKE_SA_INIT) and on to the
// daemon: nothing may panic, on either goroutine.
func FuzzHandlePacket(f *testing.F) {
	ni := make([]byte, 32)
	f.Add(initRequest(f, 1, ni, nil, 0))
	f.Add(initRequest(f, 2, ni, make([]byte, 20), 0))
	f.Add(make([]byte, 28))
	sink := newSink()
	d, err := New(Config{Datapath: sink, CookieThreshold: -1, Responder: func(from netip.AddrPort, _ netip.Addr, _ []byte) *PeerConfig {
		remote, _ := policy.ParseSelector(from.Addr().String())
		return &PeerConfig{Name: from.Addr().String(), Addr: from.Addr(), Auth: Credential{Null: true},
			PeerAuth: PeerAuth{Null: true}, LocalTS: Selectors{remote}, RemoteTS: Selectors{remote}, DPD: -1}
	}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(d.Close)
	from := netip.MustParseAddrPort("198.51.100.9:500")
	f.Fuzz(func(t *testing.T, b []byte) {
		d.HandlePacket(b, from, len(b)%2 == 0)
		d.UnknownESP(uint32(len(b)), from)
		d.call(func() {}) // let the daemon take it
	})
}
