//go:build linux

// Package lab runs the lab tests' real components: network namespaces joined
// by veth pairs, processes inside them, packet captures. Every test that uses
// it calls Require first, which skips the test with a message when the
// machine lacks a prerequisite, or fails it when OEVPN_LAB=required (CI).
// Everything a test creates is removed when it ends, also when it fails.
package lab

import (
	"runtime"

	"golang.org/x/sys/unix"

	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Required reports whether lab tests must run (OEVPN_LAB=required).
func Required() bool { return os.Getenv("OEVPN_LAB") == "required" }

// RequireTools checks for the commands a test runs that need neither root
// nor namespaces (shells, groff): a missing one skips the test, or fails
// it when OEVPN_LAB=required (`make lab-deps` installs them).
func RequireTools(t testing.TB, cmds ...string) {
	t.Helper()
	if missing := notOnPath(nil, cmds); len(missing) > 0 {
		lacking(t, "test needs "+strings.Join(missing, ", ")+" (`make lab-deps` installs them)")
	}
}

// notOnPath appends to missing those of cmds that are not on PATH.
func notOnPath(missing, cmds []string) []string {
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	return missing
}

// lacking skips t for what msg says is missing, or fails it when
// OEVPN_LAB=required.
func lacking(t testing.TB, msg string) {
	t.Helper()
	if Required() {
		t.Fatal(msg + "; OEVPN_LAB=required makes this a failure")
	}
	t.Skip(msg)
}

// Require checks the prerequisites of a lab test: root, /dev/net/tun, the ip
// command and the given commands. A missing one skips the test, or fails it
// when OEVPN_LAB=required.
func Require(t testing.TB, cmds ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "/dev/net/tun")
	}
	missing = notOnPath(missing, append([]string{"ip"}, cmds...))
	if len(missing) == 0 {
		if err := exec.Command("ip", "netns", "add", "oevpn-probe-"+fmt.Sprint(os.Getpid())).Run(); err != nil {
			missing = append(missing, "network namespaces ("+err.Error()+")")
		} else {
			exec.Command("ip", "netns", "del", "oevpn-probe-"+fmt.Sprint(os.Getpid())).Run()
		}
	}
	if len(missing) > 0 {
		lacking(t, "lab test needs "+strings.Join(missing, ", ")+" (run as root after `make lab-deps`)")
	}
}

var seq atomic.Int32

// Unique returns a short name unique to this process and call, e.g.
// "oe1234a3", for namespaces and interfaces (at most 15 characters).
func Unique(prefix string) string {
	return fmt.Sprintf("%s%d%c%d", prefix, os.Getpid()%100000, 'a', seq.Add(1))
}

// Netns is a network namespace that lives as long as the test.
type Netns struct {
	Name string
	t    testing.TB
}

// NewNetns creates a namespace with its loopback up. The test's cleanup kills
// every process left in it and deletes it.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	n := &Netns{Name: Unique("oe"), t: t}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if pids, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				exec.Command("kill", "-9", p).Run()
			}
		}
		exec.Command("ip", "netns", "del", n.Name).Run()
	})
	n.Run("ip", "link", "set", "lo", "up")
	return n
}

// Do runs f on a thread inside the namespace: sockets f opens belong to
// it and stay there.
func (n *Netns) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering namespace %s: %w", n.Name, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with the goroutine.
		return fmt.Errorf("leaving namespace %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Cmd returns a command that runs inside the namespace.
func (n *Netns) Cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Run runs a command in the namespace and fails the test if it fails.
func (n *Netns) Run(args ...string) string {
	n.t.Helper()
	out, err := n.Cmd(args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("[%s] %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Try runs a command in the namespace and returns its output and error.
func (n *Netns) Try(args ...string) (string, error) {
	out, err := n.Cmd(args...).CombinedOutput()
	return string(out), err
}

// Veth joins two namespaces with a veth pair and returns the interface names
// (in a, in b).
func Veth(t testing.TB, a, b *Netns) (string, string) {
	t.Helper()
	ea, eb := Unique("va"), Unique("vb")
	if out, err := exec.Command("ip", "link", "add", ea, "netns", a.Name, "type", "veth", "peer", "name", eb, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("creating veth pair: %v: %s", err, out)
	}
	a.Run("ip", "link", "set", ea, "up")
	b.Run("ip", "link", "set", eb, "up")
	return ea, eb
}

// Proc is a background process in a namespace whose output is collected.
type Proc struct {
	Cmd  *exec.Cmd
	name string
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

// Start runs a command in the background in the namespace. The test's
// cleanup kills it if it is still running.
func (n *Netns) Start(args ...string) *Proc {
	n.t.Helper()
	p := &Proc{Cmd: n.Cmd(args...), name: args[0], done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.Cmd.Stdout, p.Cmd.Stderr = pw, pw
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		n.t.Fatalf("[%s] starting %s: %v", n.Name, strings.Join(args, " "), err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.out.Write(sc.Bytes())
			p.out.WriteByte('\n')
			p.mu.Unlock()
		}
	}()
	go func() {
		p.err = p.Cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	n.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

// Output returns what the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitFor waits until the output contains s, the process exits, or the
// timeout passes.
func (p *Proc) WaitFor(s string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), s) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.name, p.err, s, p.Output())
		case <-ctx.Done():
			return fmt.Errorf("%s did not print %q within %v:\n%s", p.name, s, timeout, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Signal sends sig to the process (the ip netns exec wrapper execs it, so
// the pid is the program's own).
func (p *Proc) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits for the process to exit, at most timeout.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}
