//go:build linux

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/internal/lab"
	"github.com/oevpn/oevpn/tunnel"
)

// peerSPIs returns the IKE SPIs and Child SA SPIs of peer's established
// IKE SAs, by `oevpn status --json` on the control socket sock, and the
// names of the configured peers.
func peerSPIs(t *testing.T, sock, peer string) (spis, configured []string) {
	t.Helper()
	code, out, errOut := runCLI("status", "-s", sock, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var st tunnel.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, p := range st.Peers {
		if p.Kind == tunnel.PeerConfigured {
			configured = append(configured, p.Name)
		}
		if p.Name != peer {
			continue
		}
		for _, sa := range p.IKESAs {
			if sa.State != "established" {
				continue
			}
			spis = append(spis, "ike "+sa.SPIi+"/"+sa.SPIr)
			for _, c := range sa.ChildSAs {
				spis = append(spis, "child "+c.SPIIn+"/"+c.SPIOut)
			}
		}
	}
	return spis, configured
}

// TestLabReload (issue 14, item 2): oevpn at both ends of a tunnel; A's
// file gains a second peer and a block prefix, and `oevpn reload` applies
// it while a ping runs through the tunnel: the report names the changes,
// the tunnel keeps its SPIs and the ping loses nothing. A broken file and
// a change that needs a restart are refused with file:line:key and change
// nothing; SIGHUP reloads too (the second peer removed again), and a
// SIGHUP with a broken file leaves the endpoint running as it was.
func TestLabReload(t *testing.T) {
	lab.Require(t, "ping")
	l := newInteropLab(t)
	pathA := filepath.Join(l.dir, "a.toml")
	cfgA := pskPeerConfig(ioOuterS, ioIDO, ioIDS, ioInnerO, ioNetS, "start", "", "")
	pa := runOevpn(t, l.o, "A", pathA, cfgA)
	runOevpn(t, l.s, "B", filepath.Join(l.dir, "b.toml"), pskPeerConfig(ioOuterO, ioIDS, ioIDO, ioInnerS, ioNetO, "none", "", ""))
	if _, ok := pingUntil(l.o, ioInnerO, ioInnerS, 15*time.Second); !ok {
		t.Fatalf("no tunnel to start with\nA:\n%s", pa.Output())
	}
	sock, err := config.ControlSocket(pathA)
	if err != nil {
		t.Fatal(err)
	}
	spis, _ := peerSPIs(t, sock, "peer")
	if len(spis) != 2 {
		t.Fatalf("SAs before the reload: %v", spis)
	}
	_, st, _ := runCLI("status", "-s", sock)
	t.Logf("before the reload: %v\n%s", spis, st)

	// Traffic through the reload: 0.05 s apart, for 4 s.
	ping := l.o.Start("ping", "-i", "0.05", "-w", "4", "-I", ioInnerO, ioInnerS)
	time.Sleep(time.Second)
	second := `
[[peer]]
name = "second"
address = "192.0.2.3"
local_id = "oevpn.lab.test"
remote_id = "second.lab.test"
auth = "psk"
psk = "another-psk-0123456789abcdef"
local = ["10.1.0.1"]
remote = ["10.3.0.0/24"]
`
	edited := strings.Replace(cfgA, "[[peer]]", "[policy]\nblock = [\"10.66.0.0/16\"]\n\n[[peer]]", 1) + second
	if err := os.WriteFile(pathA, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI("reload", "-c", pathA)
	t.Logf("oevpn reload:\n%s%s", out, errOut)
	for _, want := range []string{"reloaded " + pathA, "peer second: added", "peer peer: unchanged: its SAs kept",
		"policy: changed", "route 10.3.0.0/24: added", "route 10.66.0.0/16: added"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("reload: exit %d, want %q in its report\n%s%s", code, want, out, errOut)
		}
	}
	if err := ping.Wait(10 * time.Second); err != nil {
		t.Errorf("ping through the reload: %v\n%s", err, ping.Output())
	}
	if m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(ping.Output()); m == nil || m[1] != m[2] {
		t.Errorf("the reload interrupted the tunnel's traffic:\n%s", ping.Output())
	} else {
		t.Logf("ping through the reload: %s packets sent, %s received", m[1], m[2])
	}
	_, st, _ = runCLI("status", "-s", sock)
	t.Logf("after the reload:\n%s", st)
	after, configured := peerSPIs(t, sock, "peer")
	if !slices.Equal(after, spis) || !slices.Equal(configured, []string{"peer", "second"}) {
		t.Fatalf("after the reload: SAs %v (before %v), configured peers %v", after, spis, configured)
	}
	for addr, exit := range map[string]int{"10.3.0.1": checkError, "10.66.1.1": checkBlocked} {
		if code, out, _ := runCLI("check", "-s", sock, addr); code != exit {
			t.Errorf("check %s after the reload: exit %d, want %d: %s", addr, code, exit, out)
		}
	}

	// Refused: a broken file, and a key only a restart can change. Each
	// names the file, line and key; nothing changes.
	for _, tc := range []struct{ name, file, want string }{
		{"typo", strings.Replace(edited, "remote = [\"10.3.0.0/24\"]", "remtoe = [\"10.3.0.0/24\"]", 1), pathA + `:\d+: peer(\[1\])?\.remtoe`},
		{"restart needed", strings.Replace(edited, "log_level = \"debug\"", "log_level = \"debug\"\nmtu = 1300", 1), pathA + `:\d+: interface\.mtu: cannot change while running`},
	} {
		os.WriteFile(pathA, []byte(tc.file), 0o600)
		code, out, errOut := runCLI("reload", "-c", pathA)
		t.Logf("%s: oevpn reload: exit %d: %s", tc.name, code, strings.TrimSpace(errOut))
		if code == 0 || !regexp.MustCompile(tc.want).MatchString(errOut) {
			t.Errorf("%s: reload exit %d, want an error matching %q\n%s%s", tc.name, code, tc.want, out, errOut)
		}
		if now, configured := peerSPIs(t, sock, "peer"); !slices.Equal(now, spis) || len(configured) != 2 {
			t.Fatalf("%s: a refused reload changed the endpoint: SAs %v, peers %v", tc.name, now, configured)
		}
	}

	// SIGHUP: the second peer goes again.
	os.WriteFile(pathA, []byte(cfgA), 0o600)
	pa.Signal(syscall.SIGHUP)
	waitUntil(t, 5*time.Second, "SIGHUP removes the second peer", func() bool { _, c := peerSPIs(t, sock, "peer"); return len(c) == 1 })
	if err := pa.WaitFor(`removed=[second]`, 5*time.Second); err != nil {
		t.Error(err)
	}
	// SIGHUP with a broken file: logged, and nothing changes.
	os.WriteFile(pathA, []byte(cfgA+"\n[interface]\n"), 0o600)
	pa.Signal(syscall.SIGHUP)
	if err := pa.WaitFor("reload failed: still running the previous configuration", 5*time.Second); err != nil {
		t.Error(err)
	}
	if now, _ := peerSPIs(t, sock, "peer"); !slices.Equal(now, spis) {
		t.Fatalf("after SIGHUP: SAs %v, want %v", now, spis)
	}
	if _, ok := pingUntil(l.o, ioInnerO, ioInnerS, 3*time.Second); !ok {
		t.Fatal("no traffic after the SIGHUPs")
	}
}
