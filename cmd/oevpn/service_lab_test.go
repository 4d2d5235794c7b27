//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/oevpn/oevpn/internal/lab"
)

const serviceUnit = "../../docs/service/oevpn@.service"

// unitValues returns the values of key in the unit file, split on spaces.
func unitValues(t *testing.T, unit, key string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			out = append(out, strings.Fields(v)...)
		}
	}
	if len(out) == 0 {
		t.Fatalf("the unit has no %s", key)
	}
	return out
}

// TestServiceUnitVerifies checks the unit with systemd's own parser: a
// key systemd does not know is only a warning to it, so any output fails.
func TestServiceUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if lab.Required() {
			t.Fatal("systemd-analyze is missing (Debian package systemd)")
		}
		t.Skip("systemd-analyze is missing (Debian package systemd)")
	}
	unit, err := os.ReadFile(serviceUnit)
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the executables to exist.
	copy := strings.ReplaceAll(string(unit), "/usr/local/bin/oevpn", oevpnBinary(t))
	p := filepath.Join(t.TempDir(), "oevpn@test.service")
	os.WriteFile(p, []byte(copy), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestLabServiceUser runs the daemon as the unit does: a user other than
// root holding only the unit's ambient capabilities, with its environment,
// and a notify socket as systemd's. The tunnel must come up (a TUN, routes,
// rules, IKE on port 500), READY=1 must arrive, and a stop must leave
// nothing behind.
func TestLabServiceUser(t *testing.T) {
	lab.Require(t, "setpriv", "ping")
	unit, err := os.ReadFile(serviceUnit)
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for _, c := range unitValues(t, string(unit), "AmbientCapabilities") {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	capList := strings.Join(caps, ",")
	home := unprivilegedDir(t, oevpnBinary(t))
	// The unit's directories, as RuntimeDirectory= and StateDirectory=
	// make them: the service user's, mode 0700.
	env := []string{"HOME=" + home}
	for _, kv := range unitValues(t, string(unit), "Environment") {
		k, v, _ := strings.Cut(kv, "=")
		dir := filepath.Join(home, strings.TrimPrefix(v, "/"))
		os.MkdirAll(filepath.Join(dir, "oevpn"), 0o700)
		os.Chown(filepath.Join(dir, "oevpn"), pxNobody, pxNobody)
		env = append(env, k+"="+dir)
	}
	notifyPath := filepath.Join(home, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	os.Chown(notifyPath, pxNobody, pxNobody)
	env = append(env, "NOTIFY_SOCKET="+notifyPath)

	a, b := lab.NewNetns(t), lab.NewNetns(t)
	vethA, vethB := lab.Veth(t, a, b)
	a.Run("ip", "addr", "add", pxOuterA+"/24", "dev", vethA)
	b.Run("ip", "addr", "add", pxOuterB+"/24", "dev", vethB)
	for _, x := range []struct {
		ns   *lab.Netns
		addr string
	}{{a, pxInnerA}, {b, pxInnerB}} {
		x.ns.Run("ip", "link", "set", "lo", "up")
		x.ns.Run("ip", "addr", "add", x.addr+"/32", "dev", "lo")
	}
	startOevpnPeer(t, b, t.TempDir(), pxOuterA, pxInnerB, pxInnerA, pxInnerB+"/32", pxInnerA+"/32", "none")
	cfgA := filepath.Join(home, "a.toml")
	os.WriteFile(cfgA, []byte(pskPeerConfig(pxOuterB, pxInnerA, pxInnerB, pxInnerA+"/32", pxInnerB+"/32", "start", "", "")), 0o600)
	os.Chown(cfgA, pxNobody, pxNobody)
	rulesBefore := a.Run("ip", "rule")
	args := tunForServiceUser(t)
	args = append(args, "setpriv", "--reuid="+strconv.Itoa(pxNobody), "--regid="+strconv.Itoa(pxNobody), "--clear-groups",
		"--inh-caps=-all,"+capList, "--ambient-caps=-all,"+capList, "--bounding-set=-all,"+capList, "env")
	args = append(append(args, env...), filepath.Join(home, "oevpn"), "up", "-c", cfgA)
	procA := a.Start(args...)
	ready := make(chan string, 4)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				return
			}
			ready <- string(buf[:n])
		}
	}()
	select {
	case msg := <-ready:
		if !strings.HasPrefix(msg, "READY=1") {
			t.Fatalf("first notification %q", msg)
		}
	case <-time.After(15 * time.Second):
		procA.Signal(syscall.SIGQUIT)
		time.Sleep(time.Second)
		t.Fatalf("no READY=1 in 15 s\n%s", procA.Output())
	}
	checkServiceCreds(t, procA.Cmd.Process.Pid, len(caps))
	if out, err := a.Try("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", pxInnerA, pxInnerB); err != nil {
		t.Fatalf("ping through the tunnel: %v\n%s\nA:\n%s", err, out, procA.Output())
	}
	if !strings.Contains(procA.Output(), "control="+filepath.Join(home, "run", "oevpn")) {
		t.Errorf("the control socket is not in the unit's runtime directory:\n%s", procA.Output())
	}
	// ExecReload, as the service user: the unchanged file keeps the tunnel.
	unitValues(t, string(unit), "ExecReload")
	reload := slices.Concat([]string{"setpriv", "--reuid=" + strconv.Itoa(pxNobody), "--regid=" + strconv.Itoa(pxNobody), "--clear-groups", "env"},
		env, []string{filepath.Join(home, "oevpn"), "reload", "-c", cfgA})
	if out, err := a.Try(reload...); err != nil || !strings.Contains(out, "peer peer: unchanged: its SAs kept") {
		t.Errorf("oevpn reload as the service user: %v\n%s", err, out)
	}
	procA.Signal(syscall.SIGTERM)
	if err := procA.Wait(10 * time.Second); err != nil {
		t.Fatalf("oevpn did not stop cleanly: %v\n%s", err, procA.Output())
	}
	select {
	case msg := <-ready:
		if msg != "STOPPING=1" {
			t.Errorf("notification at the stop: %q", msg)
		}
	case <-time.After(time.Second):
		t.Error("no STOPPING=1")
	}
	if rules := a.Run("ip", "rule"); rules != rulesBefore {
		t.Errorf("the service user's oevpn left rules behind:\n%s", rules)
	}
}

// tunForServiceUser returns a command prefix under which the service user
// may open /dev/net/tun. udev makes it mode 0666; where it is not (some
// containers), the prefix runs the command in a mount namespace of its own
// with a node of that mode bound over it, leaving the host's alone.
func tunForServiceUser(t *testing.T) []string {
	t.Helper()
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o006 == 0o006 {
		return nil
	}
	lab.Require(t, "unshare", "mount")
	node := filepath.Join(t.TempDir(), "tun")
	if err := syscall.Mknod(node, syscall.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatal(err)
	}
	os.Chmod(node, 0o666)
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", `mount --bind "$0" /dev/net/tun && exec "$@"`, node}
}

// checkServiceCreds fails the test unless pid runs as pxNobody with
// exactly n effective capabilities.
func checkServiceCreds(t *testing.T, pid, n int) {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) > 2 && f[0] == "Uid:" && f[2] != strconv.Itoa(pxNobody):
			t.Errorf("oevpn runs with effective uid %s", f[2])
		case len(f) > 1 && f[0] == "CapEff:":
			v, _ := strconv.ParseUint(f[1], 16, 64)
			if got := popcount(v); got != n {
				t.Errorf("oevpn has %d effective capabilities (%s), want the unit's %d", got, f[1], n)
			}
		}
	}
}

func popcount(v uint64) int {
	n := 0
	for ; v != 0; v &= v - 1 {
		n++
	}
	return n
}
