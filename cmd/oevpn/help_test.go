package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/ike"
)

// TestHelp: a command's help, with its positional arguments, goes to
// stdout, by `oevpn help CMD` and `oevpn CMD -h`; a usage error says what
// was wrong and the synopsis on stderr; flags may follow the positional
// arguments.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help", "up"}, {"up", "-h"}, {"up", "--help"}} {
		code, out, errOut := runCLI(args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "oevpn up [-s SOCKET | -c FILE] [--json] PEER") || !strings.Contains(out, "Options:") {
			t.Errorf("oevpn %s: exit %d\nstdout %q\nstderr %q", strings.Join(args, " "), code, out, errOut)
		}
	}
	for name := range commandHelp {
		if name == "demo" || name == "version" {
			continue
		}
		if code, out, _ := runCLI("help", name); code != 0 || !strings.HasPrefix(out, "Usage: oevpn "+name) {
			t.Errorf("oevpn help %s: exit %d %q", name, code, out)
		}
	}
	if code, _, errOut := runCLI("help", "frobnicate"); code != 2 || !strings.Contains(errOut, `no command "frobnicate"`) {
		t.Errorf("help of an unknown command: %d %q", code, errOut)
	}
	code, out, errOut := runCLI("down", "--bogus", "x")
	if code != 2 || out != "" || !strings.Contains(errOut, "flag provided but not defined: -bogus") || !strings.Contains(errOut, "Usage: oevpn down") {
		t.Errorf("a bad flag: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
	// Flags after the positional argument are flags, not arguments.
	if code, _, errOut := runCLI("check", "192.0.2.1", "-s", filepath.Join(t.TempDir(), "none.sock")); code != 3 || !strings.Contains(errOut, "is oevpn running?") {
		t.Errorf("check ADDR -s SOCKET: exit %d %q", code, errOut)
	}
}

// TestCheckExitCodes: oevpn check's exit status tells scripts the verdict:
// 0 encrypted, 1 clear, 2 blocked, 3 pending or an error.
func TestCheckExitCodes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "n.toml")
	os.WriteFile(p, []byte(`[interface]
mode = "netstack"
addresses = ["10.9.0.1/32"]
ike_port = 0
natt_port = 0

[policy]
block = ["10.4.0.0/24"]
clear = ["10.5.0.0/24"]

[[sa]]
peer = "127.0.0.1:9"
local = ["10.9.0.1"]
remote = ["10.3.0.0/24"]
spi_out = 0x1001
spi_in = 0x2002
key_out = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223"
key_in = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222e"

[[peer]]
name = "office"
address = "127.0.0.1"
ike_port = 9
natt_port = 9
auth = "psk"
psk = "a pre-shared key of some length"
local = ["10.9.0.1"]
remote = ["10.2.0.0/16"]
start = "traffic"
`), 0o600)
	testEndpoint(t, p)
	sock := filepath.Join(filepath.Dir(p), "c.sock")
	for _, tt := range []struct {
		addr string
		code int
		want string
	}{
		{"10.3.0.5", 0, "encrypted-and-authenticated"},
		{"10.5.0.5", 1, "clear"},
		{"10.4.0.5", 2, "blocked"},
		{"10.2.0.5", 3, "pending"},
		{"not-an-address", 3, "not an IP address"},
	} {
		code, out, errOut := runCLI("check", "-s", sock, tt.addr)
		if code != tt.code || !strings.Contains(out+errOut, tt.want) {
			t.Errorf("check %s: exit %d, want %d (%s)\n%s%s", tt.addr, code, tt.code, tt.want, out, errOut)
		}
		if code2, _, _ := runCLI("check", "-s", sock, "--json", tt.addr); code2 != code {
			t.Errorf("check --json %s: exit %d, without --json %d", tt.addr, code2, code)
		}
	}
}

// TestLocalIDDefault: a PSK peer without local_id gets our address toward
// it, as strongSwan does.
func TestLocalIDDefault(t *testing.T) {
	c, err := config.Parse("x.toml", []byte("[interface]\nmode = \"netstack\"\naddresses = [\"10.9.0.1/32\"]\n\n[[peer]]\nname = \"gw\"\naddress = \"127.0.0.1\"\nauth = \"psk\"\npsk = \"0123456789abcdefghij\"\nlocal = [\"10.9.0.1\"]\nremote = [\"10.2.0.0/16\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nodeConfig(c, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := nc.Peers[0].IKE.LocalID; !got.Equal(ike.IdentityOf(mustAddr("127.0.0.1"))) {
		t.Errorf("local_id defaulted to %v, want 127.0.0.1", got)
	}
}
