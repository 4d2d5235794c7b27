//go:build !windows

package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonSurvivesClosedPipeAndHUP runs the daemon (netstack mode, no
// privileges) with stdout and stderr a pipe whose reader then goes away,
// and sends it SIGHUP, whose log line is written to that closed pipe:
// neither SIGHUP nor the SIGPIPE of the write may kill it; it still serves
// status, and SIGTERM still stops it cleanly.
func TestDaemonSurvivesClosedPipeAndHUP(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "c.sock")
	cfg := filepath.Join(dir, "n.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[interface]
mode = "netstack"
addresses = ["10.9.0.1/32"]
ike_port = 0
natt_port = 0
control = %q
state_dir = %q

[policy]
block = ["10.66.0.0/16"]
`, sock, filepath.Join(dir, "state"))), 0o600)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(oevpnBinary(t), "up", "-c", cfg)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited, done := make(chan error, 1), make(chan struct{})
	go func() { exited <- cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "endpoint up") {
				close(up)
				break
			}
		}
	}()
	select {
	case <-up:
	case err := <-exited:
		t.Fatalf("oevpn exited at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("oevpn did not come up in 10 s")
	}
	r.Close() // nobody reads the log any more

	for i := 0; i < 3; i++ {
		cmd.Process.Signal(syscall.SIGHUP)
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-exited:
		t.Fatalf("oevpn died after SIGHUP with its log pipe closed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if code, out, errOut := runCLI("status", "-s", sock); code != 0 || !strings.Contains(out, "netstack") {
		t.Fatalf("status after SIGHUP: exit %d\n%s%s", code, out, errOut)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("oevpn did not stop on SIGTERM")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}
