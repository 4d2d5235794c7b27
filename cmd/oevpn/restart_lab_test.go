//go:build linux

package main

import (
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
