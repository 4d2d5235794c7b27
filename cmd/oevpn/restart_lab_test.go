//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/lab"
)

// pingUntil pings dst from src in ns, one echo request a time, until one
// is answered; it returns how long that took (limit if none was).
func pingUntil(ns *lab.Netns, src, dst string, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < limit {
		if _, err := ns.Try("ping", "-c", "1", "-W", "1", "-I", src, dst); err == nil {
			return time.Since(start), true
		}
	}
	return limit, false
}

// TestLabRestartRecovery (issue 11, item 4): one end of a tunnel between
// oevpn and strongSwan is killed (kill -9) or stopped and started again
// at once; traffic must flow again within 10 s, with the defaults (DPD
// 30 s on oevpn, off on strongSwan). oevpn used to wait for DPD and its
// retransmissions (86.5 s; 41.5 s with dpd = 5 s).
func TestLabRestartRecovery(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	const bar = 10 * time.Second
	for _, tc := range []struct {
		name      string
		oevpn     string // oevpn's start
		swanStart bool   // strongSwan's start_action = start
		restart   string // "swan-kill", "swan-stop", "oevpn-kill", "oevpn-stop"
	}{
		{name: "strongSwan killed, oevpn starts", oevpn: "start", restart: "swan-kill"},
		{name: "strongSwan stopped, oevpn starts", oevpn: "start", restart: "swan-stop"},
		{name: "oevpn killed, oevpn starts", oevpn: "start", restart: "oevpn-kill"},
		{name: "oevpn stopped, oevpn starts", oevpn: "start", restart: "oevpn-stop"},
		{name: "strongSwan killed, strongSwan starts", oevpn: "none", swanStart: true, restart: "swan-kill"},
		{name: "oevpn killed, strongSwan starts", oevpn: "traffic", swanStart: true, restart: "oevpn-kill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newInteropLab(t)
			sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
				Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO}
			if tc.swanStart {
				sc.StartAction = "start"
			}
			sw := lab.StartStrongSwan(t, l.s, sc)
			defer func() { sw.Stop() }()
			p, _ := l.startOevpn(t, interopCase{auth: "psk"}, "", "", tc.oevpn)
			defer func() {
				if t.Failed() {
					t.Logf("oevpn log:\n%s", p.Output())
				}
			}()
			if tc.swanStart {
				if err := sw.Initiate(lab.SwanName); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := pingUntil(l.o, ioInnerO, ioInnerS, 15*time.Second); !ok {
				t.Fatal("no tunnel to start with")
			}
			switch tc.restart {
			case "swan-kill", "swan-stop":
				if tc.restart == "swan-kill" {
					sw.Kill()
				} else {
					sw.Stop()
				}
				sw = lab.StartStrongSwan(t, l.s, sc) // start_action = start initiates by itself
			default:
				sig := syscall.SIGKILL
				if tc.restart == "oevpn-stop" {
					sig = syscall.SIGTERM
				}
				p.Signal(sig)
				p.Wait(10 * time.Second)
				p, _ = l.startOevpn(t, interopCase{auth: "psk"}, "", "", tc.oevpn)
			}
			took, ok := pingUntil(l.o, ioInnerO, ioInnerS, 3*bar)
			t.Logf("%s: first echo reply %v after the restart", tc.name, took.Round(10*time.Millisecond))
			if !ok || took > bar {
				t.Errorf("traffic back after %v (bar %v)\nstrongSwan SAs:\n%s", took, bar, sw.ListSAs())
			}
		})
	}
}

// startOevpnPeer starts oevpn in ns with one PSK peer, as the interop
// lab's addresses have it.
func startOevpnPeer(t *testing.T, ns *lab.Netns, dir, peerAddr, localID, remoteID, local, remote, start string) *lab.Proc {
	t.Helper()
	cfg := pskPeerConfig(peerAddr, localID, remoteID, local, remote, start, "", "")
	return runOevpn(t, ns, "oevpn "+localID, filepath.Join(dir, lab.Unique("cfg")+".toml"), cfg)
}

// pskPeerConfig is a configuration of oevpn on a TUN (a new device name)
// with one peer, "peer", at peerAddr, authenticated by ioPSK; iface and
// peer are more lines for those sections.
func pskPeerConfig(peerAddr, localID, remoteID, local, remote, start, iface, peer string) string {
	return fmt.Sprintf(`[interface]
mode = "tun"
name = %q
log_level = "debug"
%s
[[peer]]
name = "peer"
address = %q
local_id = %q
remote_id = %q
auth = "psk"
psk = %q
local = [%q]
remote = [%q]
start = %q
%s`, lab.Unique("tr"), iface, peerAddr, localID, remoteID, ioPSK, local, remote, start, peer)
}

// TestLabRestartRecoveryOevpn (issue 11, item 4) is TestLabRestartRecovery
// with oevpn at both ends: A (in the lab's oevpn namespace) and B (in the
// other).
func TestLabRestartRecoveryOevpn(t *testing.T) {
	lab.Require(t, "ping")
	const bar = 10 * time.Second
	for _, tc := range []struct {
		name           string
		startA, startB string
		restartA, kill bool
	}{
		{name: "B killed, A starts", startA: "start", startB: "none", kill: true},
		{name: "B stopped, A starts", startA: "start", startB: "none"},
		{name: "A killed, A starts", startA: "start", startB: "none", restartA: true, kill: true},
		{name: "A killed, B starts", startA: "none", startB: "start", restartA: true, kill: true},
		{name: "B killed, B starts", startA: "none", startB: "start", kill: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newInteropLab(t)
			startA := func() *lab.Proc {
				return startOevpnPeer(t, l.o, l.dir, ioOuterS, ioIDO, ioIDS, ioInnerO, ioNetS, tc.startA)
			}
			startB := func() *lab.Proc {
				return startOevpnPeer(t, l.s, l.dir, ioOuterO, ioIDS, ioIDO, ioInnerS, ioNetO, tc.startB)
			}
			pa, pb := startA(), startB()
			if _, ok := pingUntil(l.o, ioInnerO, ioInnerS, 15*time.Second); !ok {
				t.Fatalf("no tunnel to start with\nA:\n%s\nB:\n%s", pa.Output(), pb.Output())
			}
			victim := pb
			if tc.restartA {
				victim = pa
			}
			sig := syscall.SIGTERM
			if tc.kill {
				sig = syscall.SIGKILL
			}
			victim.Signal(sig)
			victim.Wait(10 * time.Second)
			if tc.restartA {
				pa = startA()
			} else {
				pb = startB()
			}
			// The survivor's traffic (a restarted end with start = "none"
			// has none of its own to send into the tunnel).
			ns, src, dst := l.o, ioInnerO, ioInnerS
			if tc.restartA {
				ns, src, dst = l.s, ioInnerS, ioInnerO
			}
			took, ok := pingUntil(ns, src, dst, 3*bar)
			t.Logf("%s: first echo reply %v after the restart", tc.name, took.Round(10*time.Millisecond))
			if !ok || took > bar {
				t.Errorf("traffic back after %v (bar %v)\nA:\n%s\nB:\n%s", took, bar, pa.Output(), pb.Output())
			}
		})
	}
}
