//go:build linux

package lab

import (
	"bytes"

	"encoding/hex"

	"errors"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// strongSwan as an interop peer: one charon-systemd per namespace with the
// kernel-libipsec plugin, which does ESP in userspace over its own TUN device
// (ipsec0), so it needs no XFRM in the kernel. libipsec only does ESP in
// UDP/4500, hence encap = yes; it has no ESN. Its route to the remote traffic
// selector goes into table 220 with the local inner address as source, so
// traffic selectors must not cover the outer (IKE) addresses.

// SwanName is the name of the connection and of its one child in the
// generated swanctl.conf.
const SwanName = "rig"

// swanPlugins is charon's load list. kernel-libipsec comes before
// kernel-netlink: both provide the kernel-ipsec interface and the first one
// wins; kernel-netlink still does addresses and routes. openssl provides
// AES-GCM, ChaCha20-Poly1305, X25519 and Ed25519 (Debian's curve25519 and
// chapoly plugins are in libstrongswan-extra-plugins, which drags in udev and
// TPM libraries).
var swanPlugins = []string{
	"random", "nonce", "openssl", "pem", "pkcs1", "pkcs8", "pubkey", "x509",
	"aes", "sha1", "sha2", "hmac", "gcm", "kdf",
	"kernel-libipsec", "kernel-netlink", "socket-default", "vici",
}

// swanCritical are the plugins charon must not start without ("!" in the load
// list). Marking more would not work: "critical" means every feature of the
// plugin must load, and e.g. pem's DSA and kernel-netlink's kernel-ipsec
// feature do not.
var swanCritical = map[string]bool{"openssl": true, "kernel-libipsec": true, "socket-default": true, "vici": true}

// swanPluginDir is where Debian's packages put the plugins.
const swanPluginDir = "/usr/lib/ipsec/plugins"

// SwanConfig is one side of the connection "rig" with its child "rig"
// (IKEv2, tunnel mode, encap = yes, mobike = no). Empty optional fields get
// the defaults noted.
type SwanConfig struct {
	// LocalAddr and RemoteAddr are the outer (IKE) addresses. Empty means
	// any (%any); a responder may leave RemoteAddr empty.
	LocalAddr, RemoteAddr string
	// LocalID and RemoteID are the IKE identities, e.g. FQDNs. Empty means
	// strongSwan's default: the local address, and any remote identity.
	// Pubkey auth needs both.
	LocalID, RemoteID string
	// Auth is "psk", "pubkey" (raw public keys) or "cert" (X.509), for
	// both directions.
	Auth string
	// PSK is the pre-shared key for Auth "psk", used verbatim (written hex
	// encoded, so any bytes work).
	PSK string
	// LocalKeyPEM is this side's private key for Auth "pubkey": PKCS#8
	// ("PRIVATE KEY", as from GenerateKey), SEC 1 ("EC PRIVATE KEY") or
	// PKCS#1 ("RSA PRIVATE KEY") PEM. Its public key is derived from it.
	LocalKeyPEM []byte
	// RemotePubPEM is the peer's public key ("PUBLIC KEY" PEM) for Auth
	// "pubkey".
	RemotePubPEM []byte
	// LocalCertPEM and RemoteCertPEM are this side's and the peer's X.509
	// certificates for Auth "cert" (self-signed ones work: the peer's is
	// pinned); the private key is LocalKeyPEM.
	LocalCertPEM, RemoteCertPEM []byte
	// CACertPEMs are CA certificates (one PEM each) strongSwan trusts, for
	// Auth "cert": with them RemoteCertPEM may be empty, and any
	// certificate they (or an intermediate the peer sends) issued for
	// RemoteID is accepted.
	CACertPEMs [][]byte
	// SendCert is the local send_cert: "always", "ifasked" (strongSwan's
	// default, which sends the certificate only after a CERTREQ) or
	// "never". Empty: "always".
	SendCert string
	// Proposals and ESPProposals are swanctl proposal lists. Defaults
	// "aes128gcm16-prfsha256-x25519" and "aes128gcm16".
	Proposals, ESPProposals string
	// LocalTS and RemoteTS are the child's traffic selectors, e.g.
	// "10.1.0.0/24". Empty means strongSwan's default (dynamic), which
	// kernel-libipsec refuses, so set both.
	LocalTS, RemoteTS string
	// RekeyTime (IKE SA, default "4h"), ChildRekeyTime (default "1h") and
	// DPDDelay (default "0s", i.e. off), in swanctl syntax.
	RekeyTime, ChildRekeyTime, DPDDelay string
	// StartAction is the child's start_action: "none" (default), "start"
	// or "trap". DPDAction is its dpd_action: "clear" (default), "trap"
	// or "restart".
	StartAction, DPDAction string
	// MoreChildren are further children of the connection, with the
	// first child's settings but their own selectors.
	MoreChildren []SwanChild
	// Unique is the connection's uniqueness policy: "no" (the default),
	// "never", "keep" or "replace".
	Unique string
	// Charon are more settings of the charon section of strongswan.conf,
	// one "key = value" each, e.g. "close_ike_on_child_failure = yes".
	Charon []string
}

// SwanChild is one more child of the connection.
type SwanChild struct {
	Name, LocalTS, RemoteTS string
}

// StrongSwan is one charon-systemd instance running in a namespace, with its
// own strongswan.conf, swanctl directory, vici socket and log, all in Dir (a
// t.TempDir()).
type StrongSwan struct {
	NS  *Netns
	Dir string
	Cfg SwanConfig

	t       testing.TB
	proc    *Proc
	conf    string // Dir/strongswan.conf
	swanDir string // Dir/swanctl
	logPath string // Dir/charon.log
	exited  chan struct{}
	stop    sync.Mutex
}

// StartStrongSwan writes the configuration for cfg, starts charon-systemd in
// ns, waits until its vici socket answers and loads the configuration
// (swanctl --load-all). The test's cleanup stops charon and, if the test
// failed, logs charon's log. Any error fails the test; missing strongSwan
// plugins skip it (or fail it when OEVPN_LAB=required).
func StartStrongSwan(t testing.TB, ns *Netns, cfg SwanConfig) *StrongSwan {
	t.Helper()
	requireSwanPlugins(t)
	charon, err := exec.LookPath("charon-systemd")
	if err != nil {
		t.Fatalf("strongSwan: %v", err)
	}
	s := &StrongSwan{NS: ns, Dir: t.TempDir(), Cfg: cfg, t: t, exited: make(chan struct{})}
	// A unix socket path has at most 107 bytes.
	if len(s.Dir) > 80 {
		d, err := os.MkdirTemp("", "oesw")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		s.Dir = d
	}
	s.conf = filepath.Join(s.Dir, "strongswan.conf")
	s.swanDir = filepath.Join(s.Dir, "swanctl")
	s.logPath = filepath.Join(s.Dir, "charon.log")
	// swanctl --load-all complains about every missing directory.
	for _, d := range []string{"conf.d", "private", "pkcs8", "pkcs12", "pubkey", "rsa", "ecdsa", "bliss",
		"x509", "x509ca", "x509aa", "x509ac", "x509crl", "x509ocsp"} {
		if err := os.MkdirAll(filepath.Join(s.swanDir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.writeConfig(); err != nil {
		t.Fatalf("strongSwan in %s: %v", ns.Name, err)
	}

	s.proc = ns.Start("env", "-u", "NOTIFY_SOCKET", "STRONGSWAN_CONF="+s.conf, charon)
	go func() {
		s.proc.Wait(1 << 62)
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("strongSwan in %s (%s):\n%s", ns.Name, s.Dir, s.Log())
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := s.Swanctl("--stats")
		if err == nil {
			break
		}
		select {
		case <-s.exited:
			t.Fatalf("charon in %s exited at start:\n%s", ns.Name, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("charon in %s: vici not ready after 10 s: %v: %s\n%s", ns.Name, err, out, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := s.Swanctl("--load-all", "--noprompt"); err != nil || strings.Contains(out, "failed") {
		t.Fatalf("strongSwan in %s: swanctl --load-all: %v\n%s", ns.Name, err, out)
	}
	return s
}

// requireSwanPlugins skips the test (fails it when OEVPN_LAB=required) when
// a plugin of the load list is not installed.
func requireSwanPlugins(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(swanPluginDir); err != nil {
		return // another layout: charon reports missing critical plugins
	}
	var missing []string
	for _, p := range swanPlugins {
		if _, err := os.Stat(filepath.Join(swanPluginDir, "libstrongswan-"+p+".so")); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		lacking(t, "lab test needs the strongSwan plugins "+strings.Join(missing, ", ")+" (run `make lab-deps`)")
	}
}

// writeConfig writes Dir/strongswan.conf, Dir/swanctl/swanctl.conf and, for
// pubkey auth, the key files.
func (s *StrongSwan) writeConfig() error {
	if err := s.writeCharonConf(); err != nil {
		return err
	}
	f, err := s.writeCredentials()
	if err != nil {
		return err
	}
	return s.writeSwanctlConf(f)
}

// swanFiles names the credential files written for swanctl.conf.
type swanFiles struct{ localPub, remotePub, localCert, remoteCert string }

// writeCharonConf writes strongswan.conf: the plugins, ports, the vici
// socket and the log of this instance.
func (s *StrongSwan) writeCharonConf() error {
	for _, p := range []string{s.Dir, s.logPath} {
		if strings.ContainsAny(p, "\"\\\n") {
			return fmt.Errorf("unusable path %q", p)
		}
	}
	var load []string
	for _, p := range swanPlugins {
		if swanCritical[p] {
			p += "!"
		}
		load = append(load, p)
	}
	extra := ""
	for _, kv := range s.Cfg.Charon {
		extra += "    " + kv + "\n"
	}
	sconf := fmt.Sprintf(`# strongswan.conf for one charon-systemd instance (internal/lab)
charon {
    load = %[1]s
    port = 500
    port_nat_t = 4500
    install_routes = yes
%[4]s    plugins {
        vici {
            socket = "unix://%[2]s/charon.vici"
        }
        kernel-libipsec {
            allow_peer_ts = no
        }
    }
    filelog {
        main {
            path = "%[3]s"
            time_format = %%H:%%M:%%S
            flush_line = yes
            default = 1
            ike = 2
            cfg = 2
        }
    }
    journal {
        default = -1
    }
}
swanctl {
    socket = "unix://%[2]s/charon.vici"
    load = random nonce openssl pem pkcs1 pkcs8 pubkey x509
}
`, strings.Join(load, " "), s.Dir, s.logPath, extra)
	return os.WriteFile(s.conf, []byte(sconf), 0o600)
}

// writeCredentials writes the keys and certificates of Cfg.Auth where
// swanctl loads them.
func (s *StrongSwan) writeCredentials() (swanFiles, error) {
	c := s.Cfg
	var f swanFiles
	switch c.Auth {
	case "psk":
		if c.PSK == "" {
			return f, errors.New("auth psk without PSK")
		}
	case "pubkey":
		if c.LocalID == "" || c.RemoteID == "" {
			return f, errors.New("auth pubkey needs LocalID and RemoteID (they become the raw keys' subjects)")
		}
		if len(c.LocalKeyPEM) == 0 || len(c.RemotePubPEM) == 0 {
			return f, errors.New("auth pubkey needs LocalKeyPEM and RemotePubPEM")
		}
		pub, err := publicPEM(c.LocalKeyPEM)
		if err != nil {
			return f, fmt.Errorf("LocalKeyPEM: %v", err)
		}
		files := map[string][]byte{
			"private/local.pem": c.LocalKeyPEM,
			"pubkey/local.pub":  pub,
			"pubkey/remote.pub": c.RemotePubPEM,
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(s.swanDir, name), data, 0o600); err != nil {
				return f, err
			}
		}
		f.localPub, f.remotePub = "local.pub", "remote.pub"
	case "cert":
		// X.509 certificates (self-signed ones pinned as the peer's).
		if len(c.LocalKeyPEM) == 0 || len(c.LocalCertPEM) == 0 || len(c.RemoteCertPEM)+len(c.CACertPEMs) == 0 {
			return f, errors.New("auth cert needs LocalKeyPEM, LocalCertPEM and RemoteCertPEM or CACertPEMs")
		}
		files := map[string][]byte{
			"private/local.pem": c.LocalKeyPEM,
			"x509/local.crt":    c.LocalCertPEM,
		}
		f.localCert = "local.crt"
		if len(c.RemoteCertPEM) > 0 {
			files["x509/remote.crt"] = c.RemoteCertPEM
			f.remoteCert = "remote.crt"
		}
		for i, ca := range c.CACertPEMs {
			files[fmt.Sprintf("x509ca/ca%d.crt", i)] = ca
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(s.swanDir, name), data, 0o600); err != nil {
				return f, err
			}
		}
	default:
		return f, fmt.Errorf("auth %q: want psk, pubkey or cert", c.Auth)
	}
	return f, nil
}

// writeSwanctlConf writes swanctl.conf: the connection, its children and
// the PSK.
func (s *StrongSwan) writeSwanctlConf(f swanFiles) error {
	c := s.Cfg
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	var b strings.Builder
	line := func(indent int, k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s%s = %s\n", strings.Repeat("    ", indent), k, v)
		}
	}
	quote := func(v string) string {
		if v == "" {
			return ""
		}
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
	}
	authMethod := c.Auth
	if authMethod == "cert" {
		authMethod = "pubkey"
	}

	b.WriteString("# swanctl.conf (internal/lab)\nconnections {\n    " + SwanName + " {\n")
	line(2, "version", "2")
	line(2, "local_addrs", c.LocalAddr)
	line(2, "remote_addrs", c.RemoteAddr)
	line(2, "encap", "yes")
	line(2, "mobike", "no")
	line(2, "proposals", def(c.Proposals, "aes128gcm16-prfsha256-x25519"))
	line(2, "dpd_delay", def(c.DPDDelay, "0s"))
	line(2, "unique", c.Unique)
	if f.localCert != "" {
		line(2, "send_cert", def(c.SendCert, "always"))
	}
	line(2, "rekey_time", def(c.RekeyTime, "4h"))
	if c.RekeyTime != "" {
		// Short test lifetimes: a wide margin before the hard expiry and
		// little jitter, so strongSwan rekeys instead of expiring.
		line(2, "over_time", "30s")
		line(2, "rand_time", "1s")
	}
	b.WriteString("        local {\n")
	line(3, "auth", authMethod)
	line(3, "id", quote(c.LocalID))
	line(3, "pubkeys", f.localPub)
	line(3, "certs", f.localCert)
	b.WriteString("        }\n        remote {\n")
	line(3, "auth", authMethod)
	line(3, "id", quote(c.RemoteID))
	line(3, "pubkeys", f.remotePub)
	line(3, "certs", f.remoteCert)
	b.WriteString("        }\n        children {\n")
	for _, ch := range append([]SwanChild{{SwanName, c.LocalTS, c.RemoteTS}}, c.MoreChildren...) {
		b.WriteString("            " + ch.Name + " {\n")
		line(4, "local_ts", ch.LocalTS)
		line(4, "remote_ts", ch.RemoteTS)
		line(4, "esp_proposals", def(c.ESPProposals, "aes128gcm16"))
		line(4, "mode", "tunnel")
		line(4, "start_action", def(c.StartAction, "none"))
		line(4, "dpd_action", c.DPDAction)
		line(4, "rekey_time", def(c.ChildRekeyTime, "1h"))
		if c.ChildRekeyTime != "" {
			line(4, "life_time", "60s")
			line(4, "rand_time", "1s")
		}
		b.WriteString("            }\n")
	}
	b.WriteString("        }\n    }\n}\nsecrets {\n")
	if c.Auth == "psk" {
		b.WriteString("    ike-" + SwanName + " {\n")
		line(2, "id-local", quote(c.LocalID))
		line(2, "id-remote", quote(c.RemoteID))
		line(2, "secret", "0x"+hex.EncodeToString([]byte(c.PSK)))
		b.WriteString("    }\n")
	}
	b.WriteString("}\n")
	return os.WriteFile(filepath.Join(s.swanDir, "swanctl.conf"), []byte(b.String()), 0o600)
}

// Swanctl runs swanctl in the namespace against this instance (its
// strongswan.conf names the vici socket; SWANCTL_DIR is Dir/swanctl) and
// returns the combined output. It gives up after 60 s.
func (s *StrongSwan) Swanctl(args ...string) (string, error) {
	cmd := s.NS.Cmd(append([]string{"env", "STRONGSWAN_CONF=" + s.conf, "SWANCTL_DIR=" + s.swanDir, "swanctl"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		err = fmt.Errorf("swanctl %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), err
}

// Initiate brings up the child (and its IKE SA) and waits until it is
// installed or has failed, at most 15 s. The error includes swanctl's output.
func (s *StrongSwan) Initiate(child string) error {
	out, err := s.Swanctl("--initiate", "--child", child, "--timeout", "15")
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// ListSAs returns the output of swanctl --list-sas (or the error).
func (s *StrongSwan) ListSAs() string {
	out, err := s.Swanctl("--list-sas")
	if err != nil {
		return fmt.Sprintf("%s%v", out, err)
	}
	return out
}

// WaitInstalled waits until --list-sas shows an INSTALLED child SA, e.g. on
// a responder, at most timeout.
func (s *StrongSwan) WaitInstalled(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out := s.ListSAs()
		if strings.Contains(out, "INSTALLED") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("strongSwan in %s: no INSTALLED child SA after %v:\n%s", s.NS.Name, timeout, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns charon's log file, followed by what charon printed on stdout
// and stderr, if anything.
func (s *StrongSwan) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		b = []byte(err.Error() + "\n")
	}
	if out := s.proc.Output(); out != "" {
		b = append(b, "--- charon stdout/stderr:\n"+out...)
	}
	return string(b)
}

// Stop stops charon with SIGTERM (it deletes its SAs and tells the peer),
// and after 10 s with SIGKILL, and waits for it to exit. Calling it again,
// or after Kill, does nothing.
func (s *StrongSwan) Stop() { s.halt(syscall.SIGTERM) }

// Kill kills charon with SIGKILL (it tells the peer nothing) and waits for it
// to exit, e.g. to test dead-peer detection.
func (s *StrongSwan) Kill() { s.halt(syscall.SIGKILL) }

func (s *StrongSwan) halt(sig syscall.Signal) {
	s.stop.Lock()
	defer s.stop.Unlock()
	select {
	case <-s.exited:
		return
	default:
	}
	s.proc.Signal(sig)
	select {
	case <-s.exited:
		return
	case <-time.After(10 * time.Second):
	}
	s.t.Logf("strongSwan in %s did not exit on %v; killing it", s.NS.Name, sig)
	s.proc.Signal(syscall.SIGKILL)
	<-s.exited
}
