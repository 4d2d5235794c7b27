package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

const good = `
[interface]
mode = "netstack"
addresses = ["10.0.0.1/32"]
ike_port = 0
natt_port = 0

[[sa]]
peer = "127.0.0.1:4500"
local = ["10.0.0.1"]
remote = ["10.0.0.2"]
transform = "aes-gcm-128"
spi_out = 0x1001
spi_in = 0x2002
key_out = "ff0102030405060708090a0b0c0d0e0f10111213"
key_in = "00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13"
`

func TestParseGood(t *testing.T) {
	c, err := Parse("good.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Interface.Mode != ModeNetstack || c.Interface.MTU != DefaultMTU || *c.Interface.IKEPort != 0 || *c.Interface.Fwmark != DefaultFwmark {
		t.Fatalf("interface %+v", c.Interface)
	}
	sa := c.SAs[0]
	if sa.Transform != esp.AESGCM128 || sa.SPIIn != 0x2002 || len(sa.KeyIn) != 20 || sa.KeyIn[19] != 0x13 {
		t.Fatalf("sa %+v", sa)
	}
	if strings.Contains(sa.KeyIn.String(), "13") {
		t.Fatal("Key.String shows key material")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, edit, with string
		line             int
		key, msg         string
	}{
		{"syntax", `mode = "netstack"`, `mode = "netstack`, 3, "", ""},
		{"bad mode", `mode = "netstack"`, `mode = "kernel"`, 3, "interface.mode", "not a device mode"},
		{"unknown key", `ike_port = 0`, `ike_prot = 0`, 5, "interface.ike_prot", "unknown key"},
		{"bad transform", `transform = "aes-gcm-128"`, `transform = "des"`, 12, "transform", "unknown transform"},
		{"bad selector", `remote = ["10.0.0.2"]`, `remote = ["10.0.0.300"]`, 11, "remote", "invalid traffic selector"},
		{"bad peer", `peer = "127.0.0.1:4500"`, `peer = "127.0.0.1"`, 9, "peer", ""},
		{"reserved spi", `spi_in = 0x2002`, `spi_in = 7`, 14, "sa[0].spi_in", "reserved"},
		{"short key", `key_out = "ff0102030405060708090a0b0c0d0e0f10111213"`, `key_out = "0001"`, 15, "sa[0].key_out", "takes 20 octets"},
		{"bad hex", `key_out = "ff0102030405060708090a0b0c0d0e0f10111213"`, `key_out = "xyz"`, 15, "key_out", "hex"},
		{"missing local", `local = ["10.0.0.1"]`, ``, 8, "sa[0].local", "missing"},
		{"mtu", `mode = "netstack"`, "mode = \"netstack\"\nmtu = 100", 4, "interface.mtu", "outside"},
		{"one key both ways", `key_out = "ff01`, `key_out = "0001`, 16, "sa[0].key_in", "the same key as sa[0].key_out"},
		{"outside, netstack", `mode = "netstack"`, "mode = \"netstack\"\noutside = \"lo\"", 4, "interface.outside", "only a \"tun\" device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(good, tt.edit, tt.with, 1)
			if src == good {
				t.Fatal("edit did not apply")
			}
			_, err := Parse("f.toml", []byte(src))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *config.Error", err)
			}
			if ce.File != "f.toml" || ce.Line != tt.line || !strings.Contains(ce.Key, tt.key) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %q (line %d, key %q); want line %d, key %q, message with %q", err, ce.Line, ce.Key, tt.line, tt.key, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), "f.toml:") {
				t.Fatalf("error %q does not start with the file name", err)
			}
		})
	}
}

// TestKeyUsedTwice refuses a key that two SAs share: their sequence
// numbers, hence IVs and nonces, would coincide.
func TestKeyUsedTwice(t *testing.T) {
	second := strings.NewReplacer("spi_out = 0x1001", "spi_out = 0x3003", "spi_in = 0x2002", "spi_in = 0x4004",
		`key_in = "00:01`, `key_in = "ee:01`).Replace(good[strings.Index(good, "[[sa]]"):])
	_, err := Parse("f.toml", []byte(good+second))
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "sa[1].key_out" || ce.Line != 24 || !strings.Contains(err.Error(), "the same key as sa[0].key_out") {
		t.Fatalf("got %v (%+v)", err, ce)
	}
}

func TestDuplicateInboundSPI(t *testing.T) {
	src := good + strings.Replace(good[strings.Index(good, "[[sa]]"):], "spi_out = 0x1001", "spi_out = 0x3003", 1)
	_, err := Parse("f.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "sa[1].spi_in" || ce.Line != 23 {
		t.Fatalf("got %v (%+v)", err, ce)
	}
}

func TestLoadRefusesReadableKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "oevpn.toml")
	if err := os.WriteFile(p, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); !errors.Is(err, ErrInsecureFile) {
		t.Fatalf("mode 0644: %v", err)
	}
	os.Chmod(p, 0o600)
	if _, err := Load(p); err != nil {
		t.Fatalf("mode 0600: %v", err)
	}
}

func TestOpportunism(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "oe.pem")
	os.WriteFile(key, []byte(ed25519PEM), 0o600)
	c, err := Parse("f.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if o := c.OE; o.Auth != AuthNull || o.DNSSEC != "require" || o.Timeout != Duration(2*time.Second) || o.ShuntTTL != Duration(15*time.Minute) || o.Resolver == "" {
		t.Errorf("defaults: %+v", o)
	}
	c, err = Parse(filepath.Join(dir, "f.toml"), []byte(good+"[opportunism]\nresolver = \"192.0.2.53\"\nauth = \"pubkey\"\nprivate_key = \"oe.pem\"\nid = \"gw.example.org\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.OE.Resolver != "192.0.2.53:53" || c.OE.Signer == nil || c.OE.Identity.String() != "gw.example.org" {
		t.Errorf("parsed: %+v", c.OE)
	}
	for _, tt := range []struct{ body, key, msg string }{
		{`dnssec = "maybe"`, "opportunism.dnssec", "not one of"},
		{`auth = "psk"`, "opportunism.auth", "not one of"},
		{`auth = "pubkey"`, "opportunism.private_key", "missing"},
		{`private_key = "oe.pem"`, "opportunism.auth", "use auth"},
		{`resolver = "dns.example"`, "opportunism.resolver", "not an address"},
		{`timeout = "1ms"`, "opportunism.timeout", "shorter than"},
		{`trust_anchors = "/nonexistent"`, "opportunism.trust_anchors", "no such file"},
		{`dns_listen = "localhost"`, "opportunism.dns_listen", "not address:port"},
	} {
		_, err := Parse("f.toml", []byte(good+"[opportunism]\n"+tt.body+"\n"))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tt.key || ce.Line == 0 || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: got %v", tt.body, err)
		}
	}
}

func TestPolicyExceptions(t *testing.T) {
	src := good + `
[policy]
private = ["10.9.0.0/16"]
[[policy.exception]]
proto = "tcp"
port = "22"
class = "clear"
[[policy.exception]]
prefix = "10.9.1.1"
class = "block"
`
	c, err := Parse("f.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		dst   string
		proto uint8
		port  uint16
		want  policy.Class
	}{{"10.9.0.5", 6, 22, policy.ClassClear}, {"10.9.0.5", 6, 23, policy.ClassPrivate}, {"10.9.0.5", 17, 22, policy.ClassPrivate},
		{"10.9.1.1", 17, 53, policy.ClassBlock}, {"2001:db8::1", 6, 22, policy.ClassClear}} {
		p := ipview.Packet{Flow: ipview.Flow{Dst: netip.MustParseAddr(tt.dst), Proto: tt.proto, DstPort: tt.port}, HasPorts: true}
		if got := c.Policy.Classes.Lookup(&p); got != tt.want {
			t.Errorf("%s proto %d port %d: %v, want %v", tt.dst, tt.proto, tt.port, got, tt.want)
		}
	}
	for _, tt := range []struct{ body, key, msg string }{
		{"class = \"maybe\"", "policy.exception[0].class", "unknown connection class"},
		{"class = \"clear\"\nproto = \"gre2\"", "policy.exception[0].proto", "not tcp"},
		{"class = \"clear\"\nport = \"22\"", "policy.exception[0].port", "needs proto"},
		{"class = \"clear\"\nproto = \"udp\"\nport = \"9-1\"", "policy.exception[0].port", "not a port"},
		{"class = \"clear\"\nprefix = \"10.0.0.0/33\"", "policy.exception[0].prefix", "not a prefix"},
	} {
		_, err := Parse("f.toml", []byte(good+"[[policy.exception]]\n"+tt.body+"\n"))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tt.key || ce.Line < 17 || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%q: got %v (%+v)", tt.body, err, ce)
		}
	}
}

func TestAutoVPNConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "gw.key")
	os.WriteFile(key, []byte(ed25519PEM), 0o600)
	tun := strings.Replace(good, `mode = "netstack"`, `mode = "tun"`, 1)
	for _, tt := range []struct{ body, key, msg string }{
		{`protected = ["10.1.0.0/24"]`, "autovpn.certificate", "missing"},
		{"protected = [\"10.1.0.0/24\"]\ncertificate = \"x.crt\"", "autovpn.private_key", "missing"},
		{"protected = [\"10.1.0.0/24\"]\ncertificate = \"x.crt\"\nprivate_key = \"gw.key\"", "autovpn.certificate", "no such file"},
		{"protected = [\"10.1.0.0/24\"]\nmode = \"router\"", "autovpn.mode", "not gateway or host"},
		{`certificate = "x.crt"`, "autovpn.protected", "missing"},
	} {
		_, err := Parse(filepath.Join(dir, "f.toml"), []byte(tun+"[autovpn]\n"+tt.body+"\n"))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tt.key || ce.Line == 0 || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%q: got %v", tt.body, err)
		}
	}
	_, err := Parse("f.toml", []byte(good+"[autovpn]\nprotected = [\"10.1.0.0/24\"]\n"))
	if err == nil || !strings.Contains(err.Error(), "needs mode") {
		t.Errorf("AutoVPN in netstack mode: %v", err)
	}
}

func TestExampleConfigParses(t *testing.T) {
	data, err := os.ReadFile("../../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	// As it is, it must refuse to start: its peer has no secret.
	if _, err := Parse("config.example.toml", data); err == nil || !strings.Contains(err.Error(), "peer[0].psk") {
		t.Fatalf("the example without a psk: %v", err)
	}
	// With one filled in, it parses.
	data = bytes.Replace(data, []byte(`# psk = ""`), []byte(`psk = "a secret of the operator's own, long enough"`), 1)
	if _, err := Parse("config.example.toml", data); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("[interface]\nmode = 1\n[[sa]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "fuzz.toml" {
				t.Fatalf("error %v does not name the file", err)
			}
		}
	})
}

func TestLoadRefusesDevices(t *testing.T) {
	if _, err := Load("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("/dev/zero: %v", err)
	}
	src := good + "\n[[peer]]\naddress = \"192.0.2.9\"\nlocal = [\"10.0.0.1\"]\nremote = [\"10.0.0.9\"]\nauth = \"pubkey\"\nlocal_id = \"a\"\nprivate_key = \"/dev/zero\"\nremote_public_key = \"/dev/zero\"\n"
	if _, err := Parse("f.toml", []byte(src)); err == nil {
		t.Fatal("a device as a key file accepted")
	}
}

func TestOpportunisticPeerNamesReserved(t *testing.T) {
	src := good + "\n[[peer]]\nname = \"oe-out-192.0.2.9\"\naddress = \"192.0.2.9\"\nlocal = [\"10.0.0.1\"]\nremote = [\"10.0.0.9\"]\nauth = \"null\"\n"
	_, err := Parse("f.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "peer[0].name" || !strings.Contains(err.Error(), "opportunistic") {
		t.Fatalf("got %v", err)
	}
}

func TestPolicyClasses(t *testing.T) {
	c, err := Parse("f.toml", []byte(good+"\n[policy]\nblock = [\"198.51.100.0/24\"]\nprivate = [\"203.0.113.0/24\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Classes.ClassOf(netip.MustParseAddr("198.51.100.9")) != policy.ClassBlock ||
		c.Policy.Classes.ClassOf(netip.MustParseAddr("203.0.113.9")) != policy.ClassPrivate ||
		c.Policy.Classes.ClassOf(netip.MustParseAddr("192.0.2.1")) != policy.ClassClear {
		t.Fatal("classes not built from [policy]")
	}
	_, err = Parse("f.toml", []byte(good+"\n[policy]\nblock = [\"198.51.100.0/24\"]\nclear = [\"198.51.100.0/24\"]\n"))
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "in both") || ce.Line == 0 {
		t.Fatalf("a prefix in two classes: %v", err)
	}
}

// ed25519PEM is a throwaway test key.
const ed25519PEM = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIPhrJW0NNGy2XQGKT1YK6NUnPcFmolws3cqJugl/4zxF
-----END PRIVATE KEY-----
`

// TestRemoteIDDefaultsToAddress (issue 10, item 4): without remote_id the
// peer must prove it is its address, as config.example.toml says; with
// auth = "cert" and a ca, a certificate the CA issued for another identity
// must not do. AUTH_NULL peers prove nothing and get no default.
func TestRemoteIDDefaultsToAddress(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "host"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(priv)
	os.WriteFile(filepath.Join(dir, "host.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	os.WriteFile(filepath.Join(dir, "host.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	const peer = "\n[[peer]]\nname = \"gw\"\naddress = \"192.0.2.2\"\nlocal = [\"10.0.0.1\"]\nremote = [\"10.9.0.0/16\"]\n"
	const cert = "auth = \"cert\"\nprivate_key = \"host.key\"\ncertificate = \"host.crt\"\nca = \"host.crt\"\n"
	for _, tt := range []struct{ name, body, want string }{
		{"cert and ca, no remote_id", cert, "192.0.2.2"},
		{"cert and ca, remote_id", cert + "remote_id = \"gw.example.org\"\n", "gw.example.org"},
		{"psk, no remote_id", "auth = \"psk\"\npsk = \"0123456789abcdef\"\nlocal_id = \"192.0.2.1\"\n", "192.0.2.2"},
		{"null, no remote_id", "auth = \"null\"\n", ""},
	} {
		c, err := Parse(filepath.Join(dir, "f.toml"), []byte(good+peer+tt.body))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := c.Peers[0].RemoteIdentity
		if (tt.want == "" && got.Type != 0) || (tt.want != "" && got.String() != tt.want) {
			t.Errorf("%s: remote identity %v, want %q", tt.name, got, tt.want)
		}
	}
}

// TestControlSocket: the control socket is found from [interface] alone,
// in a file whose keys cannot be read and whose mode Load would refuse.
func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte(`[interface]
name = "oetest3"

[[peer]]
name = "x"
address = "192.0.2.1"
auth = "pubkey"
private_key = "/nonexistent/key.pem"
psk = "readable by all"
`), 0o644)
	if _, err := Load(p); err == nil {
		t.Fatal("Load accepted the file")
	}
	got, err := ControlSocket(p)
	if err != nil || got != DefaultControl("oetest3") {
		t.Errorf("ControlSocket = %q, %v; want %q", got, err, DefaultControl("oetest3"))
	}
	os.WriteFile(p, []byte("[interface]\ncontrol = \"/run/x/y.sock\"\n"), 0o644)
	if got, err := ControlSocket(p); err != nil || got != "/run/x/y.sock" {
		t.Errorf("ControlSocket with control = %q, %v", got, err)
	}
	os.WriteFile(p, []byte("[interface]\nname = 3\n"), 0o644)
	if _, err := ControlSocket(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("a broken file: %v", err)
	}
}
