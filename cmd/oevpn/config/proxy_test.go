package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const proxyGood = `[interface]
mode = "netstack"
addresses = ["10.0.0.1/32"]

[proxy]
socks5 = "127.0.0.1:1080"
http = "127.0.0.1:3128"
dns = "10.0.0.2:53"

[[forward]]
listen = "127.0.0.1:8022"
connect = "db.example.org:22"

[[forward]]
from = "tunnel"
listen = ":2222"
connect = "127.0.0.1:22"
`

func TestProxyConfig(t *testing.T) {
	c, err := Parse("p.toml", []byte(proxyGood))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Proxy.Enabled() || c.Proxy.DNS.String() != "10.0.0.2:53" || len(c.Forwards) != 2 || c.Forwards[0].From != "host" || c.Forwards[1].From != "tunnel" {
		t.Fatalf("proxy %+v, forwards %+v", c.Proxy, c.Forwards)
	}
	tests := []struct {
		name, edit, with string
		line             int
		key, msg         string
	}{
		{"on a TUN", `mode = "netstack"`, `mode = "tun"`, 6, "proxy.socks5", `set interface.mode = "netstack"`},
		{"bad listen", `socks5 = "127.0.0.1:1080"`, `socks5 = "localhost:1080"`, 6, "proxy.socks5", "not an IP address"},
		{"no port", `http = "127.0.0.1:3128"`, `http = "127.0.0.1"`, 7, "proxy.http", "not host:port"},
		{"same address", `http = "127.0.0.1:3128"`, `http = "127.0.0.1:1080"`, 7, "proxy.http", "also proxy.socks5"},
		{"user without password", `dns = "10.0.0.2:53"`, "dns = \"10.0.0.2:53\"\nusername = \"u\"", 9, "proxy.username", "go together"},
		{"bad dns", `dns = "10.0.0.2:53"`, `dns = "10.0.0.2"`, 8, "proxy.dns", ""},
		{"bad from", `from = "tunnel"`, `from = "peer"`, 15, "forward[1].from", `"peer" is not "host"`},
		{"no connect", `connect = "db.example.org:22"`, ``, 10, "forward[0].connect", "missing"},
		{"connect port 0", `connect = "db.example.org:22"`, `connect = "db.example.org:0"`, 12, "forward[0].connect", "not a port"},
		{"unknown key", `listen = ":2222"`, `lisen = ":2222"`, 16, "lisen", "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(proxyGood, tt.edit, tt.with, 1)
			if src == proxyGood {
				t.Fatal("edit did not apply")
			}
			_, err := Parse("p.toml", []byte(src))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *config.Error", err)
			}
			if ce.Line != tt.line || !strings.Contains(ce.Key, tt.key) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %q (line %d, key %q); want line %d, key %q, message with %q", err, ce.Line, ce.Key, tt.line, tt.key, tt.msg)
			}
		})
	}
}

// TestUnprivilegedDefaults: without root, a netstack endpoint needs no
// privilege: IKE from any port (peers reach us on the NAT-T port), the
// control socket in the user's runtime directory, state in the user's
// state directory.
func TestUnprivilegedDefaults(t *testing.T) {
	defer func(f func() bool) { privileged = f }(privileged)
	privileged = func() bool { return false }
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(home, "run"))
	t.Setenv("XDG_STATE_HOME", "")
	c, err := Parse("u.toml", []byte(proxyGood))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Interface
	if *in.IKEPort != 0 || *in.NATTPort != DefaultNATTPort {
		t.Errorf("ports %d, %d; want any and %d", *in.IKEPort, *in.NATTPort, DefaultNATTPort)
	}
	if want := filepath.Join(home, "run", "oevpn", "oevpn0.sock"); in.Control != want {
		t.Errorf("control %s, want %s", in.Control, want)
	}
	if want := filepath.Join(home, ".local", "state", "oevpn"); in.StateDir != want {
		t.Errorf("state_dir %s, want %s", in.StateDir, want)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_STATE_HOME", filepath.Join(home, "st"))
	if c, err = Parse("u.toml", []byte(proxyGood)); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Interface.Control, filepath.Join(os.TempDir(), "oevpn-")) || c.Interface.StateDir != filepath.Join(home, "st", "oevpn") {
		t.Errorf("without XDG_RUNTIME_DIR: control %s, state %s", c.Interface.Control, c.Interface.StateDir)
	}
	// A TUN keeps the standard ports: it needs privileges anyway.
	tun := strings.Replace(strings.Split(proxyGood, "[proxy]")[0], `mode = "netstack"`, `mode = "tun"`, 1) + "\n[policy]\nblock = [\"192.0.2.0/24\"]\n"
	if c, err = Parse("t.toml", []byte(tun)); err != nil {
		t.Fatal(err)
	}
	if *c.Interface.IKEPort != DefaultIKEPort {
		t.Errorf("TUN IKE port %d", *c.Interface.IKEPort)
	}
}
