//go:build linux

package main

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/internal/lab"
)

// make bench-compare: oevpn beside wireguard-go and the bare link, in one
// namespace pair, measured the same way in interleaved rounds. It is a
// benchmark, not a test: it prints a table and fails only when it cannot
// measure.
const (
	bcOuterA, bcOuterB = "10.230.0.1", "10.230.0.2"
	bcInnerA, bcInnerB = "10.231.0.1", "10.231.0.2" // oevpn's
	bcWgA, bcWgB       = "10.232.0.1", "10.232.0.2" // wireguard-go's
	bcRelayA, bcRelayB = "10.233.0.1", "10.233.0.2" // the relay's
	bcSecs             = 10                         // seconds per iperf3 run
)

// bcTarget is one thing measured: an address in B reached from A, and the
// processes whose CPU time it costs.
type bcTarget struct {
	name  string
	addr  string
	procs []*lab.Proc
}

// bcStreams are the parallel iperf3 streams measured.
var bcStreams = []int{1, 2, 4}

// bcResult is a target's figures: Gbit/s with each of bcStreams (median of
// rounds), ping average in ms, CPU seconds per GB at 1 Gbit/s offered.
type bcResult struct {
	gbits    map[int][]float64 // by streams
	ping     float64
	cpuPerGB float64
}

func TestLabBenchCompare(t *testing.T) {
	if os.Getenv("OEVPN_BENCH_COMPARE") == "" {
		t.Skip("set OEVPN_BENCH_COMPARE=1 (make bench-compare) to run the side-by-side benchmark")
	}
	lab.Require(t, "iperf3", "ping", "ethtool")
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("OEVPN_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	for _, v := range []struct {
		name     string
		mtu      int
		offloads bool
	}{{"offloads on, MTU 1500", 1500, true}, {"TSO/GSO/GRO off, MTU 1500", 1500, false}, {"offloads on, MTU 9000", 9000, true}} {
		t.Run(v.name, func(t *testing.T) { benchCompare(t, v.name, v.mtu, v.offloads, rounds) })
	}
}

func benchCompare(t *testing.T, variant string, mtu int, offloads bool, rounds int) {
	a, b := lab.NewNetns(t), lab.NewNetns(t)
	vethA, vethB := lab.Veth(t, a, b)
	for _, x := range []struct {
		ns          *lab.Netns
		dev, outer  string
		inner, wgIP string
	}{{a, vethA, bcOuterA, bcInnerA, bcWgA}, {b, vethB, bcOuterB, bcInnerB, bcWgB}} {
		x.ns.Run("ip", "link", "set", x.dev, "mtu", strconv.Itoa(mtu))
		x.ns.Run("ip", "addr", "add", x.outer+"/24", "dev", x.dev)
		x.ns.Run("ip", "link", "set", "lo", "up")
		x.ns.Run("ip", "addr", "add", x.inner+"/32", "dev", "lo")
		if !offloads {
			x.ns.Run("ethtool", "-K", x.dev, "tso", "off", "gso", "off", "gro", "off")
		}
	}
	wgA, wgB := startWireGuardPair(t, a, b, mtu)
	startRelayPair(t, a, b, mtu)
	targets := []bcTarget{{name: "bare veth", addr: bcOuterB}, {name: "wireguard-go (chacha20-poly1305)", addr: bcWgB, procs: []*lab.Proc{wgA, wgB}},
		{name: bcRelay, addr: bcRelayB}}
	results := map[string]*bcResult{}
	measure := func(tg bcTarget) {
		r := results[tg.name]
		if r == nil {
			r = &bcResult{gbits: map[int][]float64{}}
			results[tg.name] = r
		}
		for _, n := range bcStreams {
			r.gbits[n] = append(r.gbits[n], bcIperf(t, a, b, tg.addr, n))
		}
	}
	// oevpn with each suite in turn, interleaved with the others.
	for _, suite := range []struct{ name, ike, esp string }{
		{"oevpn (aes-gcm-256, default)", "", ""},
		{"oevpn (chacha20-poly1305)", "chacha20poly1305-prfsha256-x25519", "chacha20poly1305"},
	} {
		dir := t.TempDir()
		pa := startBenchOevpn(t, a, dir, "a", bcOuterB, bcInnerA, bcInnerB, "start", suite.ike, suite.esp, mtu)
		pb := startBenchOevpn(t, b, dir, "b", bcOuterA, bcInnerB, bcInnerA, "none", suite.ike, suite.esp, mtu)
		a.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", bcInnerA, bcInnerB)
		ours := bcTarget{name: suite.name, addr: bcInnerB, procs: []*lab.Proc{pa, pb}}
		for range rounds {
			for _, tg := range append(targets[:3:3], ours) {
				measure(tg)
			}
		}
		results[ours.name].ping = bcPing(t, a, bcInnerA, bcInnerB)
		results[ours.name].cpuPerGB = bcCPUPerGB(t, a, b, bcInnerB, ours.procs)
		pa.Signal(15)
		pb.Signal(15)
		pa.Wait(10 * time.Second)
		pb.Wait(10 * time.Second)
		targets = append(targets, ours)
	}
	results["bare veth"].ping = bcPing(t, a, bcOuterA, bcOuterB)
	results["wireguard-go (chacha20-poly1305)"].ping = bcPing(t, a, bcWgA, bcWgB)
	results[bcRelay].ping = bcPing(t, a, bcRelayA, bcRelayB)
	results["wireguard-go (chacha20-poly1305)"].cpuPerGB = bcCPUPerGB(t, a, b, bcWgB, []*lab.Proc{wgA, wgB})

	wg := results["wireguard-go (chacha20-poly1305)"]
	fmt.Printf("\nbench-compare: %s; iperf3 %d s per run, median of %d interleaved rounds\n", variant, bcSecs, rounds)
	fmt.Printf("  %-34s %16s %16s %16s %10s %14s\n", "", "1 stream Gbit/s", "2 streams", "4 streams", "ping ms", "CPU s/GB @1G")
	for _, tg := range targets {
		r := results[tg.name]
		ratio := func(v, base float64) string {
			if base <= 0 || tg.name == "bare veth" || strings.HasPrefix(tg.name, "wireguard") {
				return ""
			}
			return fmt.Sprintf(" (%.2f×)", v/base)
		}
		cpu := "-"
		if r.cpuPerGB > 0 {
			cpu = fmt.Sprintf("%.2f%s", r.cpuPerGB, ratio(r.cpuPerGB, wg.cpuPerGB))
		}
		fmt.Printf("  %-34s", tg.name)
		for _, n := range bcStreams {
			v := median(r.gbits[n])
			fmt.Printf(" %16s", fmt.Sprintf("%.2f%s", v, ratio(v, median(wg.gbits[n]))))
		}
		fmt.Printf(" %10.3f %14s\n", r.ping, cpu)
	}
	fmt.Println("  (×: against wireguard-go in the same run)")
	relay := median(results[bcRelay].gbits[1])
	for _, tg := range targets[3:] {
		fmt.Printf("  %s, 1 stream: %.0f %% of the relay's\n", tg.name, 100*median(results[tg.name].gbits[1])/relay)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// bcIperf runs iperf3 from a to addr in b with n parallel streams and
// returns Gbit/s received.
func bcIperf(t *testing.T, a, b *lab.Netns, addr string, n int) float64 {
	t.Helper()
	srv := b.Start("iperf3", "-s", "-1", "--forceflush", "-B", addr)
	defer srv.Wait(10 * time.Second)
	if err := srv.WaitFor("Server listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out, err := a.Try("iperf3", "-c", addr, "-t", strconv.Itoa(bcSecs), "-P", strconv.Itoa(n), "-J")
	if err != nil {
		t.Fatalf("iperf3 -c %s -P %d: %v\n%s", addr, n, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// bcPing returns the average round trip of 50 pings, in ms.
func bcPing(t *testing.T, a *lab.Netns, from, to string) float64 {
	t.Helper()
	out := a.Run("ping", "-q", "-c", "50", "-i", "0.02", "-I", from, to)
	i := strings.Index(out, "= ")
	if i < 0 {
		t.Fatalf("ping output: %s", out)
	}
	f := strings.Split(out[i+2:], "/")
	v, _ := strconv.ParseFloat(f[1], 64)
	return v
}

// bcCPUPerGB offers 1 Gbit/s for bcSecs seconds and returns the CPU seconds
// the tunnel's processes (both ends) spent per GB received.
func bcCPUPerGB(t *testing.T, a, b *lab.Netns, addr string, procs []*lab.Proc) float64 {
	t.Helper()
	cpu := func() float64 {
		var s float64
		for _, p := range procs {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			// Fields after the command name, which is in parentheses.
			f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
			ut, _ := strconv.ParseFloat(f[11], 64)
			stime, _ := strconv.ParseFloat(f[12], 64)
			s += (ut + stime) / 100 // clock ticks
		}
		return s
	}
	srv := b.Start("iperf3", "-s", "-1", "--forceflush", "-B", addr)
	defer srv.Wait(10 * time.Second)
	if err := srv.WaitFor("Server listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	before := cpu()
	out, err := a.Try("iperf3", "-c", addr, "-t", strconv.Itoa(bcSecs), "-b", "1G", "-J")
	if err != nil {
		t.Fatalf("iperf3 -b 1G: %v\n%s", err, out)
	}
	used := cpu() - before
	var r struct {
		End struct {
			SumReceived struct {
				Bytes float64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	json.Unmarshal([]byte(out), &r)
	if r.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3 -b 1G moved nothing:\n%s", out)
	}
	return used / (r.End.SumReceived.Bytes / 1e9)
}

// startBenchOevpn runs oevpn in ns with one PSK peer and the given
// proposals ("" for the defaults).
func startBenchOevpn(t *testing.T, ns *lab.Netns, dir, name, peer, local, remote, start, ike, esp string, mtu int) *lab.Proc {
	t.Helper()
	props := ""
	if ike != "" {
		props = fmt.Sprintf("ike_proposals = %q\nesp_proposals = %q\n", ike, esp)
	}
	tunMTU := 1400
	if mtu > 1500 {
		tunMTU = mtu - 100
	}
	cfg := pskPeerConfig(peer, local, remote, local+"/32", remote+"/32", start, fmt.Sprintf("mtu = %d\n", tunMTU), props)
	return runOevpn(t, ns, name, filepath.Join(dir, name+".toml"), cfg)
}

// startWireGuardPair runs wireguard-go (this test binary as its host, see
// wgHelper) at both ends, with its defaults.
func startWireGuardPair(t *testing.T, a, b *lab.Netns, mtu int) (*lab.Proc, *lab.Proc) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	keyA, _ := ecdh.X25519().GenerateKey(rand.Reader)
	keyB, _ := ecdh.X25519().GenerateKey(rand.Reader)
	wgMTU := mtu - 80
	start := func(ns *lab.Netns, dev string, own *ecdh.PrivateKey, peer *ecdh.PublicKey, endpoint, addr, peerAddr string) *lab.Proc {
		p := ns.Start("env", fmt.Sprintf("OEVPN_LAB_HELPER=wireguard %s %d %s %s %s %s/32", dev, wgMTU,
			hex.EncodeToString(own.Bytes()), hex.EncodeToString(peer.Bytes()), endpoint, peerAddr), self)
		if err := p.WaitFor("up", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		ns.Run("ip", "addr", "add", addr+"/32", "peer", peerAddr+"/32", "dev", dev)
		ns.Run("ip", "link", "set", dev, "up")
		return p
	}
	devA, devB := lab.Unique("wa"), lab.Unique("wb")
	pa := start(a, devA, keyA, keyB.PublicKey(), bcOuterB+":51820", bcWgA, bcWgB)
	pb := start(b, devB, keyB, keyA.PublicKey(), bcOuterA+":51820", bcWgB, bcWgA)
	a.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", bcWgB)
	return pa, pb
}

// bcRelay is the relay's row: the ceiling of this design on this machine.
const bcRelay = "TUN relay (no crypto)"

// startRelayPair runs relayHelper at both ends.
func startRelayPair(t *testing.T, a, b *lab.Netns, mtu int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tunMTU := 1400
	if mtu > 1500 {
		tunMTU = mtu - 100
	}
	start := func(ns *lab.Netns, dev, endpoint, addr, peerAddr string) {
		p := ns.Start("env", fmt.Sprintf("OEVPN_LAB_HELPER=relay %s %d 51830 %s", dev, tunMTU, endpoint), self)
		if err := p.WaitFor("up", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		ns.Run("ip", "addr", "add", addr+"/32", "peer", peerAddr+"/32", "dev", dev)
		ns.Run("ip", "link", "set", dev, "up")
	}
	start(a, lab.Unique("ra"), bcOuterB+":51830", bcRelayA, bcRelayB)
	start(b, lab.Unique("rb"), bcOuterA+":51830", bcRelayB, bcRelayA)
	a.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", bcRelayB)
}

// relayHelper is the ceiling of this design on this machine, as issue 15
// measured it: a TUN relay with wireguard-go's batching and offloads (its
// tun and conn packages, as oevpn's datapath uses them) but no crypto and
// no encapsulation. Each IP packet read from the TUN leaves as one UDP
// datagram to the peer (a batch as one sendmmsg with UDP GSO), and each
// datagram received is written to the TUN (coalesced by wireguard-go's
// TUN). args are the device name, its MTU, the UDP port and the peer's
// endpoint; it runs until killed.
func relayHelper(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("relay: want DEV MTU PORT ENDPOINT, got %q", args)
	}
	mtu, _ := strconv.Atoi(args[1])
	port, _ := strconv.Atoi(args[2])
	dev, err := tun.CreateTUN(args[0], mtu)
	if err != nil {
		return err
	}
	bind := conn.NewDefaultBind()
	fns, _, err := bind.Open(uint16(port))
	if err != nil {
		return err
	}
	ep, err := bind.ParseEndpoint(args[3])
	if err != nil {
		return err
	}
	const offset = 16 // room for the virtio-net header the TUN writes take
	buffers := func(n int) [][]byte {
		bufs := make([][]byte, n)
		for i := range bufs {
			bufs[i] = make([]byte, offset+65535)
		}
		return bufs
	}
	for _, fn := range fns {
		go func() {
			n := bind.BatchSize()
			bufs, pkts := buffers(n), make([][]byte, n)
			for i := range pkts {
				pkts[i] = bufs[i][offset:]
			}
			sizes, eps, write := make([]int, n), make([]conn.Endpoint, n), make([][]byte, 0, n)
			for {
				k, err := fn(pkts, sizes, eps)
				if err != nil {
					return
				}
				for i := range k {
					write = append(write, bufs[i][:offset+sizes[i]])
				}
				dev.Write(write, offset)
				write = write[:0]
			}
		}()
	}
	fmt.Println("up")
	n := dev.BatchSize()
	bufs, sizes, send := buffers(n), make([]int, n), make([][]byte, 0, n)
	for {
		k, err := dev.Read(bufs, sizes, offset)
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			return err
		}
		for i := range k {
			send = append(send, bufs[i][offset:offset+sizes[i]])
		}
		bind.Send(send, ep)
		send = send[:0]
	}
}

// wgHelper runs wireguard-go's device on a new TUN with one peer, as its
// own command-line tool would, until killed: args are the device name,
// MTU, our private key and the peer's public key (hex), the peer's
// endpoint and its allowed IPs.
func wgHelper(args []string) error {
	if len(args) != 6 {
		return fmt.Errorf("wireguard: want DEV MTU PRIV PEERPUB ENDPOINT ALLOWED, got %q", args)
	}
	mtu, _ := strconv.Atoi(args[1])
	dev, err := tun.CreateTUN(args[0], mtu)
	if err != nil {
		return err
	}
	d := device.NewDevice(dev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wireguard-go: "))
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=51820\npublic_key=%s\nendpoint=%s\nallowed_ip=%s\npersistent_keepalive_interval=0\n",
		args[2], args[3], args[4], args[5])
	if err := d.IpcSet(cfg); err != nil {
		return err
	}
	if err := d.Up(); err != nil {
		return err
	}
	fmt.Println("up")
	<-d.Wait()
	return nil
}
