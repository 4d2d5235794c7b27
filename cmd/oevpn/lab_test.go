//go:build linux

package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/internal/lab"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// oevpnBinary builds the real binary once per test run.
func oevpnBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "oevpn-lab-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "oevpn")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// labPair is two namespaces joined by a veth pair, each running oevpn on a
// TUN device with statically keyed SAs, host to host: the inner addresses are
// the veth addresses.
type labPair struct {
	a, b         *lab.Netns
	vethA, vethB string
	procA, procB *lab.Proc
	cfgA, cfgB   string
	spiAB, spiBA uint32
	keys         [][]byte
}

const (
	labA4, labB4 = "10.201.0.1", "10.201.0.2"
	labA6, labB6 = "fd01:201::1", "fd01:201::2"
	// Addresses on the same veth that no SA covers: the bare-link baseline.
	bareA4, bareB4 = "10.202.0.1", "10.202.0.2"
	// Addresses the policy blocks.
	blockB4 = "10.203.0.2"
)

const labConfig = `
[interface]
mode = "tun"
name = "%s"
log_level = "debug"

[policy]
block = ["10.203.0.0/24"]

[[sa]]
peer = "%s:4500"
local = ["%s"]
remote = ["%s"]
transform = "%s"
esn = true
spi_out = %d
spi_in = %d
key_out = "%x"
key_in = "%x"

[[sa]]
peer = "[%s]:4500"
local = ["%s"]
remote = ["%s"]
transform = "%s"
spi_out = %d
spi_in = %d
key_out = "%x"
key_in = "%x"
`

func randSPI() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])%0xf0000000 + 0x10000
}

func newLabPair(t *testing.T, tr esp.Transform) *labPair {
	t.Helper()
	bin := oevpnBinary(t)
	lp := &labPair{a: lab.NewNetns(t), b: lab.NewNetns(t)}
	lp.vethA, lp.vethB = lab.Veth(t, lp.a, lp.b)
	for _, x := range []struct {
		ns     *lab.Netns
		dev    string
		v4, v6 string
		bare4  string
	}{{lp.a, lp.vethA, labA4, labA6, bareA4}, {lp.b, lp.vethB, labB4, labB6, bareB4}} {
		x.ns.Run("ip", "addr", "add", x.v4+"/24", "dev", x.dev)
		x.ns.Run("ip", "addr", "add", x.bare4+"/24", "dev", x.dev)
		x.ns.Run("ip", "addr", "add", strings.Replace(x.bare4, "10.202.", "10.203.", 1)+"/24", "dev", x.dev)
		x.ns.Run("ip", "addr", "add", x.v6+"/64", "dev", x.dev, "nodad")
	}
	keys := make([][]byte, 4)
	for i := range keys {
		keys[i] = make([]byte, tr.KeyLen())
		rand.Read(keys[i])
	}
	lp.keys = keys
	lp.spiAB, lp.spiBA = randSPI(), randSPI()
	spi6AB, spi6BA := randSPI(), randSPI()
	dir := t.TempDir()
	write := func(name string, args ...any) string {
		p := filepath.Join(dir, name)
		// The sequence numbers of the static keys are kept in the test's
		// own directory.
		cfg := strings.Replace(fmt.Sprintf(labConfig, args...), "[interface]\n", fmt.Sprintf("[interface]\nstate_dir = %q\n", dir), 1)
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	devA, devB := lab.Unique("ta"), lab.Unique("tb")
	lp.cfgA = write("a.toml", devA, labB4, labA4, labB4, tr, lp.spiAB, lp.spiBA, keys[0], keys[1],
		labB6, labA6, labB6, tr, spi6AB, spi6BA, keys[2], keys[3])
	lp.cfgB = write("b.toml", devB, labA4, labB4, labA4, tr, lp.spiBA, lp.spiAB, keys[1], keys[0],
		labA6, labB6, labA6, tr, spi6BA, spi6AB, keys[3], keys[2])
	lp.procA = lp.a.Start(bin, "up", "-c", lp.cfgA)
	lp.procB = lp.b.Start(bin, "up", "-c", lp.cfgB)
	for _, p := range []*lab.Proc{lp.procA, lp.procB} {
		if err := p.WaitFor("endpoint up", 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return lp
}

// stop sends SIGTERM to both endpoints and checks that they exit cleanly
// and leave no rule behind.
func (lp *labPair) stop(t *testing.T) {
	t.Helper()
	for _, x := range []struct {
		ns *lab.Netns
		p  *lab.Proc
	}{{lp.a, lp.procA}, {lp.b, lp.procB}} {
		x.p.Signal(syscall.SIGTERM)
		if err := x.p.Wait(10 * time.Second); err != nil {
			t.Fatalf("oevpn did not exit cleanly: %v\n%s", err, x.p.Output())
		}
		for _, k := range lp.keys {
			if out := x.p.Output(); strings.Contains(out, fmt.Sprintf("%x", k)) || strings.Contains(out, fmt.Sprintf("%x", k[:8])) {
				t.Fatalf("key material in the log:\n%s", out)
			}
		}
		for _, f := range []string{"-4", "-6"} {
			if rules := x.ns.Run("ip", f, "rule"); strings.Contains(rules, "0x4f45") {
				t.Fatalf("rule left after shutdown:\n%s", rules)
			}
		}
	}
}

func TestLabTwoNamespaces(t *testing.T) {
	lab.Require(t, "iperf3", "tcpdump", "ping")
	lp := newLabPair(t, esp.AESGCM256)

	// Capture on B's side of the veth while traffic flows.
	stop := tcpdump(t, lp.b, lp.vethB, "ip or ip6")

	lp.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", labB4)
	lp.a.Run("ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", labB6)
	srv := lp.b.Start("iperf3", "-s", "-1", "--forceflush", "-B", labB4)
	if err := srv.WaitFor("Server listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	gbps := iperf(t, lp.a, labB4, 2)
	t.Logf("iperf3 TCP through the tunnel (2 s): %.2f Gbit/s", gbps)
	srv.Wait(10 * time.Second)

	checkCapture(t, stop(), lp)
	// The policy blocks 10.203.0.0/24: nothing gets through, in the clear or
	// otherwise.
	if out, err := lp.a.Try("ping", "-c", "1", "-W", "1", blockB4); err == nil {
		t.Errorf("ping to a blocked address succeeded:\n%s", out)
	}
	if st := oevpnStatus(t, lp.cfgA); st.Datapath.Blocked == 0 {
		t.Errorf("no packet counted as blocked: %+v", st.Datapath)
	}
	for addr, want := range map[string]string{labB4: "encrypted-and-authenticated", bareB4: "clear", labB6: "encrypted-and-authenticated",
		blockB4: "blocked"} {
		out, err := exec.Command(oevpnBinary(t), "check", "-c", lp.cfgA, addr).CombinedOutput()
		if exitCode(err) != verdictExit(want) || !strings.Contains(string(out), addr+": "+want) {
			t.Errorf("oevpn check %s: %v, %s; want %s", addr, err, out, want)
		}
	}
	lp.stop(t)
}

// checkCapture reads the capture of the veth: every IP packet between the
// two hosts must be UDP/4500 carrying ESP (or IPv6 neighbour discovery), and
// there must be ESP with our SPIs in both directions.
func checkCapture(t *testing.T, path string, lp *labPair) {
	t.Helper()
	link, frames := readFrames(t, path)
	if link != 1 {
		t.Fatalf("capture link type %d, want Ethernet", link)
	}
	var esp4500, clear int
	spis := map[uint32]int{}
	for _, f := range frames {
		ip := f.IPPayload()
		if ip == nil {
			continue
		}
		p, err := ipview.Parse(capturedIP(ip))
		if err != nil {
			t.Errorf("unparsable IP packet in the capture: %v", err)
			continue
		}
		if p.Dst.IsLinkLocalMulticast() || (p.Proto == ipview.ProtoICMPv6 && p.SrcPort>>8 >= 133 && p.SrcPort>>8 <= 137) {
			continue // IPv6 neighbour discovery and MLD
		}
		if p.Proto == ipview.ProtoUDP && p.DstPort == 4500 && p.SrcPort == 4500 {
			l4 := ip[headerLen(ip)+8:]
			if len(l4) >= 8 {
				if kind, _ := esp.Classify(l4); kind == esp.KindESP {
					esp4500++
					spis[esp.Header(l4).SPI()]++
					continue
				}
			}
		}
		clear++
		t.Errorf("packet in the clear on the veth: %v → %v proto %d ports %d→%d", p.Src, p.Dst, p.Proto, p.SrcPort, p.DstPort)
		if clear > 10 {
			t.FailNow()
		}
	}
	t.Logf("capture: %d frames, %d UDP/4500 ESP datagrams, SPIs seen %v", len(frames), esp4500, spis)
	if spis[lp.spiAB] == 0 || spis[lp.spiBA] == 0 {
		t.Fatalf("ESP with SPI %#x (A→B) and %#x (B→A) not both seen", lp.spiAB, lp.spiBA)
	}
}

// capturedIP returns a copy of a possibly snap-length-truncated IP packet
// whose length field says what was captured, so that it parses.
func capturedIP(ip []byte) []byte {
	c := append([]byte(nil), ip...)
	switch {
	case ipview.Version(c) == 4 && len(c) >= 20:
		binary.BigEndian.PutUint16(c[2:], uint16(len(c)))
	case ipview.Version(c) == 6 && len(c) >= 40:
		binary.BigEndian.PutUint16(c[4:], uint16(len(c)-40))
	}
	return c
}

func headerLen(ip []byte) int {
	if ipview.Version(ip) == 6 {
		return 40
	}
	return int(ip[0]&0x0f) * 4
}

// iperf runs an iperf3 TCP client for secs seconds and returns Gbit/s.
func iperf(t *testing.T, ns *lab.Netns, server string, secs int) float64 {
	t.Helper()
	out, err := ns.Try("iperf3", "-c", server, "-t", fmt.Sprint(secs), "-J")
	if err != nil {
		t.Fatalf("iperf3 -c %s: %v\n%s", server, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		t.Fatalf("iperf3 moved no data:\n%s", out)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// TestLabCrashRecovery kills A with SIGKILL in the middle of a TCP transfer
// to B. The kernel removes A's TUN device and its routes; before the fix
// the rule "not fwmark … lookup TABLE" then found an empty table, and the
// transfer's retransmissions and new pings left by the main table in the
// clear (B's kernel even took them). Now the prohibit routes behind the
// device's routes refuse them: the capture on B's side must hold no
// protected packet in the clear. Then A starts again (the killed run's
// rule and routes are replaced, not added to), traffic is encrypted again,
// and a clean shutdown leaves no rule and no route in oevpn's tables.
func TestLabCrashRecovery(t *testing.T) {
	lab.Require(t, "ping", "tcpdump")
	lp := newLabPair(t, esp.ChaCha20Poly1305)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := labB4 + ":5301"
	sink := lp.b.Start("env", "OEVPN_LAB_HELPER=sink "+addr, self)
	defer sink.Signal(syscall.SIGKILL)
	if err := sink.WaitFor("listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	stop := tcpdump(t, lp.b, lp.vethB, "ip or ip6")
	source := lp.a.Start("env", "OEVPN_LAB_HELPER=source "+addr+" 8", self)
	defer source.Signal(syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond)
	lp.procA.Signal(syscall.SIGKILL)
	lp.procA.Wait(10 * time.Second)
	// The transfer retransmits and goes on trying; new traffic starts.
	// (Whether the pings are answered says nothing: B's replies go into
	// B's tunnel. The capture is what counts.)
	lp.a.Try("ping", "-c", "3", "-i", "0.3", "-W", "1", labB4)
	lp.a.Try("ping", "-6", "-c", "3", "-i", "0.3", "-W", "1", labB6)
	time.Sleep(2 * time.Second)
	if n, octets := clearProtected(t, stop(), lp); n > 0 {
		t.Errorf("%d protected packets (%d octets of TCP payload) left in the clear after kill -9", n, octets)
	}
	if rules := lp.a.Run("ip", "rule"); !strings.Contains(rules, "0x4f45") {
		t.Errorf("the killed run's rule is gone:\n%s", rules)
	}
	if routes := lp.a.Run("ip", "route", "show", "table", "20293"); !strings.Contains(routes, "prohibit "+labB4) {
		t.Errorf("no prohibit route for %s in the killed run's table:\n%s", labB4, routes)
	}
	source.Signal(syscall.SIGKILL)

	// A restart that fails while it sets up its routes (here: a source
	// address the host does not have) leaves the block in place.
	cfg, err := os.ReadFile(lp.cfgA)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(filepath.Dir(lp.cfgA), "bad.toml")
	os.WriteFile(bad, []byte(strings.Replace(string(cfg), fmt.Sprintf("local = [%q]", labA4), `local = ["10.201.0.9"]`, 1)), 0o600)
	if out, err := lp.a.Try(oevpnBinary(t), "up", "-c", bad); err == nil || !strings.Contains(out, "routing") {
		t.Errorf("oevpn up with a source address the host lacks: %v\n%s", err, out)
	}
	// (Not a ping, as above.)
	if out, err := lp.a.Try("ip", "route", "get", labB4); err == nil {
		t.Errorf("the kernel routes to the protected peer after a failed restart:\n%s\n%s", out, lp.a.Run("ip", "route", "show", "table", "20293"))
	}

	lp.procA = lp.a.Start(oevpnBinary(t), "up", "-c", lp.cfgA)
	if err := lp.procA.WaitFor("endpoint up", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// IPv4: the SA's remote and the blocked prefix; IPv6: the SA's.
	for f, want := range map[string]int{"-4": 2, "-6": 1} {
		if n := strings.Count(lp.a.Run("ip", f, "rule"), "0x4f45"); n != 1 {
			t.Errorf("%d %s rules after restart, want 1:\n%s", n, f, lp.a.Run("ip", f, "rule"))
		}
		if routes := lp.a.Run("ip", f, "route", "show", "table", "20293"); strings.Count(routes, "prohibit") != want {
			t.Errorf("%s prohibit routes after restart, want %d:\n%s", f, want, routes)
		}
	}
	stop = tcpdump(t, lp.b, lp.vethB, "ip or ip6")
	lp.a.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", labB4)
	lp.b.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", labA4)
	checkCapture(t, stop(), lp)
	if out, err := lp.a.Try(oevpnBinary(t), "cleanup", "-c", lp.cfgA); err == nil || !strings.Contains(out, "already running") {
		t.Errorf("oevpn cleanup while oevpn runs: %v\n%s", err, out)
	}
	lp.stop(t)
	noRouting(t, lp.a, "after a clean shutdown")

	// Killed again, for good this time: oevpn cleanup lifts the block.
	lp.procA = lp.a.Start(oevpnBinary(t), "up", "-c", lp.cfgA)
	if err := lp.procA.WaitFor("endpoint up", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	lp.procA.Signal(syscall.SIGKILL)
	lp.procA.Wait(10 * time.Second)
	t.Logf("oevpn cleanup: %s", lp.a.Run(oevpnBinary(t), "cleanup", "-c", lp.cfgA))
	noRouting(t, lp.a, "after oevpn cleanup")
}

// noRouting fails the test if ns has an oevpn rule or a route in oevpn's
// tables.
func noRouting(t *testing.T, ns *lab.Netns, when string) {
	t.Helper()
	for _, f := range []string{"-4", "-6"} {
		if rules := ns.Run("ip", f, "rule"); strings.Contains(rules, "0x4f45") {
			t.Errorf("rule left %s:\n%s", when, rules)
		}
		for _, table := range []string{"20293", "20294"} {
			routes, err := ns.Try("ip", f, "route", "show", "table", table)
			if err != nil && strings.Contains(routes, "does not exist") {
				routes = "" // the kernel never had it, or dropped it empty
			}
			if strings.TrimSpace(routes) != "" {
				t.Errorf("routes left in table %s %s:\n%s", table, when, routes)
			}
		}
	}
}

// clearProtected counts the packets between A and B in the capture at path
// that are neither ESP on UDP/4500 nor ICMP errors (B's ESP to the dead A
// draws port unreachables) nor IPv6 neighbour discovery, and the TCP
// payload among them.
func clearProtected(t *testing.T, path string, lp *labPair) (n, tcpOctets int) {
	t.Helper()
	_, frames := readFrames(t, path)
	for _, f := range frames {
		ip := f.IPPayload()
		if ip == nil {
			continue
		}
		p, err := ipview.Parse(capturedIP(ip))
		if err != nil {
			continue
		}
		switch {
		case p.Dst.IsLinkLocalMulticast() || p.Src.IsLinkLocalUnicast():
			continue
		case p.Proto == ipview.ProtoICMPv6 && (p.SrcPort>>8 < 128 || (p.SrcPort>>8 >= 133 && p.SrcPort>>8 <= 137)):
			continue // errors, neighbour discovery
		case p.Proto == ipview.ProtoICMP && p.SrcPort>>8 == 3:
			continue // destination unreachable
		case p.Proto == ipview.ProtoUDP && p.SrcPort == 4500 && p.DstPort == 4500:
			continue
		}
		n++
		if p.Proto == ipview.ProtoTCP && ipview.Version(ip) == 4 && len(ip) >= headerLen(ip)+13 {
			hl := headerLen(ip)
			tcpOctets += int(binary.BigEndian.Uint16(ip[2:])) - hl - int(ip[hl+12]>>4)*4
		}
		if n <= 5 {
			t.Logf("in the clear: %v → %v proto %d ports %d→%d", p.Src, p.Dst, p.Proto, p.SrcPort, p.DstPort)
		}
	}
	t.Logf("capture: %d frames, %d protected packets in the clear", len(frames), n)
	return n, tcpOctets
}

// TestLabBench measures single-stream TCP through the tunnel and over the
// bare veth (iperf3, 10 s, 3 runs each, median). It runs only from
// `make bench` (OEVPN_BENCH=1).
func TestLabBench(t *testing.T) {
	if os.Getenv("OEVPN_BENCH") == "" {
		t.Skip("set OEVPN_BENCH=1 (make bench) to run the throughput benchmark")
	}
	lab.Require(t, "iperf3")
	lp := newLabPair(t, esp.AESGCM128)
	run := func(server string) float64 {
		var r []float64
		for i := 0; i < 3; i++ {
			srv := lp.b.Start("iperf3", "-s", "-1", "--forceflush", "-B", server)
			if err := srv.WaitFor("Server listening", 10*time.Second); err != nil {
				t.Fatal(err)
			}
			r = append(r, iperf(t, lp.a, server, 10))
			srv.Wait(10 * time.Second)
		}
		sort.Float64s(r)
		t.Logf("%s: runs %.2f %.2f %.2f Gbit/s", server, r[0], r[1], r[2])
		return r[1]
	}
	tunnel := run(labB4)
	bare := run(bareB4)
	fmt.Printf("\nlab throughput (iperf3, single TCP stream, 10 s, median of 3):\n")
	fmt.Printf("  oevpn tunnel (aes-gcm-128, TUN, UDP/4500): %6.2f Gbit/s\n", tunnel)
	fmt.Printf("  bare veth                                : %6.2f Gbit/s\n\n", bare)
	lp.stop(t)
}

// TestLabSecondInstance starts a second `oevpn up` with A's configuration
// while A runs. Before the fix the second removed A's routing rule as
// stale, failed on the busy TUN and left A running with its traffic to B
// leaving in the clear, while `oevpn check` still said encrypted. The
// second must refuse before touching anything; A's traffic must stay
// encrypted on the wire and check must agree. Then the test removes A's
// rule by hand: check must no longer claim the traffic is protected.
func TestLabSecondInstance(t *testing.T) {
	lab.Require(t, "tcpdump", "ping")
	lp := newLabPair(t, esp.AESGCM256)
	rulesBefore := lp.a.Run("ip", "rule")

	second := lp.a.Start(oevpnBinary(t), "up", "-c", lp.cfgA)
	if err := second.Wait(10 * time.Second); err == nil {
		t.Fatalf("a second oevpn up with the same configuration succeeded:\n%s", second.Output())
	}
	want := fmt.Sprintf("(pid %d)", lp.procA.Cmd.Process.Pid)
	if out := second.Output(); !strings.Contains(out, "is already running for") || !strings.Contains(out, want) {
		t.Errorf("second instance's error does not say who runs: want %q in\n%s", want, out)
	}
	if rules := lp.a.Run("ip", "rule"); rules != rulesBefore {
		t.Errorf("the second instance changed the routing rules:\nbefore\n%s\nafter\n%s", rulesBefore, rules)
	}
	// Another configuration (another device and control socket) with the
	// same routing table: it must not take A's rules for a dead run's.
	cfg, err := os.ReadFile(lp.cfgA)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(filepath.Dir(lp.cfgA), "other.toml")
	cfg = []byte(strings.Replace(string(cfg), "[interface]\n", fmt.Sprintf("[interface]\ncontrol = %q\n", filepath.Join(t.TempDir(), "ctl", "o.sock")), 1))
	cfg = regexp.MustCompile(`(?m)^name = ".*"$`).ReplaceAll(cfg, []byte(`name = "`+lab.Unique("to")+`"`))
	os.WriteFile(other, cfg, 0o600)
	third := lp.a.Start(oevpnBinary(t), "up", "-c", other)
	if err := third.Wait(10 * time.Second); err == nil || !strings.Contains(third.Output(), "routing table 20293") {
		t.Errorf("an instance with another device and the same table: %v\n%s", err, third.Output())
	}
	if rules := lp.a.Run("ip", "rule"); rules != rulesBefore {
		t.Errorf("an instance with the same table changed the routing rules:\nbefore\n%s\nafter\n%s", rulesBefore, rules)
	}

	stop := tcpdump(t, lp.b, lp.vethB, "ip or ip6")
	lp.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", labB4)
	lp.b.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", labA4)
	checkCapture(t, stop(), lp)
	check := func(addr string) string {
		out, _ := exec.Command(oevpnBinary(t), "check", "-c", lp.cfgA, addr).CombinedOutput()
		return string(out)
	}
	if out := check(labB4); !strings.Contains(out, labB4+": encrypted-and-authenticated") {
		t.Errorf("oevpn check %s after the second start: %s", labB4, out)
	}

	// Take A's rule away behind its back: traffic to B now leaves in the
	// clear, and check must say so.
	prio := ruleLine(t, lp.a, "-4")
	lp.a.Run("ip", "-4", "rule", "del", "priority", prio)
	if out := check(labB4); !strings.HasPrefix(out, labB4+": clear: not protected") {
		t.Errorf("oevpn check %s with the routing rule gone: %s", labB4, out)
	}
	lp.a.Run("ip", "-4", "rule", "add", "not", "fwmark", "0x4f45", "table", "20293", "priority", prio)
	if out := check(labB4); !strings.Contains(out, labB4+": encrypted-and-authenticated") {
		t.Errorf("oevpn check %s with the rule back: %s", labB4, out)
	}
	lp.stop(t)
}

// ruleLine returns the priority of oevpn's "not fwmark" rule in ns.
func ruleLine(t *testing.T, ns *lab.Netns, family string) string {
	t.Helper()
	for _, l := range strings.Split(ns.Run("ip", family, "rule"), "\n") {
		if strings.Contains(l, "not from all fwmark 0x4f45") {
			return strings.TrimSuffix(strings.Fields(l)[0], ":")
		}
	}
	t.Fatalf("no oevpn rule in\n%s", ns.Run("ip", family, "rule"))
	return ""
}

// controlLab runs an endpoint (netstack, in a namespace) whose control
// socket is in a directory every user can reach, with extra lines in
// [interface]; it returns the binary, the socket and a function that runs
// oevpn as another user and group.
func controlLab(t *testing.T, extra string) (bin, sock string, as func(uid int, args ...string) (string, error)) {
	t.Helper()
	bin = oevpnBinary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	base, err := os.MkdirTemp("", "oevpn-ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	sock = filepath.Join(base, "ctl", "oevpn.sock")
	cfg := filepath.Join(base, "a.toml")
	os.WriteFile(cfg, fmt.Appendf(nil, "[interface]\nmode = \"netstack\"\naddresses = [\"10.9.0.1/24\"]\ncontrol = %q\n%s\n\n[policy]\nblock = [\"10.66.0.0/16\"]\n", sock, extra), 0o644)
	ns := lab.NewNetns(t)
	p := ns.Start(bin, "up", "-c", cfg)
	if err := p.WaitFor("endpoint up", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A second instance with the same configuration stops at the lock.
		second := ns.Start(bin, "up", "-c", cfg)
		if err := second.Wait(10 * time.Second); err == nil || !strings.Contains(second.Output(), "oevpn is already running for oevpn0 (pid") {
			t.Errorf("second instance: %v\n%s", err, second.Output())
		}
		p.Signal(syscall.SIGTERM)
		if err := p.Wait(10 * time.Second); err != nil {
			t.Errorf("oevpn did not exit cleanly: %v\n%s", err, p.Output())
		}
	})
	as = func(uid int, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	return bin, sock, as
}

func checkModes(t *testing.T, want map[string]string) {
	t.Helper()
	for path, w := range want {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := fmt.Sprintf("%04o %d", fi.Mode().Perm(), st.Gid); got != w {
			t.Errorf("%s: mode and group %s, want %s", path, got, w)
		}
	}
}

// TestLabControlSocketCredentials calls an endpoint's control socket as
// another user (uid 65534). With the modes oevpn sets (socket 0600 in a
// directory 0700) that user cannot connect at all; with both opened up by
// hand (socket 0666, directory 0755) it may read the status but not change
// state (down): the credentials decide, not only the mode. Root may.
func TestLabControlSocketCredentials(t *testing.T) {
	lab.Require(t)
	_, sock, as := controlLab(t, "")
	dir := filepath.Dir(sock)
	checkModes(t, map[string]string{dir: "0700 0", sock: "0600 0"})
	status := func(uid int) (string, error) { return as(uid, "status", "-s", sock) }
	down := func(uid int) (string, error) { return as(uid, "down", "-s", sock, "somepeer") }
	if out, err := status(65534); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("status as uid 65534 with the socket as oevpn made it: %v\n%s", err, out)
	}
	if out, err := down(65534); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("down as uid 65534 with the socket as oevpn made it: %v\n%s", err, out)
	}
	os.Chmod(dir, 0o755)
	os.Chmod(sock, 0o666)
	if out, err := status(65534); err != nil || !strings.Contains(out, "netstack") {
		t.Errorf("status as uid 65534 on an opened-up socket: %v\n%s", err, out)
	}
	if out, err := down(65534); err == nil || !strings.Contains(out, "refused: uid 65534 may not change oevpn's state") {
		t.Errorf("down as uid 65534 on an opened-up socket: %v\n%s", err, out)
	}
	if out, err := down(0); err == nil || !strings.Contains(out, "no IKE peers configured") {
		t.Errorf("down as root: %v\n%s", err, out)
	}
}

// TestLabControlGroup gives the control socket to a group (nogroup, 65534):
// its members may use it, state changes included; others cannot connect,
// and with the modes opened up by hand still may not change state.
func TestLabControlGroup(t *testing.T) {
	lab.Require(t)
	if _, err := user.LookupGroupId("65534"); err != nil {
		t.Skip("no group 65534 on this host")
	}
	_, sock, as := controlLab(t, `control_group = "65534"`)
	dir := filepath.Dir(sock)
	checkModes(t, map[string]string{dir: "0750 65534", sock: "0660 65534"})
	if out, err := as(65534, "status", "-s", sock); err != nil || !strings.Contains(out, "netstack") {
		t.Errorf("status as a member: %v\n%s", err, out)
	}
	if out, err := as(65534, "down", "-s", sock, "somepeer"); err == nil || !strings.Contains(out, "no IKE peers configured") {
		t.Errorf("down as a member: %v\n%s", err, out)
	}
	if out, err := as(65533, "status", "-s", sock); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("status as another user: %v\n%s", err, out)
	}
	os.Chmod(dir, 0o755)
	os.Chmod(sock, 0o666)
	if out, err := as(65533, "down", "-s", sock, "somepeer"); err == nil || !strings.Contains(out, "refused: uid 65533 may not change oevpn's state") {
		t.Errorf("down as another user on an opened-up socket: %v\n%s", err, out)
	}
}

// TestLabStaticSARestart performs the nonce-reuse attack on static SAs: A
// sends under its static AES-GCM key, crashes (SIGKILL, no orderly
// shutdown), starts again with the same configuration and sends again. On
// the wire no (SPI, IV) of A's may appear twice: with the IV the sequence
// number, restarting at 1 under the same key gave the XOR of two
// plaintexts. And B, which did not restart, must still accept every one of
// A's packets (its replay window drops numbers that start over).
func TestLabStaticSARestart(t *testing.T) {
	lab.Require(t, "tcpdump", "ping")
	lp := newLabPair(t, esp.AESGCM256)
	stop := tcpdump(t, lp.b, lp.vethB, "udp port 4500")
	lp.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", labB4)
	lp.procA.Signal(syscall.SIGKILL)
	lp.procA.Wait(10 * time.Second)
	lp.procA = lp.a.Start(oevpnBinary(t), "up", "-c", lp.cfgA)
	if err := lp.procA.WaitFor("endpoint up", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	pingOut, pingErr := lp.a.Try("ping", "-c", "3", "-i", "0.2", "-W", "2", labB4)
	_, frames := readFrames(t, stop())
	seen := map[[8]byte]int{}
	n := 0
	for _, f := range frames {
		ip := f.IPPayload()
		if ip == nil || len(ip) < headerLen(ip)+8+16 {
			continue
		}
		l4 := ip[headerLen(ip)+8:]
		if kind, _ := esp.Classify(l4); kind != esp.KindESP || esp.Header(l4).SPI() != lp.spiAB {
			continue
		}
		iv := [8]byte(l4[8:16])
		seen[iv]++
		n++
		if seen[iv] == 2 {
			t.Errorf("A reused IV %x (sequence number %d) under SPI %#x and the same key", iv, esp.Header(l4).Seq(), lp.spiAB)
		}
	}
	if n != 6 {
		t.Errorf("%d ESP packets from A captured, want 6", n)
	}
	if st := oevpnStatus(t, lp.cfgB); st.Datapath.DecryptErrors != 0 || pingErr != nil {
		t.Errorf("B refused %d of A's packets after A's restart: %v\n%s", st.Datapath.DecryptErrors, pingErr, pingOut)
	}
	t.Logf("%d ESP packets from A, %d distinct IVs", n, len(seen))
	lp.stop(t)
}

// TestLabAutoVPNCrash kills an AutoVPN gateway with SIGKILL. Before the fix
// its rules "from/to 10.1.0.0/24 lookup TABLE+1" found an empty table once
// the kernel had removed the TUN device, and H1's traffic to H2 was
// forwarded in the clear whatever the trust store said. Now it is refused
// until the gateway runs again; a clean shutdown then leaves nothing.
func TestLabAutoVPNCrash(t *testing.T) {
	l := newAVLab(t)
	l.start(t)
	l.h1.Run("ping", "-c", "2", "-i", "0.3", "-W", "2", avH2)
	l.procG1.Signal(syscall.SIGKILL)
	l.procG1.Wait(10 * time.Second)

	stop := tcpdump(t, l.g2, l.wanG2, "ip")
	if out, err := l.h1.Try("ping", "-c", "3", "-i", "0.3", "-W", "1", avH2); err == nil {
		t.Errorf("H1 reached H2 with its gateway's oevpn dead:\n%s", out)
	}
	h1, h2 := netip.MustParseAddr(avH1), netip.MustParseAddr(avH2)
	n := 0
	for _, p := range readCapture(t, stop()) {
		if p.Src == h1 && p.Dst == h2 {
			n++
		}
	}
	if n > 0 {
		t.Errorf("%d packets from H1 to H2 left G1 in the clear after kill -9", n)
	}

	cfg, err := os.ReadFile(l.cfgG1)
	if err != nil {
		t.Fatal(err)
	}
	l.procG1 = runOevpn(t, l.g1, "g1", l.cfgG1, string(cfg))
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := l.h1.Try("ping", "-c", "1", "-W", "1", avH2); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("H1 does not reach H2 after G1's restart")
		}
	}
	l.stop(t)
	noRouting(t, l.g1, "after a clean shutdown")
}
