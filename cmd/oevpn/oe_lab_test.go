//go:build linux

package main

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/internal/lab"
	"github.com/oevpn/oevpn/tunnel"
)

// The opportunism lab: A (oevpn, initiator, AUTH_NULL) — B (oevpn,
// responder, raw key published as IPSECKEY) on one veth, and A — C (no
// oevpn at all) on another. A runs the DNS servers: Knot with the signed
// reverse zones and a validating Unbound.
const (
	oeA4, oeB4       = "10.77.0.1", "10.77.0.2"
	oeA6, oeB6       = "fd77::1", "fd77::2"
	oeAC4            = "10.78.0.1"
	oeC4clear        = "10.78.0.3" // no record: clear under private-or-clear
	oeC4dead         = "10.78.0.4" // IPSECKEY published, nobody answers IKE
	oeC4private      = "10.78.0.5" // no record, class private
	oeAC6, oeC6clear = "fd78::1", "fd78::3"
	oeC6private      = "fd78::5"
)

type oeLab struct {
	a, b, c          *lab.Netns
	vethAB, vethBA   string
	vethAC, vethCA   string
	dir              string
	cfgA, cfgB       string
	procA, procB     *lab.Proc
	dns              *lab.DNSLab
	dnsB             *lab.DNSLab // B's own resolver, if it has one
	bKeyPEM, bPubPEM []byte
	wrapA            []string // runs A's oevpn through this command
}

// records runs oevpn dns-records for key and addr and returns the record
// lines.
func dnsRecords(t *testing.T, keyFile, addr string, extra ...string) []string {
	t.Helper()
	out, err := exec.Command(oevpnBinary(t), append(append([]string{"dns-records", "-k", keyFile}, extra...), addr)...).CombinedOutput()
	if err != nil {
		t.Fatalf("oevpn dns-records: %v\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, l)
		}
	}
	return lines
}

func newOELab(t *testing.T, zoneMode string) *oeLab {
	t.Helper()
	return newOELabWith(t, "ed25519", func(l *oeLab, bKey string) []lab.DNSZone {
		deadKeyPEM, _ := lab.GenerateKey(t, "ecdsa")
		deadKey := filepath.Join(l.dir, "dead.pem")
		os.WriteFile(deadKey, deadKeyPEM, 0o600)
		rev4b := dnsRecords(t, bKey, oeB4)
		rev6b := dnsRecords(t, bKey, oeB6)
		rev4c := dnsRecords(t, deadKey, oeC4dead)
		// The first zone is always signed: StartDNS waits for its SOA.
		return []lab.DNSZone{
			{Name: "8.7.d.f.ip6.arpa", Mode: "signed", Records: nil},
			{Name: "0.77.10.in-addr.arpa", Mode: zoneMode, Records: only(rev4b, "IPSECKEY")},
			{Name: "0.78.10.in-addr.arpa", Mode: zoneMode, Records: only(rev4c, "IPSECKEY")},
			{Name: "7.7.d.f.ip6.arpa", Mode: zoneMode, Records: only(rev6b, "IPSECKEY")},
			{Name: "oe.test", Mode: "signed", Records: []string{"b A " + oeB4, "b AAAA " + oeB6, "clear A " + oeC4clear,
				"dead A " + oeC4dead, "mixed A " + oeB4, "mixed A " + oeC4dead}},
		}
	})
}

// newOELabWith builds the lab with a key of kind for B (in b.pem) and the
// zones that zones returns.
func newOELabWith(t *testing.T, kind string, zones func(l *oeLab, bKey string) []lab.DNSZone) *oeLab {
	t.Helper()
	lab.Require(t, "tcpdump", "ping")
	l := &oeLab{a: lab.NewNetns(t), b: lab.NewNetns(t), c: lab.NewNetns(t), dir: t.TempDir()}
	l.vethAB, l.vethBA = lab.Veth(t, l.a, l.b)
	l.vethAC, l.vethCA = lab.Veth(t, l.a, l.c)
	for _, n := range []*lab.Netns{l.a, l.b, l.c} {
		n.Run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0")
	}
	l.a.Run("ip", "addr", "add", oeA4+"/24", "dev", l.vethAB)
	l.a.Run("ip", "addr", "add", oeA6+"/64", "dev", l.vethAB, "nodad")
	l.b.Run("ip", "addr", "add", oeB4+"/24", "dev", l.vethBA)
	l.b.Run("ip", "addr", "add", oeB6+"/64", "dev", l.vethBA, "nodad")
	l.a.Run("ip", "addr", "add", oeAC4+"/24", "dev", l.vethAC)
	l.a.Run("ip", "addr", "add", oeAC6+"/64", "dev", l.vethAC, "nodad")
	for _, a := range []string{oeC4clear + "/24", oeC4dead + "/24", oeC4private + "/24"} {
		l.c.Run("ip", "addr", "add", a, "dev", l.vethCA)
	}
	for _, a := range []string{oeC6clear + "/64", oeC6private + "/64"} {
		l.c.Run("ip", "addr", "add", a, "dev", l.vethCA, "nodad")
	}
	l.bKeyPEM, l.bPubPEM = lab.GenerateKey(t, kind)
	bKey := filepath.Join(l.dir, "b.pem")
	os.WriteFile(bKey, l.bKeyPEM, 0o600)
	l.dns = lab.StartDNSIn(t, l.a, zones(l, bKey))
	return l
}

// only keeps the records of one type.
func only(lines []string, rrtype string) []string {
	var out []string
	for _, l := range lines {
		if slices.Contains(strings.Fields(l), rrtype) {
			out = append(out, l)
		}
	}
	return out
}

func (l *oeLab) start(t *testing.T, ns *lab.Netns, name, body string) (*lab.Proc, string) {
	t.Helper()
	sock := filepath.Join(l.dir, name+".sock")
	cfg := fmt.Sprintf("[interface]\nname = %q\nlog_level = \"debug\"\ncontrol = %q\n%s", lab.Unique("to"), sock, body)
	path := filepath.Join(l.dir, name+".toml")
	var wrap []string
	if ns == l.a {
		wrap = l.wrapA
	}
	return runOevpn(t, ns, name, path, cfg, wrap...), path
}

// runOevpn writes the configuration cfg to path (mode 0600) and runs
// `oevpn up -c path` in ns, through the command wrap if given, until it
// says "endpoint up". The process is killed at the end of the (sub)test,
// and its output logged if that failed.
func runOevpn(t *testing.T, ns *lab.Netns, name, path, cfg string, wrap ...string) *lab.Proc {
	t.Helper()
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := ns.Start(slices.Concat(wrap, []string{oevpnBinary(t), "up", "-c", path})...)
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		p.Wait(10 * time.Second)
		if t.Failed() {
			t.Logf("oevpn %s log:\n%s", name, p.Output())
		}
	})
	if err := p.WaitFor("endpoint up", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

// startAB starts both endpoints: A opportunistic towards B's and C's nets,
// B answering A's net with its published key.
func (l *oeLab) startAB(t *testing.T, dnssec, extraA string, extraB ...string) {
	t.Helper()
	l.startA(t, dnssec, extraA)
	l.startB(t, dnssec, extraB...)
}

// startA starts A, opportunistic towards B's and C's nets; extra goes in
// its [opportunism].
func (l *oeLab) startA(t *testing.T, dnssec, extra string) {
	t.Helper()
	l.procA, l.cfgA = l.start(t, l.a, "a", fmt.Sprintf(`
[policy]
private-or-clear = ["10.77.0.0/24", "10.78.0.0/24", "fd77::/64", "fd78::/64"]
private = ["%s/32", "%s/128"]
[opportunism]
resolver = %q
dnssec = %q
%s
`, oeC4private, oeC6private, l.dns.Resolver, dnssec, extra))
}

// stopA stops A, to start it again with another configuration.
func (l *oeLab) stopA() {
	l.procA.Signal(syscall.SIGTERM)
	l.procA.Wait(10 * time.Second)
}

// startB starts B, answering A's net with its published key.
func (l *oeLab) startB(t *testing.T, dnssec string, extra ...string) {
	t.Helper()
	// B asks A's resolver (through the veth) unless it has its own.
	resolverB := oeA4 + l.dns.Resolver[strings.LastIndex(l.dns.Resolver, ":"):]
	if l.dnsB != nil {
		resolverB = l.dnsB.Resolver
	}
	l.procB, l.cfgB = l.start(t, l.b, "b", fmt.Sprintf(`
[policy]
clear-or-private = ["10.77.0.0/24", "fd77::/64"]
[opportunism]
auth = "pubkey"
private_key = %q
resolver = %q
dnssec = %q
%s
`, filepath.Join(l.dir, "b.pem"), resolverB, dnssec, strings.Join(extra, "\n")))
}

func checkVerdict(t *testing.T, cfg, addr, want string) {
	t.Helper()
	out, err := exec.Command(oevpnBinary(t), "check", "-c", cfg, addr).CombinedOutput()
	if code := exitCode(err); code != verdictExit(want) || !strings.Contains(string(out), want) {
		t.Errorf("oevpn check %s: want %q (exit %d), got (exit %d):\n%s", addr, want, verdictExit(want), code, out)
	}
}

// verdictExit is the exit status of oevpn check for a verdict.
func verdictExit(verdict string) int {
	switch {
	case strings.HasPrefix(verdict, "encrypted"):
		return 0
	case verdict == "clear":
		return 1
	case verdict == "blocked":
		return 2
	}
	return 3
}

// exitCode is a command's exit status from its error.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// capture runs tcpdump on an interface of ns until the returned function
// is called, which returns the captured IP packets.
func capture(t *testing.T, ns *lab.Netns, iface string) func() []ipview.Packet {
	t.Helper()
	stop := tcpdump(t, ns, iface, "ip or ip6")
	return func() []ipview.Packet {
		var out []ipview.Packet
		for _, c := range readCapture(t, stop()) {
			out = append(out, c.Packet)
		}
		return out
	}
}

// capPacket is one captured IP packet: when it passed, its header, and
// whether it is ESP in UDP/4500.
type capPacket struct {
	Time time.Time
	ipview.Packet
	ESP bool
}

// readCapture returns the IP packets of a pcap file, those truncated to
// the snap length included; it skips what does not parse.
func readCapture(t *testing.T, path string) []capPacket {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, recs, err := lab.ReadPcapRecords(data)
	if err != nil {
		t.Fatal(err)
	}
	var out []capPacket
	for _, r := range recs {
		ip := r.Frame.IPPayload()
		if ip == nil {
			continue
		}
		p, err := ipview.Parse(capturedIP(ip))
		if err != nil {
			continue
		}
		c := capPacket{Time: r.Time, Packet: p}
		if p.Proto == ipview.ProtoUDP && (p.DstPort == 4500 || p.SrcPort == 4500) {
			if l4 := ip[headerLen(ip)+8:]; len(l4) >= 8 {
				kind, _ := esp.Classify(l4)
				c.ESP = kind == esp.KindESP
			}
		}
		out = append(out, c)
	}
	return out
}

// clearBetween counts captured packets from x to y that are not IKE or
// ESP (UDP 500/4500).
func clearBetween(pkts []ipview.Packet, x, y string) int {
	a, b := netip.MustParseAddr(x), netip.MustParseAddr(y)
	n := 0
	for _, p := range pkts {
		if p.Src != a || p.Dst != b {
			continue
		}
		if p.Proto == ipview.ProtoUDP && (p.DstPort == 500 || p.DstPort == 4500 || p.SrcPort == 500 || p.SrcPort == 4500) {
			continue
		}
		n++
	}
	return n
}

func TestLabOpportunisticIPSECKEY(t *testing.T) {
	l := newOELab(t, "signed")
	l.startAB(t, "require", "")
	stopAB := capture(t, l.a, l.vethAB)
	stopAC := capture(t, l.c, l.vethCA)

	// Host-to-host OE via a validated IPSECKEY, IPv4 and IPv6: the first
	// packets are held and delivered, nothing crosses in the clear.
	l.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "3", oeB4)
	hashedTransfer(t, l.a, l.b, oeB4+":7001", 1)
	hashedTransfer(t, l.a, l.b, "["+oeB6+"]:7002", 1)
	l.a.Run("ping", "-6", "-c", "3", "-i", "0.2", "-W", "3", oeB6)

	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
	checkVerdict(t, l.cfgA, oeB6, "encrypted-and-authenticated")
	checkVerdict(t, l.cfgB, oeA4, "encrypted-unauthenticated")

	// No record, private-or-clear: the clear path delivers, once looked up.
	l.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "3", oeC4clear)
	l.a.Run("ping", "-6", "-c", "2", "-i", "0.2", "-W", "3", oeC6clear)
	hashedTransferTo(t, l.a, l.c, oeC4clear+":7003")
	checkVerdict(t, l.cfgA, oeC4clear, "clear")
	if st := oevpnStatus(t, l.cfgA); st.ClearPath != "raw" {
		t.Errorf("clear path %q, want raw sockets", st.ClearPath)
	}
	// The negative cache routes the destination around oevpn meanwhile.
	if out := l.a.Run("ip", "route", "show", "table", "20293"); !strings.Contains(out, "throw "+oeC4clear) {
		t.Errorf("no bypass route for %s:\n%s", oeC4clear, out)
	}
	before := oevpnStatus(t, l.cfgA).Datapath.Clear
	l.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "3", oeC4clear)
	if after := oevpnStatus(t, l.cfgA).Datapath.Clear; after != before {
		t.Errorf("bypassed traffic still went through oevpn's clear path (%d → %d packets)", before, after)
	}

	// No record, private: dropped, and nothing leaks.
	for _, dst := range []string{oeC4private, oeC6private} {
		if out, err := l.a.Try("ping", "-c", "2", "-i", "0.3", "-W", "1", dst); err == nil {
			t.Errorf("ping %s (private, no record) got through:\n%s", dst, out)
		}
		checkVerdict(t, l.cfgA, dst, "blocked")
	}
	// A key is published but nobody answers IKE: hard fail, nothing in
	// the clear although the class is private-or-clear.
	if out, err := l.a.Try("ping", "-c", "4", "-i", "0.5", "-W", "1", oeC4dead); err == nil {
		t.Errorf("ping %s (published key, no IKE) got through:\n%s", oeC4dead, out)
	}
	waitUntil(t, 10*time.Second, "the dead peer to be given up", func() bool {
		return strings.Contains(l.procA.Output(), "no answer from the peer: IKE_SA_INIT sent")
	})
	checkVerdict(t, l.cfgA, oeC4dead, "blocked")

	ab, ac := stopAB(), stopAC()
	if n := clearBetween(ab, oeA4, oeB4) + clearBetween(ab, oeA6, oeB6); n > 0 {
		t.Errorf("%d packets between A and B in the clear", n)
	}
	for _, dst := range []string{oeC4private, oeC4dead} {
		if n := clearBetween(ac, oeAC4, dst); n > 0 {
			t.Errorf("%d packets to %s in the clear", n, dst)
		}
	}
	if n := clearBetween(ac, oeAC6, oeC6private); n > 0 {
		t.Errorf("%d packets to %s in the clear", n, oeC6private)
	}
	if n := clearBetween(ac, oeAC4, oeC4clear); n == 0 {
		t.Errorf("no clear packets to %s: the clear path did not carry the fallback", oeC4clear)
	}
	// The negative cache: one lookup for the no-record address, however
	// many packets.
	if n := strings.Count(l.procA.Output(), "dst="+oeC4clear+" class=private-or-clear verdict=clear"); n != 1 {
		t.Errorf("%s fell back %d times, want once (negative cache)", oeC4clear, n)
	}

	// Status shows the opportunistic peer, the shunts with why and where
	// the key came from, and the lookups; flush forgets a clear shunt and
	// its bypass route, so that the next packet goes through oevpn again.
	st := oevpnStatus(t, l.cfgA)
	oePeer := false
	for _, p := range st.Peers {
		oePeer = oePeer || p.Name == "oe-out-"+oeB4 && p.Kind == "opportunistic" && p.State == "up"
	}
	shunts := map[string]tunnel.OEStatus{}
	for _, e := range st.Opportunistic {
		shunts[e.Destination] = e
	}
	if c, d := shunts[oeC4clear], shunts[oeC4dead]; !oePeer || c.Verdict != "clear" || c.Class != "private-or-clear" || c.ExpiresInSeconds == nil ||
		d.Verdict != "drop" || !strings.Contains(d.Reason, "gateway "+oeC4dead+": ike: no answer from the peer") || d.Source != "IPSECKEY" ||
		st.Events.DNSLookups["found"] == 0 || st.Events.DNSLookups["no_record"] == 0 || st.Events.OEFallbacks["drop"] == 0 {
		t.Errorf("status: opportunistic peer %v, shunts %+v, events %+v", oePeer, st.Opportunistic, st.Events)
	}
	bin := oevpnBinary(t)
	if out, err := exec.Command(bin, "shunts", "-c", l.cfgA).CombinedOutput(); err != nil || !strings.Contains(string(out), oeC4dead) ||
		!strings.Contains(string(out), "no answer from the peer") {
		t.Errorf("oevpn shunts: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "flush", oeC4clear, "-c", l.cfgA).CombinedOutput(); err != nil || !strings.Contains(string(out), "1 shunt(s) flushed") {
		t.Errorf("oevpn flush %s: %v\n%s", oeC4clear, err, out)
	}
	if out := l.a.Run("ip", "route", "show", "table", "20293"); strings.Contains(out, "throw "+oeC4clear) {
		t.Errorf("the bypass route of %s outlived its flushed shunt:\n%s", oeC4clear, out)
	}
	checkVerdict(t, l.cfgA, oeC4clear, "pending")
	if out, _ := exec.Command(bin, "status", "-c", l.cfgA).CombinedOutput(); true {
		t.Logf("oevpn status:\n%s", out)
	}
}

// TestLabOpportunisticForwarder: where oevpn may not open raw sockets (here
// it runs without CAP_NET_RAW; on Windows and macOS it never has them), the
// clear path is the forwarder: flows that fall back to clear are terminated
// in a userspace stack and re-originated from host sockets that leave by
// the outside, the mark here. Opportunistic encryption is unaffected. With
// interface.outside, as on Windows and macOS, those sockets are bound to
// that interface and leave by it whatever the routing table says.
func TestLabOpportunisticForwarder(t *testing.T) {
	lab.Require(t, "setpriv")
	l := newOELab(t, "signed")
	l.wrapA = []string{"setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"}
	l.startAB(t, "require", "")
	if st := oevpnStatus(t, l.cfgA); st.ClearPath != "forwarder" || st.Outside != "" {
		t.Fatalf("A without CAP_NET_RAW: clear path %q, outside %q; want the forwarder, no interface", st.ClearPath, st.Outside)
	}
	stopAB := capture(t, l.a, l.vethAB)
	stopAC := capture(t, l.c, l.vethCA)

	hashedTransferTo(t, l.a, l.b, oeB4+":7001")
	hashedTransferTo(t, l.a, l.c, oeC4clear+":7003")
	hashedTransferTo(t, l.a, l.c, "["+oeC6clear+"]:7004")
	if from := udpEcho(t, l.a, l.c, oeC4clear+":7005"); !strings.HasPrefix(from, oeAC4+":") {
		t.Errorf("the forwarded datagram came from %s, want A's address %s", from, oeAC4)
	}
	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
	checkVerdict(t, l.cfgA, oeC4clear, "clear")
	// The forwarder terminated those flows: no bypass route may take
	// their rest around it.
	if out := l.a.Run("ip", "route", "show", "table", "20293"); strings.Contains(out, "throw") {
		t.Errorf("bypass routes with the forwarder:\n%s", out)
	}
	ab, ac := stopAB(), stopAC()
	if n := clearBetween(ab, oeA4, oeB4); n > 0 {
		t.Errorf("%d packets between A and B in the clear", n)
	}
	if clearBetween(ac, oeAC4, oeC4clear) == 0 || clearBetween(ac, oeAC6, oeC6clear) == 0 {
		t.Errorf("no clear packets from A to C: the forwarder did not carry the fallback")
	}
	l.stopA()

	// interface.outside: C's address is routed the wrong way (to B) in
	// A's main table, but the forwarder's sockets are bound to A's
	// interface towards C.
	l.a.Run("ip", "route", "add", oeC4clear+"/32", "dev", l.vethAB)
	l.procA, l.cfgA = l.start(t, l.a, "a-outside", fmt.Sprintf(`outside = %q
[policy]
private-or-clear = ["10.78.0.0/24"]
[opportunism]
resolver = %q
`, l.vethAC, l.dns.Resolver))
	if st := oevpnStatus(t, l.cfgA); st.ClearPath != "forwarder" || st.Outside != l.vethAC {
		t.Fatalf("clear path %q, outside %q; want the forwarder, %q", st.ClearPath, st.Outside, l.vethAC)
	}
	out, err := exec.Command(oevpnBinary(t), "status", "-c", l.cfgA).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "clear path forwarder") || !strings.Contains(string(out), "own packets leave by "+l.vethAC) {
		t.Errorf("oevpn status does not say how packets leave (%v):\n%s", err, out)
	}
	hashedTransferTo(t, l.a, l.c, oeC4clear+":7006")
	if from := udpEcho(t, l.a, l.c, oeC4clear+":7007"); !strings.HasPrefix(from, oeAC4+":") {
		t.Errorf("the forwarded datagram came from %s, want A's address %s", from, oeAC4)
	}
	l.stopA()

	// No mark and no outside interface: nothing could keep the clear
	// path's packets out of the TUN, so there is none.
	l.procA, l.cfgA = l.start(t, l.a, "a-nomark", fmt.Sprintf(`fwmark = 0
[policy]
private-or-clear = ["10.78.0.0/24"]
[opportunism]
resolver = %q
`, l.dns.Resolver))
	if st := oevpnStatus(t, l.cfgA); st.ClearPath != "none" {
		t.Errorf("without mark or outside: clear path %q, want none", st.ClearPath)
	}
}

// TestLabOpportunisticStoppedNegotiation: `oevpn down` during an
// opportunistic negotiation (B is not running yet) is not a failure: there
// is no shunt, and once B runs the next packet negotiates again at once.
func TestLabOpportunisticStoppedNegotiation(t *testing.T) {
	l := newOELab(t, "signed")
	l.startA(t, "require", `timeout = "20s"`)
	ping := l.a.Start("ping", "-c", "1", "-W", "1", oeB4)
	defer ping.Signal(syscall.SIGKILL)
	if err := l.procA.WaitFor("negotiating opportunistically", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(oevpnBinary(t), "down", "-c", l.cfgA, "oe-out-"+oeB4).CombinedOutput(); err != nil {
		t.Fatalf("oevpn down: %v\n%s", err, out)
	}
	if err := l.procA.WaitFor("opportunistic negotiation stopped", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	l.startB(t, "require")
	l.a.Run("ping", "-c", "2", "-i", "0.2", "-W", "3", oeB4)
	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
	if strings.Contains(l.procA.Output(), "falling back") {
		t.Errorf("the stopped negotiation was taken for a failure")
	}
}

// hashedTransferTo is hashedTransfer for a short fixed transfer.
func hashedTransferTo(t *testing.T, src, dst *lab.Netns, addr string) {
	t.Helper()
	hashedTransfer(t, src, dst, addr, 0.3)
}

// connectTimes times n TCP connects from src to addr (a helper accepting
// in dst); before each, prepare runs (e.g. to tear the SA down).
func connectTimes(t *testing.T, src, dst *lab.Netns, addr string, n int, prepare func()) []time.Duration {
	t.Helper()
	self, _ := os.Executable()
	srv := dst.Start("env", "OEVPN_LAB_HELPER=accept "+addr, self)
	if err := srv.WaitFor("listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	defer srv.Signal(syscall.SIGKILL)
	var out []time.Duration
	for i := 0; i < n; i++ {
		if prepare != nil {
			prepare()
		}
		res, err := src.Try("env", "OEVPN_LAB_HELPER=connect "+addr, self)
		if err != nil {
			t.Fatalf("connect %d to %s: %v\n%s", i, addr, err, res)
		}
		us, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(res), "connect "))
		if err != nil {
			t.Fatalf("connect helper said %q", res)
		}
		out = append(out, time.Duration(us)*time.Microsecond)
	}
	slices.Sort(out)
	return out
}

// TestLabOpportunisticConnectTime measures a TCP connect to an OE host
// whose SA does not exist yet (held SYN, DNS answer cached, IKE, flush)
// against the same connect without oevpn. No connect may wait for a SYN
// retransmit (1 s).
func TestLabOpportunisticConnectTime(t *testing.T) {
	l := newOELab(t, "signed")
	plain := connectTimes(t, l.a, l.b, oeB4+":7010", 20, nil)
	l.startAB(t, "require", "")
	down := func() {
		exec.Command(oevpnBinary(t), "down", "-c", l.cfgA, "oe-out-"+oeB4).Run()
		waitUntil(t, 5*time.Second, "the SA to go", func() bool {
			out, _ := exec.Command(oevpnBinary(t), "check", "-c", l.cfgA, oeB4).CombinedOutput()
			return !strings.Contains(string(out), "encrypted")
		})
	}
	oe := connectTimes(t, l.a, l.b, oeB4+":7011", 20, down)
	t.Logf("TCP connect, median of 20: plain %v (max %v); to an OE host with no SA yet %v (max %v)",
		plain[len(plain)/2], plain[len(plain)-1], oe[len(oe)/2], oe[len(oe)-1])
	if oe[len(oe)-1] >= time.Second {
		t.Errorf("a connect took %v: the SYN was retransmitted, not held", oe[len(oe)-1])
	}
	if n := strings.Count(l.procA.Output(), "IKE SA established"); n < 20 {
		t.Errorf("%d IKE SAs established, want one per connect (20)", n)
	}
}

// TestLabOpportunisticDNSSEC: with broken signatures there is no OE under
// require or prefer (private-or-clear falls back to clear); an unsigned
// zone gives OE under prefer; an idle tunnel is deleted at the end of its
// lifespan.
func TestLabOpportunisticDNSSEC(t *testing.T) {
	t.Run("bogus", testLabOpportunisticBogus)
	t.Run("unsigned-prefer", testLabOpportunisticUnsignedPrefer)
}

func testLabOpportunisticBogus(t *testing.T) {
	l := newOELab(t, "bogus")
	l.startAB(t, "require", "")
	l.a.Run("ping", "-c", "2", "-i", "0.2", "-W", "3", oeB4)
	checkVerdict(t, l.cfgA, oeB4, "clear")
	if strings.Contains(l.procA.Output(), "initiating IKE SA") {
		t.Errorf("IKE started on a bogus DNS answer under dnssec = require")
	}
	l.stopA()

	// The same with oevpn's own validation from the zones' DS records.
	l.procA, l.cfgA = l.start(t, l.a, "a-own", fmt.Sprintf(`
[policy]
private-or-clear = ["10.77.0.0/24"]
[opportunism]
resolver = %q
dnssec = "require"
trust_anchors = %q
`, l.dns.Resolver, l.dns.Anchors))
	// Here oevpn sees the signatures fail itself: an answer forged or
	// broken in a signed zone is an attack, never "no record", so even
	// private-or-clear traffic is dropped (for a few seconds, then asked
	// again), where a resolver's bare SERVFAIL above left it clear.
	if _, err := l.a.Try("ping", "-c", "2", "-i", "0.2", "-W", "1", oeB4); err == nil {
		t.Errorf("a ping crossed in the clear after a bogus answer under own validation")
	}
	checkVerdict(t, l.cfgA, oeB4, "blocked")
	if strings.Contains(l.procA.Output(), "initiating IKE SA") {
		t.Errorf("IKE started on a bogus DNS answer under own validation")
	}
	l.stopA()

	// prefer: a bogus answer is no more used than under require.
	l.procA, l.cfgA = l.start(t, l.a, "a-prefer", fmt.Sprintf(`
[policy]
private-or-clear = ["10.77.0.0/24"]
[opportunism]
resolver = %q
dnssec = "prefer"
`, l.dns.Resolver))
	l.a.Run("ping", "-c", "2", "-i", "0.2", "-W", "3", oeB4)
	checkVerdict(t, l.cfgA, oeB4, "clear")
	if strings.Contains(l.procA.Output(), "initiating IKE SA") {
		t.Errorf("IKE started on a bogus DNS answer under dnssec = prefer")
	}
}

func testLabOpportunisticUnsignedPrefer(t *testing.T) {
	l := newOELab(t, "unsigned")
	l.startB(t, "prefer")
	l.procA, l.cfgA = l.start(t, l.a, "a2", fmt.Sprintf(`
[policy]
private-or-clear = ["10.77.0.0/24"]
[opportunism]
resolver = %q
dnssec = "prefer"
lifespan = "2s"
extended_lifespan = "2s"
`, l.dns.Resolver))
	l.a.Run("ping", "-c", "2", "-i", "0.2", "-W", "3", oeB4)
	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
	if !strings.Contains(l.procA.Output(), "validated=false") {
		t.Errorf("the unsigned answer was not marked unvalidated")
	}
	// Idle: the lifespan ends, A sends Delete, B removes its SAs.
	waitUntil(t, 15*time.Second, "the idle tunnel to be deleted", func() bool {
		return strings.Contains(l.procA.Output(), "idle at the end of its lifespan") &&
			strings.Contains(l.procB.Output(), `msg="IKE SA down" component=ike peer=oe-in-`+oeA4)
	})
	checkVerdict(t, l.cfgA, oeB4, "pending")
}

// TestLabInteropOpportunistic: oevpn initiates opportunistically to a
// strongSwan responder whose raw public key it learned only from an
// IPSECKEY record (gateway 192.0.2.2 for 10.2.0.1, DNSSEC-validated);
// oevpn authenticates with its own raw key, which strongSwan is
// configured with (strongSwan has no AUTH_NULL).
func TestLabInteropOpportunistic(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	l := newInteropLab(t)
	swKey, swPub := lab.GenerateKey(t, "ed25519")
	oKey, oPub := lab.GenerateKey(t, "ed25519")
	swPubFile, oKeyFile := filepath.Join(l.dir, "sw.pub"), filepath.Join(l.dir, "o.pem")
	os.WriteFile(swPubFile, swPub, 0o600)
	os.WriteFile(oKeyFile, oKey, 0o600)
	recs := dnsRecords(t, swPubFile, ioInnerS, "-gateway", ioOuterS)
	dns := lab.StartDNSIn(t, l.o, []lab.DNSZone{{Name: "0.2.10.in-addr.arpa", Mode: "signed", Records: only(recs, "IPSECKEY")}})
	// The underlay route to strongSwan's inner net, as the host would have
	// it without oevpn.
	l.o.Run("ip", "route", "add", ioNetS, "via", ioOuterS, "src", ioInnerO)

	sw := lab.StartStrongSwan(t, l.s, lab.SwanConfig{LocalAddr: ioOuterS, LocalID: ioOuterS, RemoteID: ioInnerO,
		Auth: "pubkey", LocalKeyPEM: swKey, RemotePubPEM: oPub, LocalTS: ioNetS, RemoteTS: ioNetO})
	defer sw.Stop()
	cfg := fmt.Sprintf(`[interface]
name = %q
log_level = "debug"
control = %q
[policy]
private-or-clear = [%q]
[opportunism]
resolver = %q
auth = "pubkey"
private_key = %q
`, lab.Unique("to"), filepath.Join(l.dir, "o.sock"), ioNetS, dns.Resolver, oKeyFile)
	path := filepath.Join(l.dir, "o.toml")
	p := runOevpn(t, l.o, "o", path, cfg)
	l.o.Run("ping", "-c", "3", "-i", "0.2", "-W", "3", ioInnerS)
	hashedTransfer(t, l.o, l.s, ioInnerS+":7020", 1)
	checkVerdict(t, path, ioInnerS, "encrypted-and-authenticated")
	if !strings.Contains(p.Output(), "source=IPSECKEY") || !strings.Contains(p.Output(), "validated=true") {
		t.Errorf("the peer was not found through a validated IPSECKEY record")
	}
	if sas := sw.ListSAs(); !strings.Contains(sas, "INSTALLED") {
		t.Errorf("strongSwan lists no installed Child SA:\n%s", sas)
	}
}

// TestLabOpportunisticSources: the other discovery sources, each the only
// record of B: the TXT delegation with the key inline (RSA) and without
// (KEY lookup), a gateway known by FQDN (forward A and KEY records, FQDN
// identity), and an IP AutoSEC KEY record whose algorithms become the
// IKE proposal.
func TestLabOpportunisticSources(t *testing.T) {
	rev := "0.77.10.in-addr.arpa"
	owner := "2." + rev + "."
	cases := []struct {
		name, kind, source, idB string
		zones                   func(t *testing.T, bKey string) []lab.DNSZone
		ownValidation           bool // oevpn validates DNSSEC from the zones' DS records
	}{
		{"txt-inline-rsa", "rsa", "TXT", "", func(t *testing.T, bKey string) []lab.DNSZone {
			return []lab.DNSZone{{Name: rev, Mode: "signed", Records: only(dnsRecords(t, bKey, oeB4), "TXT")}}
		}, false},
		{"txt-key-lookup", "ed25519", "TXT", "", func(t *testing.T, bKey string) []lab.DNSZone {
			recs := append(only(dnsRecords(t, bKey, oeB4), "KEY"), owner+` 300 IN TXT "X-IPsec-Server(10)=`+oeB4+`"`)
			return []lab.DNSZone{{Name: rev, Mode: "signed", Records: recs}}
		}, true},
		{"fqdn-gateway", "ed25519", "TXT", "b.oe.test", func(t *testing.T, bKey string) []lab.DNSZone {
			fwd := append(only(dnsRecords(t, bKey, "b.oe.test"), "KEY"), "b 300 IN A "+oeB4)
			return []lab.DNSZone{
				{Name: rev, Mode: "signed", Records: []string{owner + ` 300 IN TXT "X-IPsec-Server(10)=@b.oe.test"`}},
				{Name: "oe.test", Mode: "signed", Records: fwd},
			}
		}, true},
		{"autosec", "ed25519", "AutoSEC", "", func(t *testing.T, bKey string) []lab.DNSZone {
			pemData, _ := os.ReadFile(bKey)
			blk, _ := pem.Decode(pemData)
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			der, _ := x509.MarshalPKIXPublicKey(k.(crypto.Signer).Public())
			text := "ENCR_AES_GCM_16-128;AUTH_HMAC_SHA2_256_128;CURVE25519;" + base64.StdEncoding.EncodeToString(der)
			return []lab.DNSZone{{Name: rev, Mode: "signed", Records: []string{fmt.Sprintf(`%s 300 IN KEY \# %d %x`, owner, len(text), text)}}}
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newOELabWith(t, c.kind, func(l *oeLab, bKey string) []lab.DNSZone { return c.zones(t, bKey) })
			var extraB []string
			if c.idB != "" {
				extraB = append(extraB, fmt.Sprintf("id = %q", c.idB))
			}
			extraA := ""
			if c.ownValidation {
				extraA = fmt.Sprintf("trust_anchors = %q", l.dns.Anchors)
			}
			l.startAB(t, "require", extraA, extraB...)
			l.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "3", oeB4)
			hashedTransfer(t, l.a, l.b, oeB4+":7030", 0.5)
			if c.ownValidation && !strings.Contains(l.procA.Output(), "validation=\"own, from") {
				t.Errorf("oevpn did not validate DNSSEC itself")
			}
			checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
			if !strings.Contains(l.procA.Output(), "source="+c.source) {
				t.Errorf("the gateway did not come from a %s record", c.source)
			}
			if c.source == "AutoSEC" {
				st := oevpnStatus(t, l.cfgA)
				if len(st.IKESAs) == 0 || !strings.Contains(st.IKESAs[0].Algorithms, "GCM_16-128") {
					t.Errorf("the IKE SA does not use the AutoSEC record's AES-GCM-128: %+v", st.IKESAs)
				}
			}
		})
	}
}

// TestLabOpportunisticResponderCheck: A authenticates with its raw key.
// B, the responder, accepts it only if A's reverse zone names A with that
// key (draft-richardson §4.12.2); with an unpublished key B refuses, and
// A, whose peer published a key, sends nothing in the clear.
func TestLabOpportunisticResponderCheck(t *testing.T) {
	aKeyPEM, _ := lab.GenerateKey(t, "ecdsa")
	otherPEM, _ := lab.GenerateKey(t, "ecdsa")
	var zones []lab.DNSZone
	l := newOELabWith(t, "ed25519", func(l *oeLab, bKey string) []lab.DNSZone {
		aKey := filepath.Join(l.dir, "a.pem")
		os.WriteFile(aKey, aKeyPEM, 0o600)
		recs := append(only(dnsRecords(t, bKey, oeB4), "IPSECKEY"), only(dnsRecords(t, aKey, oeA4), "IPSECKEY")...)
		zones = []lab.DNSZone{{Name: "0.77.10.in-addr.arpa", Mode: "signed", Records: recs}}
		return zones
	})
	// B's resolver must not sit behind the tunnel it is asked about: B
	// gets servers of its own, with the same zone.
	l.dnsB = lab.StartDNSIn(t, l.b, zones)
	l.startAB(t, "require", fmt.Sprintf("auth = \"pubkey\"\nprivate_key = %q", filepath.Join(l.dir, "a.pem")))
	l.a.Run("ping", "-c", "3", "-i", "0.2", "-W", "3", oeB4)
	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
	checkVerdict(t, l.cfgB, oeA4, "encrypted-and-authenticated")
	l.stopA()
	l.procB.Signal(syscall.SIGTERM)
	l.procB.Wait(10 * time.Second)

	// The same with a key that A's zone does not publish.
	other := filepath.Join(l.dir, "other.pem")
	os.WriteFile(other, otherPEM, 0o600)
	l.startAB(t, "require", fmt.Sprintf("auth = \"pubkey\"\nprivate_key = %q", other))
	stop := capture(t, l.a, l.vethAB)
	if out, err := l.a.Try("ping", "-c", "3", "-i", "0.3", "-W", "1", oeB4); err == nil {
		t.Errorf("ping got through although B cannot verify A's key:\n%s", out)
	}
	waitUntil(t, 5*time.Second, "B to refuse A's key", func() bool {
		return strings.Contains(l.procB.Output(), "authentication failed")
	})
	checkVerdict(t, l.cfgA, oeB4, "blocked")
	if n := clearBetween(stop(), oeA4, oeB4); n > 0 {
		t.Errorf("%d packets from A to B in the clear", n)
	}
}

// TestLabOpportunisticDNSTriggered: applications in A resolve names
// through oevpn's DNS stub (A's resolv.conf names it). The answer comes
// when the tunnel is up; an address that published a key but cannot be
// reached is withheld (SERVFAIL when it is the only one); addresses with no
// record are answered at once.
func TestLabOpportunisticDNSTriggered(t *testing.T) {
	lab.Require(t, "drill", "getent")
	l := newOELab(t, "signed")
	etc := filepath.Join("/etc/netns", l.a.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n"), 0o644)
	l.startAB(t, "require", "dns_listen = \"127.0.0.1:53\"\ndns_wait = \"3s\"\ntimeout = \"1s\"")

	out := l.a.Run("drill", "b.oe.test", "@127.0.0.1", "A")
	if !strings.Contains(out, oeB4) {
		t.Fatalf("no address in the stub's answer:\n%s", out)
	}
	// The tunnel was up before the answer came.
	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
	// A real client by name, through the C library's resolver.
	l.a.Run("ping", "-c", "2", "-i", "0.2", "-W", "3", "b.oe.test")
	if out := l.a.Run("getent", "ahostsv6", "b.oe.test"); !strings.Contains(out, oeB6) {
		t.Errorf("getent ahostsv6: %s", out)
	}
	checkVerdict(t, l.cfgA, oeB6, "encrypted-and-authenticated")

	if out := l.a.Run("drill", "clear.oe.test", "@127.0.0.1", "A"); !strings.Contains(out, oeC4clear) {
		t.Errorf("no-record address withheld:\n%s", out)
	}
	out, _ = l.a.Try("drill", "dead.oe.test", "@127.0.0.1", "A")
	if !strings.Contains(out, "SERVFAIL") || strings.Contains(out, oeC4dead) {
		t.Errorf("an address with a published key and no IKE was handed out:\n%s", out)
	}
	if out := l.a.Run("drill", "mixed.oe.test", "@127.0.0.1", "A"); !strings.Contains(out, oeB4) || strings.Contains(out, oeC4dead) {
		t.Errorf("mixed answer not filtered:\n%s", out)
	}
	if out, err := l.a.Try("ping", "-c", "1", "-W", "1", "dead.oe.test"); err == nil {
		t.Errorf("ping dead.oe.test resolved and got through:\n%s", out)
	}
}

// TestLabOpportunisticFailover: B's address has two IPSECKEY records; the
// preferred gateway (on C) runs no IKE. oevpn gives up on it after the
// short opportunistic timeout and fails over to the next, B itself
// (multihoming, draft §10).
func TestLabOpportunisticFailover(t *testing.T) {
	l := newOELabWith(t, "ed25519", func(l *oeLab, bKey string) []lab.DNSZone {
		deadKeyPEM, _ := lab.GenerateKey(t, "ecdsa")
		deadKey := filepath.Join(l.dir, "dead.pem")
		os.WriteFile(deadKey, deadKeyPEM, 0o600)
		recs := append(only(dnsRecords(t, deadKey, oeB4, "-gateway", oeC4dead, "-p", "5"), "IPSECKEY"),
			only(dnsRecords(t, bKey, oeB4, "-p", "20"), "IPSECKEY")...)
		return []lab.DNSZone{{Name: "0.77.10.in-addr.arpa", Mode: "signed", Records: recs}}
	})
	l.startAB(t, "require", `timeout = "1s"`)
	start := time.Now()
	hashedTransfer(t, l.a, l.b, oeB4+":7040", 0.3)
	t.Logf("first connection through the second gateway after %v", time.Since(start).Round(time.Millisecond))
	out := l.procA.Output()
	if !strings.Contains(out, "gateway="+oeC4dead) || !strings.Contains(out, `msg="negotiating opportunistically" component=oe dst=`+oeB4+" gateway="+oeB4) {
		t.Errorf("did not try %s first and then %s", oeC4dead, oeB4)
	}
	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
}

// TestLabOpportunisticRekeyRecheck: at every IKE SA rekey the peer's key
// is looked up again; still published, the tunnel carries on, and a
// transfer across the rekeys arrives intact.
func TestLabOpportunisticRekeyRecheck(t *testing.T) {
	l := newOELab(t, "signed")
	l.startAB(t, "require", `ike_lifetime = "2s"`)
	hashedTransfer(t, l.a, l.b, oeB4+":7050", 4)
	if n := strings.Count(l.procA.Output(), "IKE SA rekeyed: checking that the peer's key is still published"); n == 0 {
		t.Error("no key re-check at the IKE SA rekeys")
	}
	if strings.Contains(l.procA.Output(), "no longer published") {
		t.Error("the published key was taken for a missing one")
	}
	checkVerdict(t, l.cfgA, oeB4, "encrypted-and-authenticated")
}
