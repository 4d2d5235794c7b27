//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/lab"
)

// The netstack proxy lab: A runs oevpn in netstack mode as an unprivileged
// user (uid 65534, no capabilities) with its proxies and port forwards; B
// runs oevpn on a TUN, as root, in front of a web server, a DNS server and
// a client. Only the outer addresses are on the link.
const (
	pxOuterA, pxOuterB = "10.221.0.1", "10.221.0.2"
	pxInnerA, pxInnerB = "10.77.0.1", "10.77.0.2"
	pxName             = "web.oevpn.lab."
	pxBody             = "oevpn-proxy-lab-page-served-behind-the-peer"
	pxHostBody         = "oevpn-proxy-lab-service-of-the-host-offered-to-peers"
	pxPSK              = "proxy lab pre-shared key, 32 characters or more"
	pxNobody           = 65534
)

const pxConfigA = `[interface]
mode = "netstack"
addresses = ["%s/32"]
log_level = "debug"

[[peer]]
name = "b"
address = %q
local_id = %q
remote_id = %q
auth = "psk"
psk = %q
local = ["%s/32"]
remote = ["%s/32"]

[proxy]
socks5 = "127.0.0.1:1080"
http = "127.0.0.1:3128"
dns = "%s:53"

[[forward]]
listen = "127.0.0.1:8022"
connect = "%s:8080"

[[forward]]
from = "tunnel"
listen = ":9090"
connect = "127.0.0.1:9091"
`

const pxConfigB = `[interface]
name = %q
addresses = ["%s/32"]
state_dir = %q
control = %q
log_level = "debug"

[[peer]]
name = "a"
address = %q
local_id = %q
remote_id = %q
auth = "psk"
psk = %q
local = ["%s/32"]
remote = ["%s/32"]
start = "none"
`

// TestLabNetstackProxies is issue 13's acceptance test: applications on a
// host where oevpn runs without privileges reach, by name, a web server
// behind a peer through the SOCKS5 and HTTP proxies, ask DNS through UDP
// ASSOCIATE, and use port forwards both ways; the link carries only IKE
// and ESP.
func TestLabNetstackProxies(t *testing.T) {
	lab.Require(t, "curl", "tcpdump", "setpriv")
	bin := oevpnBinary(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a, b := lab.NewNetns(t), lab.NewNetns(t)
	vethA, vethB := lab.Veth(t, a, b)
	a.Run("ip", "addr", "add", pxOuterA+"/24", "dev", vethA)
	b.Run("ip", "addr", "add", pxOuterB+"/24", "dev", vethB)
	a.Run("ip", "link", "set", "lo", "up")

	// B: oevpn on a TUN, as root, and the services behind it.
	dirB := t.TempDir()
	cfgB := filepath.Join(dirB, "b.toml")
	os.WriteFile(cfgB, fmt.Appendf(nil, pxConfigB, lab.Unique("px"), pxInnerB, dirB, filepath.Join(dirB, "ctl", "b.sock"),
		pxOuterA, pxInnerB, pxInnerA, pxPSK, pxInnerB, pxInnerA), 0o600)
	procB := b.Start(bin, "up", "-c", cfgB)
	if err := procB.WaitFor("endpoint up", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"http " + pxInnerB + ":8080 " + pxBody, "dns " + pxInnerB + ":53 " + pxName + " " + pxInnerB} {
		p := b.Start("env", "OEVPN_LAB_HELPER="+h, self)
		if err := p.WaitFor("listening", 10*time.Second); err != nil {
			t.Fatalf("%s: %v", h, err)
		}
	}

	// A: oevpn in netstack mode as nobody, with nothing but its own
	// directories; a service on A's host for the reverse forward.
	home := unprivilegedDir(t, bin)
	cfgA := filepath.Join(home, "a.toml")
	os.WriteFile(cfgA, fmt.Appendf(nil, pxConfigA, pxInnerA, pxOuterB, pxInnerA, pxInnerB, pxPSK, pxInnerA, pxInnerB, pxInnerB, pxInnerB), 0o600)
	os.Chown(cfgA, pxNobody, pxNobody)
	hostSvc := a.Start("env", "OEVPN_LAB_HELPER=http 127.0.0.1:9091 "+pxHostBody, self)
	if err := hostSvc.WaitFor("listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	stop := tcpdump(t, b, vethB, "ip host "+pxOuterA)
	procA := a.Start("setpriv", fmt.Sprintf("--reuid=%d", pxNobody), fmt.Sprintf("--regid=%d", pxNobody), "--clear-groups",
		"--inh-caps=-all", "env", "HOME="+home, "XDG_RUNTIME_DIR="+filepath.Join(home, "run"), "XDG_STATE_HOME=",
		filepath.Join(home, "oevpn"), "up", "-c", cfgA)
	if err := procA.WaitFor("endpoint up", 15*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, procA.Output())
	}
	out := procA.Output()
	for _, want := range []string{"SOCKS5 proxy listening", "HTTP proxy listening", "port forward from the host listening",
		"port forward from the tunnel listening", "control=" + filepath.Join(home, "run", "oevpn", "oevpn0.sock"),
		"state_dir=" + filepath.Join(home, ".local", "state", "oevpn")} {
		if !strings.Contains(out, want) {
			t.Errorf("A's log lacks %q:\n%s", want, out)
		}
	}
	checkUnprivileged(t, procA.Cmd.Process.Pid)
	asNobody := func(args ...string) []string {
		return append([]string{"setpriv", fmt.Sprintf("--reuid=%d", pxNobody), fmt.Sprintf("--regid=%d", pxNobody), "--clear-groups",
			"env", "HOME=" + home, "XDG_RUNTIME_DIR=" + filepath.Join(home, "run"), filepath.Join(home, "oevpn")}, args...)
	}

	curl := func(args ...string) string {
		t.Helper()
		out, err := a.Try(append([]string{"curl", "-sS", "--max-time", "15"}, args...)...)
		if err != nil {
			t.Fatalf("curl %s: %v\n%s\nA's log:\n%s", strings.Join(args, " "), err, out, procA.Output())
		}
		return out
	}
	url := "http://" + strings.TrimSuffix(pxName, ".") + ":8080/"
	if got := curl("--socks5-hostname", "127.0.0.1:1080", url); got != pxBody {
		t.Errorf("through SOCKS5: %q", got)
	}
	if got := curl("-x", "http://127.0.0.1:3128", url); got != pxBody {
		t.Errorf("through the HTTP proxy: %q", got)
	}
	if got := curl("http://127.0.0.1:8022/"); got != pxBody {
		t.Errorf("through the forward from the host: %q", got)
	}
	if out, err := a.Try("env", "OEVPN_LAB_HELPER=socks-udp 127.0.0.1:1080 "+pxInnerB+":53 "+pxName, self); err != nil ||
		strings.TrimSpace(out) != "answer "+pxInnerB {
		t.Errorf("DNS through UDP ASSOCIATE: %v\n%s", err, out)
	}
	// The reverse forward: B's host reaches a service on A's host through
	// the tunnel.
	if out, err := b.Try("curl", "-sS", "--max-time", "15", "http://"+pxInnerA+":9090/"); err != nil || out != pxHostBody {
		t.Errorf("through the forward from the tunnel: %v\n%s", err, out)
	}

	// The user's own status command finds the endpoint by itself.
	if out, err := a.Try(asNobody("status")...); err != nil || !strings.Contains(out, "10.77.0.2") {
		t.Errorf("oevpn status as the same user, without -c: %v\n%s", err, out)
	}

	// The link: nothing but IKE and ESP, none of the plaintext.
	_, frames := readFrames(t, stop())
	var ike, esp int
	for _, f := range frames {
		ip := f.IPPayload()
		if len(ip) < 20 || ip[9] != syscall.IPPROTO_UDP {
			t.Fatalf("a frame that is not UDP on the link: % x", ip[:min(len(ip), 40)])
		}
		udp := ip[20:]
		sport, dport := int(udp[0])<<8|int(udp[1]), int(udp[2])<<8|int(udp[3])
		payload := udp[8:]
		switch {
		case dport == 500 || sport == 500:
			ike++
		case (dport == 4500 || sport == 4500) && len(payload) >= 4 && !bytes.Equal(payload[:4], []byte{0, 0, 0, 0}):
			esp++
		case dport == 4500 || sport == 4500:
			ike++
		default:
			t.Errorf("a datagram on neither IKE nor NAT-T: %d -> %d", sport, dport)
		}
		for _, s := range []string{pxBody, pxHostBody, "web.oevpn", "GET /"} {
			if bytes.Contains(ip, []byte(s)) {
				t.Fatalf("plaintext %q on the link", s)
			}
		}
	}
	if esp == 0 || ike == 0 {
		t.Errorf("the capture has %d IKE and %d ESP datagrams", ike, esp)
	}
	t.Logf("link: %d IKE and %d ESP datagrams, no plaintext", ike, esp)

	procA.Signal(syscall.SIGTERM)
	if err := procA.Wait(10 * time.Second); err != nil {
		t.Errorf("A did not stop cleanly: %v\n%s", err, procA.Output())
	}
}

// unprivilegedDir returns a home directory for uid pxNobody holding a copy
// of the oevpn binary (the test's build directory is root's alone).
func unprivilegedDir(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "oevpn-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oevpn"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "run"), 0o700)
	for _, p := range []string{dir, filepath.Join(dir, "run")} {
		if err := os.Chown(p, pxNobody, pxNobody); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// checkUnprivileged fails the test unless pid runs as pxNobody with no
// effective capabilities.
func checkUnprivileged(t *testing.T, pid int) {
	t.Helper()
	// pid is setpriv's, which became oevpn by exec.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) > 1 && f[0] == "Uid:" && f[2] != fmt.Sprint(pxNobody):
			t.Errorf("oevpn runs with effective uid %s", f[2])
		case len(f) > 1 && f[0] == "CapEff:" && strings.Trim(f[1], "0") != "":
			t.Errorf("oevpn has effective capabilities %s", f[1])
		}
	}
}

// TestLabTUNUnprivilegedHint: a user without privileges who asks for a TUN
// is told which key runs oevpn without them.
func TestLabTUNUnprivilegedHint(t *testing.T) {
	lab.Require(t, "setpriv")
	ns := lab.NewNetns(t)
	home := unprivilegedDir(t, oevpnBinary(t))
	cfg := filepath.Join(home, "tun.toml")
	os.WriteFile(cfg, []byte("[interface]\nname = \""+lab.Unique("up")+"\"\naddresses = [\"10.77.0.1/32\"]\n\n[policy]\nblock = [\"10.66.0.0/16\"]\n"), 0o600)
	os.Chown(cfg, pxNobody, pxNobody)
	out, err := ns.Try("setpriv", fmt.Sprintf("--reuid=%d", pxNobody), fmt.Sprintf("--regid=%d", pxNobody), "--clear-groups",
		"--inh-caps=-all", "env", "HOME="+home, "XDG_RUNTIME_DIR="+filepath.Join(home, "run"),
		filepath.Join(home, "oevpn"), "up", "-c", cfg)
	if err == nil || !strings.Contains(out, cfg+`: a TUN device needs CAP_NET_ADMIN`) || !strings.Contains(out, `set interface.mode = "netstack"`) {
		t.Errorf("oevpn up with a TUN, unprivileged: %v\n%s", err, out)
	}
}
