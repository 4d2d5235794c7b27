package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI("version")
	if code != 0 || !strings.HasPrefix(out, "oevpn ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	if code, _, errOut := runCLI(); code != 2 || !strings.Contains(errOut, "Usage") {
		t.Fatalf("no arguments: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI("frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI("up"); code != 2 || !strings.Contains(errOut, "oevpn up -c FILE") {
		t.Fatalf("up without -c: %d %q", code, errOut)
	}
}

// TestUpBadConfig checks that a broken configuration stops oevpn up with a
// message naming the file, the line and the key.
func TestUpBadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(p, []byte("[interface]\nmode = \"netstack\"\naddresses = [\"10.0.0.1/32\"]\nmtu = 70000\n"), 0o600)
	code, _, errOut := runCLI("up", "-c", p)
	if code != 1 || !strings.Contains(errOut, p+":4: interface.mtu: 70000 is outside") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runCLI("up", "-c", filepath.Join(t.TempDir(), "missing.toml")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing file: exit %d, stderr %q", code, errOut)
	}
	// What shows only on this host: before any device is created.
	os.WriteFile(p, []byte("[interface]\nname = \"oetest0\"\noutside = \"no-such-if0\"\n[policy]\nblock = [\"192.0.2.0/24\"]\n"), 0o600)
	code, _, errOut = runCLI("up", "-c", p)
	if code != 1 || !strings.Contains(errOut, p+`:3: interface.outside: no interface "no-such-if0" on this host`) {
		t.Fatalf("missing outside interface: exit %d, stderr %q", code, errOut)
	}
	// The control commands name a broken configuration instead of
	// guessing the socket.
	if code, _, errOut := runCLI("status", "-c", filepath.Join(t.TempDir(), "missing.toml")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("status with a missing configuration: exit %d, stderr %q", code, errOut)
	}
}

// TestDemo runs the whole demo and checks each part's key lines, and
// that -h lists the parts and -part runs one.
func TestDemo(t *testing.T) {
	code, out, errOut := runCLI("demo", "-size", "4")
	if code != 0 {
		t.Fatalf("demo failed (%d): %s\n%s", code, errOut, out)
	}
	for _, want := range []string{
		// (a) discovery in signed DNS, IKE, the held first packet
		"check 198.51.100.2 before: pending",
		"IPSECKEY at 2.100.51.198.in-addr.arpa. found: gateway 198.51.100.2, Ed25519 key",
		"DNSSEC validated=true (A's own validation from trust anchor 51.198.in-addr.arpa. DS",
		"IKEv2: IKE SA AES_GCM_16-256", "A authenticates with null",
		"ESP: Child SA AES_GCM_16-256", "selectors [198.51.100.1] ⇄ [198.51.100.2]",
		"first packet (SYN) held by A, delivered to B",
		"check 198.51.100.2 after: encrypted-and-authenticated (IKE SA authenticated by signature",
		// (b) clear under private-or-clear, refused under private
		"198.51.100.9 (private-or-clear): DNS says dnsoe: no opportunistic IPsec record (validated=true) → sent in the clear",
		`which answered "clear host 198.51.100.9 got`,
		"check 198.51.100.9: clear (policy: private-or-clear",
		"198.51.100.200 (private): DNS says dnsoe: no opportunistic IPsec record (validated=true) → refused: Node.DialContext returned tunnel.ErrBlocked",
		"check 198.51.100.200: blocked (policy: private",
		"none to 198.51.100.200",
		// (c) AutoVPN
		"probe complete after",
		"G1's trust store: CN=G2.autovpn.demo,O=oevpn demo G2 is unverified (leap of faith",
		"G2's trust store: CN=G1.autovpn.demo,O=oevpn demo G1 is unverified (leap of faith",
		"G2 spent the nonce", "H1 → H2 TCP through the gateways' ESP: echo OK",
		"CN=G2.autovpn.demo,O=oevpn demo G2 is now trusted",
		// (d) HTTP by name through SOCKS5
		"GET http://web.demo.test/ via socks5h", "resolved by A's resolver to 198.51.100.2): 200 OK",
		"| <h1>served on B's userspace stack</h1>",
		"GET http://secret.demo.test/ (198.51.100.200, private, no key): refused by A's proxy: SOCKS5 reply 0x02",
		// bulk, and the wire
		"4 MiB arrived intact (SHA-256 matches)", "Gbit/s",
		"spi=", "AutoVPN probe", " ESP; plaintext marker", "seen 0 times",
		"demo OK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI("demo", "-h")
	for _, p := range demoParts {
		if !strings.Contains(out, p.name) || !strings.Contains(out, p.title) {
			t.Errorf("demo -h does not list part %s: %d\n%s", p.name, code, out)
		}
	}
	code, out, errOut = runCLI("demo", "-part", "policy")
	if code != 0 || !strings.Contains(out, "(b) ") || strings.Contains(out, "(a) ") || !strings.Contains(out, "demo OK") {
		t.Errorf("demo -part policy: %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut := runCLI("demo", "-part", "nosuch"); code == 0 || !strings.Contains(errOut, `no part "nosuch"`) {
		t.Errorf("demo -part nosuch: %d %s", code, errOut)
	}
}

func TestKeygenAndDNSRecords(t *testing.T) {
	for _, kind := range []string{"ed25519", "ecdsa", "rsa"} {
		p := filepath.Join(t.TempDir(), "key.pem")
		code, out, errOut := runCLI("keygen", "-t", kind, "-o", p)
		if code != 0 || !strings.Contains(out, "BEGIN PUBLIC KEY") {
			t.Fatalf("keygen %s: %d %s %s", kind, code, out, errOut)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %v", fi.Mode())
		}
		if code, _, errOut := runCLI("keygen", "-o", p); code != 1 || !strings.Contains(errOut, "exists") {
			t.Fatalf("keygen overwrote: %d %s", code, errOut)
		}
		code, out, errOut = runCLI("dns-records", "-k", p, "-gateway", "198.51.100.1", "192.0.2.7")
		if code != 0 || !strings.Contains(out, "7.2.0.192.in-addr.arpa. 3600 IN IPSECKEY 10 1 ") || !strings.Contains(out, " IN KEY 16896 4 ") {
			t.Fatalf("dns-records %s: %d\n%s%s", kind, code, out, errOut)
		}
		if (kind == "rsa") != strings.Contains(out, "X-IPsec-Server(10)=198.51.100.1 ") {
			t.Fatalf("dns-records %s TXT:\n%s", kind, out)
		}
	}
	if code, _, _ := runCLI("dns-records", "-k", "/nonexistent", "192.0.2.7"); code != 1 {
		t.Fatal("missing key file accepted")
	}
}
