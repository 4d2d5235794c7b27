package tunnel

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oevpn/oevpn/ike"
)

// Soak lifetimes: a Child SA rekey about every 10 s, an IKE SA rekey about
// every 20 s (each side's timer fires between 90 and 100 % of them).
const (
	soakChildLife = 10 * time.Second
	soakIKELife   = 20 * time.Second
	// soakSlack is how much longer than its lifetime an SA may live before
	// the soak calls its rekey timer lost: the exchange's round trips.
	soakSlack = 3 * time.Second
)

// TestSoak runs two endpoints (netstacks in this process, IKE over
// loopback) for OEVPN_SOAK (a duration, e.g. 30m; `make soak`) with short
// lifetimes and steady traffic: sequenced UDP both ways and a rate-limited,
// hashed TCP stream. It fails on
//   - a lost datagram (one that never arrives; late ones, reordered
//     around a rekey, are counted apart) or a damaged TCP stream;
//   - a lost timer: a Child or IKE SA that outlives its lifetime by more
//     than soakSlack, or fewer rekeys than the lifetimes call for;
//   - growth of goroutines or of the live heap between the end of the
//     warm-up and the end of the run;
//   - SA pairs piling up in the datapath.
//
// It is not part of `make test`.
func TestSoak(t *testing.T) {
	env := os.Getenv("OEVPN_SOAK")
	if env == "" {
		t.Skip("set OEVPN_SOAK to a duration (make soak) to run the soak test")
	}
	total, err := time.ParseDuration(env)
	if err != nil || total < time.Minute {
		t.Fatalf("OEVPN_SOAK=%q: want a duration of at least 1m", env)
	}
	logs := &ringLog{max: 400}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last IKE log lines:\n%s", logs.String())
		}
	})
	udpBefore := kernelUDPErrors()
	a, b := soakPair(t, logger)
	waitChild(t, a)
	waitChild(t, b)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	ab := soakUDP(t, &wg, stop, a.testEndpoint, b.testEndpoint, 6001)
	ba := soakUDP(t, &wg, stop, b.testEndpoint, a.testEndpoint, 6002)
	tcp := soakTCP(t, &wg, stop, a.testEndpoint, b.testEndpoint, 6003)

	// Watch the SAs on a: every Child and IKE SA seen, when first seen.
	childSeen, ikeSeen := map[uint32]time.Time{}, map[uint64]time.Time{}
	var maxChildAge, maxIKEAge time.Duration
	var maxPairs int
	type sample struct {
		at         time.Duration
		goroutines int
		heap       uint64
	}
	var samples []sample
	warmup := min(total/4, time.Minute)
	start := time.Now()
	nextSample := start.Add(warmup)
	for now := start; now.Sub(start) < total; now = time.Now() {
		for _, sa := range a.d.SAs() {
			if sa.State != "established" {
				continue // rekeyed or being deleted: its successor counts
			}
			if _, ok := ikeSeen[sa.SPIi]; !ok {
				ikeSeen[sa.SPIi] = now
			}
			maxIKEAge = max(maxIKEAge, now.Sub(ikeSeen[sa.SPIi]))
			for _, c := range sa.Children {
				if _, ok := childSeen[c.In.SPI]; !ok {
					childSeen[c.In.SPI] = now
				}
			}
		}
		// The newest Child SA is the one in use; its age is what a lost
		// rekey timer makes grow.
		var newest time.Time
		for _, seen := range childSeen {
			if seen.After(newest) {
				newest = seen
			}
		}
		maxChildAge = max(maxChildAge, now.Sub(newest))
		maxPairs = max(maxPairs, len(a.eng.Pairs()))
		if !now.Before(nextSample) {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			samples = append(samples, sample{now.Sub(start).Round(time.Second), runtime.NumGoroutine(), ms.HeapAlloc})
			nextSample = nextSample.Add(10 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)

	sent, got, late := ab.result()
	sent2, got2, late2 := ba.result()
	tcpSent, tcpErr := tcp.result()
	t.Logf("soak %v: child rekeys %d, IKE rekeys %d; oldest Child SA %v, oldest IKE SA %v; at most %d SA pairs",
		elapsed.Round(time.Second), len(childSeen)-1, len(ikeSeen)-1, maxChildAge.Round(100*time.Millisecond), maxIKEAge.Round(100*time.Millisecond), maxPairs)
	t.Logf("UDP a→b: %d sent, %d received (%d late), b→a: %d sent, %d received (%d late); TCP: %d MB intact",
		sent, got, late, sent2, got2, late2, tcpSent>>20)
	// Where lost datagrams went: the engines' drops, and the kernel's
	// (a loopback socket buffer overflowing on a busy machine).
	for _, e := range []*ikeEnd{a, b} {
		s := e.eng.Stats()
		t.Logf("%v drops: no SA %d, unknown SPI %d, decrypt %d, selector %d, send errors %d",
			e.addr, s.NoSA, s.UnknownSPI, s.DecryptErrors, s.SelectorDrops, s.SendErrors)
	}
	t.Logf("kernel UDP receive errors during the soak (all sockets): %d", kernelUDPErrors()-udpBefore)
	for _, s := range samples {
		t.Logf("  t=%-5v goroutines %4d  live heap %6.2f MiB", s.at, s.goroutines, float64(s.heap)/(1<<20))
	}

	if tcpErr != nil {
		t.Errorf("TCP stream: %v", tcpErr)
	}
	if lost := sent - got + sent2 - got2; lost > 0 {
		t.Errorf("%d datagrams lost", lost)
	}
	if maxChildAge > soakChildLife+soakSlack {
		t.Errorf("a Child SA lived %v with a lifetime of %v: a rekey timer was lost", maxChildAge, soakChildLife)
	}
	if maxIKEAge > soakIKELife+soakSlack {
		t.Errorf("an IKE SA lived %v with a lifetime of %v: a rekey timer was lost", maxIKEAge, soakIKELife)
	}
	if want := int(elapsed/soakChildLife) - 1; len(childSeen)-1 < want {
		t.Errorf("%d Child SA rekeys in %v, want at least %d", len(childSeen)-1, elapsed, want)
	}
	if want := int(elapsed/soakIKELife) - 1; len(ikeSeen)-1 < want {
		t.Errorf("%d IKE SA rekeys in %v, want at least %d", len(ikeSeen)-1, elapsed, want)
	}
	if maxPairs > 3 {
		t.Errorf("%d SA pairs installed at once: old ones are not removed", maxPairs)
	}
	if len(samples) >= 2 {
		first := samples[0]
		// The least of the last three: a sample taken in the middle of a
		// rekey holds both generations.
		last := samples[len(samples)-1]
		for _, s := range samples[max(0, len(samples)-3):] {
			last.goroutines = min(last.goroutines, s.goroutines)
			last.heap = min(last.heap, s.heap)
		}
		if last.goroutines > first.goroutines+8 {
			t.Errorf("goroutines grew from %d to %d", first.goroutines, last.goroutines)
		}
		if last.heap > first.heap+max(first.heap/4, 2<<20) {
			t.Errorf("live heap grew from %.2f to %.2f MiB", float64(first.heap)/(1<<20), float64(last.heap)/(1<<20))
		}
	}
}

// soakPair connects two endpoints with IKE (PSK) at the soak lifetimes.
func soakPair(t *testing.T, logger *slog.Logger) (a, b *ikeEnd) {
	t.Helper()
	a = newIKEEnd(t, netip.MustParseAddr("10.97.0.1"))
	b = newIKEEnd(t, netip.MustParseAddr("10.97.0.2"))
	lo := netip.MustParseAddr("127.0.0.1")
	aIKE, aNATT := a.ports()
	bIKE, bNATT := b.ports()
	idA, _ := ike.ParseIdentity("a.oevpn.test")
	idB, _ := ike.ParseIdentity("b.oevpn.test")
	psk := []byte("soak soak soak soak soak")
	peer := func(name string, port, natt uint16, local, remote ike.Identity, la, ra netip.Addr) *ike.PeerConfig {
		return &ike.PeerConfig{Name: name, Addr: lo, IKEPort: port, NATTPort: natt, LocalID: local, RemoteID: remote,
			Auth: ike.Credential{PSK: psk}, PeerAuth: ike.PeerAuth{PSK: psk}, LocalTS: hostSel(la), RemoteTS: hostSel(ra),
			ChildLifetime: soakChildLife, IKELifetime: soakIKELife}
	}
	startDaemonCfg(t, a, peer("b", bIKE, bNATT, idA, idB, a.addr, b.addr), ike.Config{Logger: logger.With("end", "a")})
	startDaemonCfg(t, b, peer("a", aIKE, aNATT, idB, idA, b.addr, a.addr), ike.Config{Logger: logger.With("end", "b")})
	if err := a.d.Initiate("b"); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// udpStream sends numbered datagrams at a steady rate and counts which
// arrive, and how many arrive after a later one.
type udpStream struct {
	sent, got, late atomic.Int64
	drain           func()
}

func (s *udpStream) result() (sent, got, late int64) {
	s.drain()
	return s.sent.Load(), s.got.Load(), s.late.Load()
}

// soakUDP streams 200 datagrams a second of 512 octets from a to b's port
// until stop closes.
func soakUDP(t *testing.T, wg *sync.WaitGroup, stop <-chan struct{}, a, b *testEndpoint, port uint16) *udpStream {
	t.Helper()
	dst := netip.AddrPortFrom(b.addr, port)
	ln, err := b.net.ListenUDPAddrPort(dst)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.net.DialUDPAddrPort(netip.AddrPortFrom(a.addr, 0), dst)
	if err != nil {
		t.Fatal(err)
	}
	s := &udpStream{}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 2048)
		var highest uint64
		var window [1 << 12]uint64 // the recent sequence numbers seen, to count a duplicate once
		for {
			n, _, err := ln.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(buf)
			if seq+uint64(len(window)) <= highest || window[seq%uint64(len(window))] == seq {
				continue // a duplicate, or older than the window
			}
			window[seq%uint64(len(window))] = seq
			s.got.Add(1)
			if seq < highest {
				s.late.Add(1)
			}
			highest = max(highest, seq)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		msg := make([]byte, 512)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(msg, seq)
			if _, err := c.Write(msg); err == nil {
				s.sent.Add(1)
			}
		}
	}()
	s.drain = func() {
		time.Sleep(2 * time.Second) // the last datagrams arrive
		ln.Close()
		c.Close()
		<-recvDone
	}
	return s
}

// tcpStream is a rate-limited TCP transfer checked by its hash.
type tcpStream struct {
	done <-chan sinkResult
	sent int64
	sum  [32]byte
	err  error
}

func (s *tcpStream) result() (int64, error) {
	if s.err != nil {
		return s.sent, s.err
	}
	select {
	case r := <-s.done:
		if r.err != nil || r.n != s.sent || r.sum != s.sum {
			return s.sent, fmt.Errorf("received %d of %d octets (err %v), hash match %v", r.n, s.sent, r.err, r.sum == s.sum)
		}
	case <-time.After(time.Minute):
		return s.sent, fmt.Errorf("the sink did not finish")
	}
	return s.sent, nil
}

// soakTCP sends pseudo-random data from a to b's port at about 2 MB/s until
// stop closes; result checks what arrived.
func soakTCP(t *testing.T, wg *sync.WaitGroup, stop <-chan struct{}, a, b *testEndpoint, port uint16) *tcpStream {
	t.Helper()
	s := &tcpStream{done: hashSink(t, b, port)}
	c, err := a.net.DialTCPAddrPort(netip.AddrPortFrom(b.addr, port))
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer c.Close()
		h := sha256.New()
		defer func() { s.sum = [32]byte(h.Sum(nil)) }()
		src := rand.NewChaCha8([32]byte{11})
		buf := make([]byte, 32<<10)
		tick := time.NewTicker(16 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			src.Read(buf)
			h.Write(buf)
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(buf); err != nil {
				s.err = fmt.Errorf("write after %d octets: %w", s.sent, err)
				return
			}
			s.sent += int64(len(buf))
		}
	}()
	return s
}

// ringLog keeps the last max lines written to it.
type ringLog struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (r *ringLog) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, string(p))
	if len(r.lines) > r.max {
		r.lines = slices.Delete(r.lines, 0, len(r.lines)-r.max)
	}
	return len(p), nil
}

func (r *ringLog) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "")
}

// kernelUDPErrors returns the kernel's count of UDP datagrams dropped on
// receive (InErrors in /proc/net/snmp: full socket buffers and bad
// checksums), 0 where there is none.
func kernelUDPErrors() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "InErrors" && i < len(f) {
				var v int64
				fmt.Sscan(f[i], &v)
				return v
			}
		}
	}
	return 0
}
