//go:build linux

package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/internal/lab"
)

// The AutoVPN lab: H1 — G1 — G2 — H2, each a namespace. G1 and G2 run
// oevpn in gateway mode for 10.1.0.0/24 and 10.2.0.0/24; the hosts know
// nothing about it.
const (
	avH1, avG1lan, avG1, avG2, avG2lan, avH2 = "10.1.0.2", "10.1.0.1", "192.0.2.1", "192.0.2.2", "10.2.0.1", "10.2.0.2"
)

type avLab struct {
	h1, g1, g2, h2   *lab.Netns
	wanG1, wanG2     string // the G1–G2 veth ends
	dir              string
	cfgG1, cfgG2     string
	procG1, procG2   *lab.Proc
	storeG1, storeG2 string
}

func newAVLab(t *testing.T) *avLab {
	t.Helper()
	lab.Require(t, "tcpdump", "ping")
	l := &avLab{h1: lab.NewNetns(t), g1: lab.NewNetns(t), g2: lab.NewNetns(t), h2: lab.NewNetns(t), dir: t.TempDir()}
	h1, g1lan := lab.Veth(t, l.h1, l.g1)
	l.wanG1, l.wanG2 = lab.Veth(t, l.g1, l.g2)
	g2lan, h2 := lab.Veth(t, l.g2, l.h2)
	l.h1.Run("ip", "addr", "add", avH1+"/24", "dev", h1)
	l.h1.Run("ip", "route", "add", "default", "via", avG1lan)
	l.g1.Run("ip", "addr", "add", avG1lan+"/24", "dev", g1lan)
	l.g1.Run("ip", "addr", "add", avG1+"/24", "dev", l.wanG1)
	l.g1.Run("ip", "route", "add", "10.2.0.0/24", "via", avG2)
	l.g2.Run("ip", "addr", "add", avG2+"/24", "dev", l.wanG2)
	l.g2.Run("ip", "addr", "add", avG2lan+"/24", "dev", g2lan)
	l.g2.Run("ip", "route", "add", "10.1.0.0/24", "via", avG1)
	l.h2.Run("ip", "addr", "add", avH2+"/24", "dev", h2)
	l.h2.Run("ip", "route", "add", "default", "via", avG2lan)
	for _, g := range []*lab.Netns{l.g1, l.g2} {
		g.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	}
	// Without oevpn the hosts talk in the clear.
	l.h1.Run("ping", "-c", "1", "-W", "2", avH2)
	for _, g := range []string{"g1", "g2"} {
		out, err := exec.Command(oevpnBinary(t), "keygen", "-t", "ecdsa", "-o", filepath.Join(l.dir, g+".key"),
			"-cert", "CN="+g+".autovpn.test, O=AutoVPN lab", "-cert-out", filepath.Join(l.dir, g+".crt")).CombinedOutput()
		if err != nil {
			t.Fatalf("keygen: %v\n%s", err, out)
		}
	}
	l.storeG1, l.storeG2 = filepath.Join(l.dir, "g1.trust"), filepath.Join(l.dir, "g2.trust")
	return l
}

func (l *avLab) startGateway(t *testing.T, ns *lab.Netns, name, protected, extra string) (*lab.Proc, string) {
	t.Helper()
	cfg := fmt.Sprintf(`[interface]
name = %q
log_level = "debug"
control = %q
[autovpn]
protected = [%q]
certificate = %q
private_key = %q
trust_store = %q
contact = "%s of the AutoVPN lab; fingerprint on request"
%s
`, lab.Unique("av"), filepath.Join(l.dir, name+".sock"), protected, filepath.Join(l.dir, name+".crt"), filepath.Join(l.dir, name+".key"),
		filepath.Join(l.dir, name+".trust"), name, extra)
	path := filepath.Join(l.dir, name+".toml")
	return runOevpn(t, ns, name, path, cfg), path
}

func (l *avLab) start(t *testing.T) {
	t.Helper()
	l.procG1, l.cfgG1 = l.startGateway(t, l.g1, "g1", "10.1.0.0/24", "")
	l.procG2, l.cfgG2 = l.startGateway(t, l.g2, "g2", "10.2.0.0/24", "")
}

func (l *avLab) stop(t *testing.T) {
	for _, p := range []*lab.Proc{l.procG1, l.procG2} {
		p.Signal(syscall.SIGTERM)
		if err := p.Wait(10 * time.Second); err != nil {
			t.Errorf("oevpn exit: %v", err)
		}
	}
}

// switchover reads a capture of the G1–G2 link and returns when the
// flow's first clear packet and the first ESP packet passed, and how many
// clear packets of the flow a side sent after its own first ESP packet
// (the two sides switch about a round trip apart).
func switchover(t *testing.T, pcap string) (firstClear, firstESP time.Time, clearAfter int) {
	t.Helper()
	h1, h2 := netip.MustParseAddr(avH1), netip.MustParseAddr(avH2)
	gatewayOf := map[netip.Addr]netip.Addr{h1: netip.MustParseAddr(avG1), h2: netip.MustParseAddr(avG2)}
	espFrom := map[netip.Addr]bool{}
	for _, p := range readCapture(t, pcap) {
		switch {
		case p.Proto == ipview.ProtoTCP && (p.Src == h1 && p.Dst == h2 || p.Src == h2 && p.Dst == h1):
			if firstClear.IsZero() {
				firstClear = p.Time
			}
			if espFrom[gatewayOf[p.Src]] {
				clearAfter++
			}
		case p.ESP:
			espFrom[p.Src] = true
			if firstESP.IsZero() {
				firstESP = p.Time
			}
		}
	}
	return
}

// TestLabAutoVPNGateways: a TCP connection H1 → H2 starts in the clear;
// G2 sees H2's reply and probes, G1 answers, IKE comes up with
// self-signed certificates, and the rest of that very connection travels
// in ESP: the transfer arrives intact.
func TestLabAutoVPNGateways(t *testing.T) {
	l := newAVLab(t)
	l.start(t)
	stop := l.captureWAN(t)
	hashedTransfer(t, l.h1, l.h2, avH2+":7100", 2)
	firstClear, firstESP, clearAfter := switchover(t, stop())
	if firstClear.IsZero() || firstESP.IsZero() {
		t.Fatalf("the capture lacks the clear start (%v) or ESP (%v)", firstClear, firstESP)
	}
	t.Logf("first clear packet to first ESP packet: %v; clear packets after the switch: %d", firstESP.Sub(firstClear), clearAfter)
	if clearAfter > 10 {
		t.Errorf("%d clear packets of the connection after ESP started", clearAfter)
	}
	// Ping goes through the SA now.
	l.h1.Run("ping", "-c", "2", "-W", "2", avH2)
	st := oevpnStatus(t, l.cfgG1)
	if len(st.IKESAs) == 0 || len(st.IKESAs[0].Children) == 0 {
		t.Fatalf("G1 has no Child SA: %+v", st)
	}
	if c := st.IKESAs[0].Children[0]; c.Local != "["+avH1+"]" || c.Remote != "["+avH2+"]" {
		t.Errorf("the Child SA is not for exactly the two hosts: %s === %s", c.Local, c.Remote)
	}
	// Both trust stores know the other gateway, unverified, with its
	// contact details and a shared secret.
	out, err := exec.Command(oevpnBinary(t), "peers", "-c", l.cfgG1).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "unverified") || !strings.Contains(string(out), "g2.autovpn.test") ||
		!strings.Contains(string(out), "g2 of the AutoVPN lab") || !strings.Contains(string(out), "yes") {
		t.Errorf("oevpn peers on G1 (%v):\n%s", err, out)
	}
	waitUntil(t, 5*time.Second, "G2's store to hold G1 with a shared secret", func() bool {
		out, _ := exec.Command(oevpnBinary(t), "peers", "-c", l.cfgG2, "--json").CombinedOutput()
		return strings.Contains(string(out), "g1.autovpn.test") && strings.Contains(string(out), `"shared_secret":true`)
	})
	l.stop(t)
}

// captureWAN captures the G1–G2 link until the returned function stops
// it, which returns the file.
func (l *avLab) captureWAN(t *testing.T) func() string {
	t.Helper()
	return tcpdump(t, l.g1, l.wanG1, "ip")
}

// TestLabAutoVPNSwitchTime measures, 20 times with fresh gateways (the
// trust stores persist), the time from a connection's first clear packet
// on the G1–G2 link to the first ESP packet; and checks the 24-hour probe
// limit within one run.
func TestLabAutoVPNSwitchTime(t *testing.T) {
	l := newAVLab(t)
	var times []time.Duration
	misses := 0
	for i := 0; i < 20; i++ {
		l.start(t)
		stop := l.captureWAN(t)
		hashedTransfer(t, l.h1, l.h2, fmt.Sprintf("%s:%d", avH2, 7200+i), 0.3)
		first, esp, _ := switchover(t, stop())
		if first.IsZero() || esp.IsZero() {
			// Seen once under heavy load: the capture missed the
			// start. One such run is tolerated, not two.
			t.Logf("run %d: clear start seen %v, ESP seen %v", i, !first.IsZero(), !esp.IsZero())
			if misses++; misses > 1 {
				t.Fatalf("run %d: no switch to ESP seen, twice", i)
			}
			l.stop(t)
			os.Remove(l.storeG1)
			os.Remove(l.storeG2)
			i--
			continue
		}
		times = append(times, esp.Sub(first))
		if i == 19 {
			// The same peer is not probed again within 24 hours: drop the
			// SAs and open another connection.
			exec.Command(oevpnBinary(t), "down", "-c", l.cfgG1, "av-out-"+avG2+"-"+avH2).Run()
			time.Sleep(300 * time.Millisecond)
			hashedTransfer(t, l.h1, l.h2, avH2+":7299", 0.2)
			if n := strings.Count(l.procG2.Output(), "probing the peer of a reply"); n != 1 {
				t.Errorf("G2 probed the same peer %d times in one run", n)
			}
		}
		l.stop(t)
	}
	slices.Sort(times)
	t.Logf("first clear packet to first ESP packet, 20 runs: median %v, min %v, max %v", times[10], times[0], times[19])
}

// TestLabAutoVPNTrust: G1 learns G2 by leap of faith; after G1 marks it
// untrusted, G2's certificate is refused whoever initiates and (fallback
// untrusted = drop) H1's traffic to H2 is dropped. Trusted again, G2 then
// rolls its certificate (same DN, new key): the shared secret still
// authenticates it, and G1's store takes the new certificate.
func TestLabAutoVPNTrust(t *testing.T) {
	l := newAVLab(t)
	l.start(t)
	hashedTransfer(t, l.h1, l.h2, avH2+":7300", 0.3)
	var peers []PeerInfo
	waitUntil(t, 5*time.Second, "G1 to store G2 with a shared secret", func() bool {
		out, _ := exec.Command(oevpnBinary(t), "peers", "-c", l.cfgG1, "--json").Output()
		peers = nil
		json.Unmarshal(out, &peers)
		return len(peers) == 1 && peers[0].SharedSecret
	})
	fp := peers[0].Fingerprint
	if out, err := exec.Command(oevpnBinary(t), "untrust", "-c", l.cfgG1, fp[:12]).CombinedOutput(); err != nil || !strings.Contains(string(out), "untrusted") {
		t.Fatalf("oevpn untrust: %v\n%s", err, out)
	}
	l.stop(t)

	// Untrusted: refused, and H1's traffic to H2 dropped after the refusal.
	l.procG1, l.cfgG1 = l.startGateway(t, l.g1, "g1", "10.1.0.0/24", "[autovpn.fallback]\nuntrusted = \"drop\"")
	l.procG2, l.cfgG2 = l.startGateway(t, l.g2, "g2", "10.2.0.0/24", "")
	stop := l.captureWAN(t)
	self, _ := os.Executable()
	l.h2.Start("env", "OEVPN_LAB_HELPER=accept "+avH2+":7301", self)
	time.Sleep(200 * time.Millisecond)
	l.h1.Try("env", "OEVPN_LAB_HELPER=connect "+avH2+":7301", self)
	if err := l.procG1.WaitFor("untrusted", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.procG1.WaitFor("falling back", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := l.h1.Try("ping", "-c", "2", "-W", "1", avH2); err == nil {
		t.Errorf("traffic to the untrusted peer's host got through:\n%s", out)
	}
	// G2, the responder, installed its SAs before G1 refused it; G1's
	// Delete removes them. G1 itself never sends ESP.
	if n := espFrom(t, stop(), avG1); n > 0 {
		t.Errorf("%d ESP packets from G1 to an untrusted peer", n)
	}
	waitUntil(t, 5*time.Second, "G2 to remove the refused SA", func() bool {
		return strings.Count(l.procG2.Output(), "IKE SA down") > 0
	})
	if out, err := exec.Command(oevpnBinary(t), "trust", "-c", l.cfgG1, fp).CombinedOutput(); err != nil || !strings.Contains(string(out), "trusted") {
		t.Fatalf("oevpn trust: %v\n%s", err, out)
	}
	l.stop(t)

	// G2 rolls its certificate: same DN, new key.
	os.Remove(filepath.Join(l.dir, "g2.key"))
	os.Remove(filepath.Join(l.dir, "g2.crt"))
	if out, err := exec.Command(oevpnBinary(t), "keygen", "-t", "ecdsa", "-o", filepath.Join(l.dir, "g2.key"),
		"-cert", "CN=g2.autovpn.test, O=AutoVPN lab", "-cert-out", filepath.Join(l.dir, "g2.crt")).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	l.start(t)
	stop = l.captureWAN(t)
	hashedTransfer(t, l.h1, l.h2, avH2+":7302", 0.3)
	if _, esp, _ := switchover(t, stop()); esp.IsZero() {
		t.Error("no ESP after the certificate roll")
	}
	waitUntil(t, 5*time.Second, "G1 to take G2's new certificate", func() bool {
		out, _ := exec.Command(oevpnBinary(t), "peers", "-c", l.cfgG1, "--json").Output()
		peers = nil
		json.Unmarshal(out, &peers)
		return len(peers) == 1 && peers[0].Fingerprint != fp && peers[0].State == "trusted"
	})
	if !strings.Contains(l.procG1.Output(), "rolled its certificate") {
		t.Error("G1 did not log the roll")
	}
	l.stop(t)
}

// TestLabAutoVPNHostMode: the gateways are the hosts themselves (H1 = G1,
// H2 = G2, host mode, their own addresses protected). Then H1 runs no
// oevpn: an innocent receiver of G2's probes, whose connection is
// unaffected, and which G2 probes three times at most.
func TestLabAutoVPNHostMode(t *testing.T) {
	lab.Require(t, "tcpdump", "ping")
	l := &avLab{g1: lab.NewNetns(t), g2: lab.NewNetns(t), dir: t.TempDir()}
	l.h1, l.h2 = l.g1, l.g2
	l.wanG1, l.wanG2 = lab.Veth(t, l.g1, l.g2)
	l.g1.Run("ip", "addr", "add", avG1+"/24", "dev", l.wanG1)
	l.g2.Run("ip", "addr", "add", avG2+"/24", "dev", l.wanG2)
	for _, g := range []string{"g1", "g2"} {
		if out, err := exec.Command(oevpnBinary(t), "keygen", "-t", "ed25519", "-o", filepath.Join(l.dir, g+".key"),
			"-cert", "CN="+g+".host.test", "-cert-out", filepath.Join(l.dir, g+".crt")).CombinedOutput(); err != nil {
			t.Fatalf("keygen: %v\n%s", err, out)
		}
	}
	l.procG1, l.cfgG1 = l.startGateway(t, l.g1, "g1", avG1+"/32", `mode = "host"`)
	l.procG2, l.cfgG2 = l.startGateway(t, l.g2, "g2", avG2+"/32", `mode = "host"`)
	stop := l.captureWAN(t)
	hashedTransfer(t, l.g1, l.g2, avG2+":7400", 1)
	// Per direction: when the first ESP packet left that side, and the
	// last clear packet of the connection from it.
	firstESP, lastClear := map[netip.Addr]time.Time{}, map[netip.Addr]time.Time{}
	espN := 0
	for _, p := range readCapture(t, stop()) {
		switch {
		case p.Proto == ipview.ProtoTCP && (p.DstPort == 7400 || p.SrcPort == 7400):
			lastClear[p.Src] = p.Time
		case p.ESP:
			espN++
			if _, ok := firstESP[p.Src]; !ok {
				firstESP[p.Src] = p.Time
			}
		}
	}
	for _, side := range []string{avG1, avG2} {
		a := netip.MustParseAddr(side)
		f, c := firstESP[a], lastClear[a]
		t.Logf("host mode, from %s: first ESP %v after the last clear packet", side, f.Sub(c))
		if f.IsZero() || c.Sub(f) > 50*time.Millisecond {
			t.Errorf("from %s the connection did not move into ESP (first ESP %v, last clear %v)", side, f, c)
		}
	}
	if espN < 100 {
		t.Errorf("only %d ESP packets", espN)
	}
	checkVerdict(t, l.cfgG1, avG2, "encrypted-and-authenticated")
	l.stop(t)

	// H1 without oevpn: an innocent receiver.
	l.procG2, l.cfgG2 = l.startGateway(t, l.g2, "g2", avG2+"/32", `mode = "host"`)
	hashedTransfer(t, l.g1, l.g2, avG2+":7401", 0.5)
	time.Sleep(3500 * time.Millisecond) // the retransmissions
	st := oevpnStatus(t, l.cfgG2)
	if st.AutoVPN == nil || st.AutoVPN.ProbeRequests != 3 || st.AutoVPN.Completed != 0 || len(st.IKESAs) != 0 {
		t.Errorf("G2 against an innocent receiver: %+v, IKE SAs %d", st.AutoVPN, len(st.IKESAs))
	}
	if out, err := exec.Command(oevpnBinary(t), "status", "-c", l.cfgG2).CombinedOutput(); err != nil || !strings.Contains(string(out), "3 requests") {
		t.Errorf("oevpn status does not show the probes (%v):\n%s", err, out)
	}
	// Another connection: not probed again within 24 hours.
	hashedTransfer(t, l.g1, l.g2, avG2+":7402", 0.2)
	if st := oevpnStatus(t, l.cfgG2); st.AutoVPN.ProbeRequests != 3 || st.AutoVPN.Limited == 0 {
		t.Errorf("the innocent receiver was probed again: %+v", st.AutoVPN)
	}
	l.procG2.Signal(syscall.SIGTERM)
	l.procG2.Wait(10 * time.Second)
}

// TestLabAutoVPNNAT: G1 sits behind a NAT (nftables masquerade). G2 sees
// H1's connection from the NAT's address and port; NAT-Detect tells G1,
// which makes the SA for that public address and translates H1's traffic
// itself, so the connection H2 knows survives the switch into ESP.
func TestLabAutoVPNNAT(t *testing.T) {
	lab.Require(t, "tcpdump", "ping", "nft")
	l := &avLab{h1: lab.NewNetns(t), g1: lab.NewNetns(t), g2: lab.NewNetns(t), h2: lab.NewNetns(t), dir: t.TempDir()}
	nat := lab.NewNetns(t)
	h1, g1lan := lab.Veth(t, l.h1, l.g1)
	g1wan, natIn := lab.Veth(t, l.g1, nat)
	natOut, g2wan := lab.Veth(t, nat, l.g2)
	g2lan, h2 := lab.Veth(t, l.g2, l.h2)
	l.wanG1, l.wanG2 = natOut, g2wan // capture beyond the NAT
	const pub = "192.0.2.1"
	l.h1.Run("ip", "addr", "add", avH1+"/24", "dev", h1)
	l.h1.Run("ip", "route", "add", "default", "via", avG1lan)
	l.g1.Run("ip", "addr", "add", avG1lan+"/24", "dev", g1lan)
	l.g1.Run("ip", "addr", "add", "192.168.0.2/24", "dev", g1wan)
	l.g1.Run("ip", "route", "add", "default", "via", "192.168.0.1")
	nat.Run("ip", "addr", "add", "192.168.0.1/24", "dev", natIn)
	nat.Run("ip", "addr", "add", pub+"/24", "dev", natOut)
	nat.Run("ip", "route", "add", "10.1.0.0/24", "via", "192.168.0.2")
	nat.Run("ip", "route", "add", "10.2.0.0/24", "via", avG2)
	l.g2.Run("ip", "addr", "add", avG2+"/24", "dev", g2wan)
	l.g2.Run("ip", "addr", "add", avG2lan+"/24", "dev", g2lan)
	l.h2.Run("ip", "addr", "add", avH2+"/24", "dev", h2)
	l.h2.Run("ip", "route", "add", "default", "via", avG2lan)
	for _, g := range []*lab.Netns{l.g1, l.g2, nat} {
		g.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	}
	nat.Run("nft", "add table ip nat")
	nat.Run("nft", "add chain ip nat post { type nat hook postrouting priority 100 ; }")
	nat.Run("nft", "add rule ip nat post oifname "+natOut+" masquerade")
	l.h1.Run("ping", "-c", "1", "-W", "2", avH2)
	for _, g := range []string{"g1", "g2"} {
		if out, err := exec.Command(oevpnBinary(t), "keygen", "-t", "ecdsa", "-o", filepath.Join(l.dir, g+".key"),
			"-cert", "CN="+g+".nat.test", "-cert-out", filepath.Join(l.dir, g+".crt")).CombinedOutput(); err != nil {
			t.Fatalf("keygen: %v\n%s", err, out)
		}
	}
	l.procG1, l.cfgG1 = l.startGateway(t, l.g1, "g1", "10.1.0.0/24", "")
	l.procG2, l.cfgG2 = l.startGateway(t, l.g2, "g2", "10.2.0.0/24", "")
	stop := tcpdump(t, l.g2, g2wan, "ip")
	hashedTransfer(t, l.h1, l.h2, avH2+":7500", 2)
	pcap := stop()
	if !strings.Contains(l.procG1.Output(), "nat=true") {
		t.Fatal("G1 did not detect the NAT")
	}
	// On the far side of the NAT: H2's connection is with the NAT's
	// address, first in the clear, then only in ESP.
	var firstClear, firstESP, lastClear time.Time
	for _, p := range readCapture(t, pcap) {
		switch {
		case p.Proto == ipview.ProtoTCP && (p.DstPort == 7500 || p.SrcPort == 7500):
			if firstClear.IsZero() {
				firstClear = p.Time
			}
			if p.Src == netip.MustParseAddr(pub) {
				lastClear = p.Time
			}
		case p.ESP && p.Src == netip.MustParseAddr(pub) && firstESP.IsZero():
			firstESP = p.Time
		}
	}
	if firstClear.IsZero() || firstESP.IsZero() {
		t.Fatalf("no clear start (%v) or no ESP from behind the NAT (%v)", firstClear, firstESP)
	}
	if lastClear.Sub(firstESP) > 50*time.Millisecond {
		t.Errorf("clear packets from H1 continued %v after ESP began", lastClear.Sub(firstESP))
	}
	t.Logf("behind a NAT: first clear packet to first ESP packet %v", firstESP.Sub(firstClear))
	st := oevpnStatus(t, l.cfgG1)
	if len(st.IKESAs) == 0 || len(st.IKESAs[0].Children) == 0 || st.IKESAs[0].Children[0].Local != "["+pub+"]" {
		t.Errorf("G1's SA is not for the public address: %+v", st.IKESAs)
	}
}

// espFrom counts the ESP packets a gateway sent in a capture.
func espFrom(t *testing.T, pcap, from string) int {
	t.Helper()
	n := 0
	for _, p := range readCapture(t, pcap) {
		if p.ESP && p.Src == netip.MustParseAddr(from) {
			n++
		}
	}
	return n
}

// spoofTCP sends, from inside ns, TCP segments to dst:port from each
// source: for each source a SYN, then extra 400-octet data segments. It
// returns the octets sent (IP packets).
func spoofTCP(t *testing.T, ns *lab.Netns, srcs []netip.Addr, dst netip.Addr, port uint16, extra int) int {
	t.Helper()
	sent := 0
	err := ns.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		to := &syscall.SockaddrInet4{Addr: dst.As4()}
		for i, src := range srcs {
			seq := uint32(1000 + i)
			for k := 0; k <= extra; k++ {
				payload, flags := 0, byte(0x02) // SYN
				if k > 0 {
					payload, flags = 400, 0x18 // PSH+ACK with data
				}
				pkt := tcpSegment(src, dst, uint16(20000+i%40000), port, seq, flags, payload)
				if k == 0 {
					seq++
				} else {
					seq += uint32(payload)
				}
				if err := syscall.Sendto(fd, pkt, 0, to); err != nil {
					return err
				}
				sent += len(pkt)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sent
}

// tcpSegment builds an IPv4 TCP segment with correct checksums (the SYN
// with the usual 20 octets of options, as a flood would send).
func tcpSegment(src, dst netip.Addr, sport, dport uint16, seq uint32, flags byte, payload int) []byte {
	optLen := 0
	if flags&0x02 != 0 {
		optLen = 20
	}
	tcpLen := 20 + optLen + payload
	p := make([]byte, 20+tcpLen)
	p[0], p[8], p[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], inetChecksum(p[:20], 0))
	tcp := p[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	if flags&0x10 != 0 {
		binary.BigEndian.PutUint32(tcp[8:], 1)
	}
	tcp[12], tcp[13] = byte((20+optLen)/4)<<4, flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	if optLen > 0 {
		copy(tcp[20:], []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7})
	}
	var pseudo uint32
	for _, b := range [][]byte{p[12:16], p[16:20]} {
		pseudo += uint32(binary.BigEndian.Uint16(b)) + uint32(binary.BigEndian.Uint16(b[2:]))
	}
	pseudo += 6 + uint32(tcpLen)
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(tcp, pseudo))
	return p
}

func inetChecksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// probeBytes sums the octets of the AutoVPN probes G2 sent in a capture
// (ICMP Parameter Problem from G2's address).
func probeBytes(t *testing.T, pcap string) (n, octets int) {
	for _, p := range readCapture(t, pcap) {
		if p.Proto == ipview.ProtoICMP && p.Src == netip.MustParseAddr(avG2) {
			n++
			octets += p.Len
		}
	}
	return
}

// TestLabAutoVPNSpoofedFlood performs issue 10 item 10 end to end: an
// attacker on the G1–G2 link floods H2 with SYNs from spoofed sources
// (each its own /24), more than G2 has ever had to remember. H2 answers
// each, which used to make G2 probe every spoofed source three times (ten
// times the flood's bytes) and fill its per-peer table. Now the SYNs
// alone make G2 send nothing; flows that pay (a SYN and two data
// segments) get fewer probe bytes than they sent; and a real connection
// H1 → H2 then still moves into ESP.
func TestLabAutoVPNSpoofedFlood(t *testing.T) {
	l := newAVLab(t)
	// The spoofed sources route back towards the attacker (and so pass
	// G2's reverse-path check).
	l.g2.Run("ip", "route", "add", "198.18.0.0/15", "via", avG1)
	l.start(t)
	srcs := func(from, n int) []netip.Addr {
		var out []netip.Addr
		for i := from; i < from+n; i++ {
			out = append(out, netip.AddrFrom4([4]byte{198, 18 + byte(i>>8&1), byte(i), byte(1 + i>>9)}))
		}
		return out
	}
	h2 := netip.MustParseAddr(avH2)

	// SYNs alone.
	stop := tcpdump(t, l.g2, l.wanG2, "icmp")
	in := spoofTCP(t, l.g1, srcs(0, 4000), h2, 7500, 0)
	time.Sleep(4 * time.Second) // any retransmissions
	n, out := probeBytes(t, stop())
	st := oevpnStatus(t, l.cfgG2).AutoVPN
	t.Logf("spoofed SYNs: %d octets in, %d probes (%d octets) out; G2 %+v", in, n, out, st)
	if out >= in || st == nil || st.ProbeRequests != 0 || st.Unpaid == 0 {
		t.Errorf("spoofed SYNs reflected %d octets for %d (G2 %+v)", out, in, st)
	}

	// Spoofed flows that pay: SYN and two data segments each.
	stop = tcpdump(t, l.g2, l.wanG2, "icmp")
	in = spoofTCP(t, l.g1, srcs(4000, 300), h2, 7500, 2)
	time.Sleep(4 * time.Second)
	n, out = probeBytes(t, stop())
	st = oevpnStatus(t, l.cfgG2).AutoVPN
	t.Logf("paid spoofed flows: %d octets in, %d probes (%d octets) out; G2 %+v", in, n, out, st)
	if out >= in || n == 0 {
		t.Errorf("paid spoofed flows: %d probe octets out for %d in (%d probes)", out, in, n)
	}

	// A real connection still gets its probe and its SA.
	stop = l.captureWAN(t)
	hashedTransfer(t, l.h1, l.h2, avH2+":7501", 1)
	if _, esp, _ := switchover(t, stop()); esp.IsZero() {
		t.Errorf("after the flood, the real connection did not move into ESP; G2 %+v", oevpnStatus(t, l.cfgG2).AutoVPN)
	}
	l.stop(t)
}
