//go:build linux

package main

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/lab"
	"github.com/oevpn/oevpn/tunnel"
)

// The interop lab: oevpn in one namespace on a TUN device, strongSwan with
// kernel-libipsec in another, joined by a veth. Inner addresses sit on lo
// (strongSwan refuses host-to-host on the IKE addresses).
const (
	ioOuterO, ioOuterS = "192.0.2.1", "192.0.2.2"
	ioInnerO, ioInnerS = "10.1.0.1", "10.2.0.1"
	ioNetO, ioNetS     = "10.1.0.0/24", "10.2.0.0/24"
	ioIDO, ioIDS       = "oevpn.lab.test", "sw.lab.test"
	ioPSK              = "interop-psk-0123456789abcdef"
)

type interopLab struct {
	o, s *lab.Netns
	dir  string
}

func newInteropLab(t *testing.T) *interopLab {
	t.Helper()
	l := &interopLab{o: lab.NewNetns(t), s: lab.NewNetns(t), dir: t.TempDir()}
	vo, vs := lab.Veth(t, l.o, l.s)
	l.o.Run("ip", "addr", "add", ioOuterO+"/24", "dev", vo)
	l.s.Run("ip", "addr", "add", ioOuterS+"/24", "dev", vs)
	l.o.Run("ip", "addr", "add", ioInnerO+"/32", "dev", "lo")
	l.s.Run("ip", "addr", "add", ioInnerS+"/32", "dev", "lo")
	return l
}

type interopCase struct {
	name       string
	extra      string // more [[peer]] lines
	teardown   string // "sigterm" (default), "down" (oevpn down), "swan" (strongSwan deletes)
	auth       string // psk, ed25519, ecdsa, null
	ikeProps   string // oevpn's and strongSwan's (strongSwan syntax)
	espProps   string
	swanStarts bool
	// For auth "ca": strongSwan's send_cert, and whether oevpn's
	// certificate comes from an intermediate CA (sent as a chain).
	swSendCert string
	chain      bool
	// remotes, if set, are oevpn's remote selectors (default ioNetS).
	remotes []string
}

// startOevpn writes a configuration for the case and starts the binary.
func (l *interopLab) startOevpn(t *testing.T, c interopCase, keyFile, peerPub string, start string) (*lab.Proc, string) {
	t.Helper()
	return l.startOevpnExtra(t, c, keyFile, peerPub, start, "")
}

// startOevpnExtra is startOevpn with extra [[peer]] lines.
func (l *interopLab) startOevpnExtra(t *testing.T, c interopCase, keyFile, peerPub string, start, extra string) (*lab.Proc, string) {
	t.Helper()
	auth := "auth = \"psk\"\npsk = \"" + ioPSK + "\""
	switch c.auth {
	case "ed25519", "ecdsa", "rsa-pkcs1":
		auth = fmt.Sprintf("auth = \"pubkey\"\nprivate_key = %q\nremote_public_key = %q", keyFile, peerPub)
	case "cert":
		// keyFile holds our key, peerPub names "ours.crt|theirs.crt".
		ours, theirs, _ := strings.Cut(peerPub, "|")
		auth = fmt.Sprintf("auth = \"cert\"\nprivate_key = %q\ncertificate = %q\nremote_certificate = %q", keyFile, ours, theirs)
	case "ca":
		// keyFile holds our key, peerPub names "ours.crt|ca.crt".
		ours, ca, _ := strings.Cut(peerPub, "|")
		auth = fmt.Sprintf("auth = \"cert\"\nprivate_key = %q\ncertificate = %q\nca = %q", keyFile, ours, ca)
	case "null":
		auth = `auth = "null"`
	}
	remotes := fmt.Sprintf("%q", ioNetS)
	if len(c.remotes) > 0 {
		remotes = `"` + strings.Join(c.remotes, `", "`) + `"`
	}
	props := ""
	if c.ikeProps != "" {
		props += fmt.Sprintf("ike_proposals = %q\n", c.ikeProps)
	}
	if c.espProps != "" {
		props += fmt.Sprintf("esp_proposals = %q\n", c.espProps)
	}
	cfg := fmt.Sprintf(`
[interface]
mode = "tun"
name = %q
log_level = "debug"

[[peer]]
name = "sw"
address = %q
local_id = %q
remote_id = %q
%s
%s
local = [%q]
remote = [%s]
start = %q
%s
`, lab.Unique("ti"), ioOuterS, ioIDO, ioIDS, auth, props, ioInnerO, remotes, start, extra)
	path := filepath.Join(l.dir, lab.Unique("cfg")+".toml")
	return runOevpn(t, l.o, "oevpn", path, cfg), path
}

// labStatus is `oevpn status --json`, with the IKE SAs of every peer in
// one list, as the lab tests look at them.
type labStatus struct {
	tunnel.Status
	IKESAs []labIKESA
	Static []tunnel.ChildSAStatus
}

// labIKESA is an IKE SA with its peer's name and its Child SAs'
// selectors as one string each ("[10.0.0.1 10.0.0.2]").
type labIKESA struct {
	tunnel.IKESAStatus
	Peer       string
	Algorithms string
	Children   []labChild
}

type labChild struct {
	tunnel.ChildSAStatus
	Local, Remote string
}

// oevpnStatus runs `oevpn status --json` against the endpoint.
func oevpnStatus(t *testing.T, cfg string) labStatus {
	t.Helper()
	out, err := exec.Command(oevpnBinary(t), "status", "-c", cfg, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("oevpn status: %v\n%s", err, out)
	}
	var st labStatus
	if err := json.Unmarshal(out, &st.Status); err != nil {
		t.Fatalf("oevpn status --json: %v\n%s", err, out)
	}
	st.Static = st.StaticSAs
	for _, p := range st.Peers {
		for _, sa := range p.IKESAs {
			ls := labIKESA{IKESAStatus: sa, Peer: p.Name, Algorithms: sa.Suite}
			for _, c := range sa.ChildSAs {
				ls.Children = append(ls.Children, labChild{ChildSAStatus: c,
					Local: "[" + strings.Join(c.LocalTS, " ") + "]", Remote: "[" + strings.Join(c.RemoteTS, " ") + "]"})
			}
			st.IKESAs = append(st.IKESAs, ls)
		}
	}
	return st
}

func TestLabInteropStrongSwan(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	l := newInteropLab(t)
	// The matrix of issue 3: every auth method, both directions, the
	// default proposal, ChaCha20-Poly1305 and the legacy CBC suite.
	proposals := []struct{ name, ike, esp string }{
		{"default", "", ""},
		{"chacha20poly1305", "chacha20poly1305-prfsha256-x25519", "chacha20poly1305"},
		{"aes256-sha256-modp2048", "aes256-sha256-prfsha256-modp2048", "aes256-sha256"},
	}
	var cases []interopCase
	for _, auth := range []string{"psk", "ed25519", "ecdsa", "cert"} {
		for _, pr := range proposals {
			for _, swanStarts := range []bool{false, true} {
				dir := "oevpn-initiates"
				if swanStarts {
					dir = "strongswan-initiates"
				}
				cases = append(cases, interopCase{name: auth + "/" + pr.name + "/" + dir, auth: auth,
					ikeProps: pr.ike, espProps: pr.esp, swanStarts: swanStarts})
			}
		}
	}
	cases = append(cases,
		interopCase{name: "psk/oevpn-down", auth: "psk", teardown: "down"},
		interopCase{name: "psk/strongswan-deletes", auth: "psk", teardown: "swan"},
		interopCase{name: "cert/ike-fragmentation", auth: "cert", extra: "fragment_size = 300"},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { l.run(t, c) })
	}
}

func (l *interopLab) run(t *testing.T, c interopCase) {
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO, Proposals: c.ikeProps, ESPProposals: c.espProps}
	if c.ikeProps == "" {
		// oevpn keeps its default proposals; strongSwan is set to the
		// default suite of issue 3 (AES-GCM-16-256, X25519, PRF SHA2-256).
		sc.Proposals, sc.ESPProposals = "aes256gcm16-prfsha256-x25519", "aes256gcm16"
	}
	var keyFile, pubFile string
	if c.auth == "ed25519" || c.auth == "ecdsa" || c.auth == "rsa-pkcs1" {
		kind := strings.TrimSuffix(c.auth, "-pkcs1")
		oPriv, oPub := lab.GenerateKey(t, kind)
		sPriv, sPub := lab.GenerateKey(t, kind)
		if c.auth == "rsa-pkcs1" {
			// "RSA PRIVATE KEY", as strongSwan's pki --gen and openssl
			// genrsa write, on both sides.
			oPriv, sPriv = pkcs1PEM(t, oPriv), pkcs1PEM(t, sPriv)
		}
		sc.Auth, sc.LocalKeyPEM, sc.RemotePubPEM = "pubkey", sPriv, oPub
		keyFile = filepath.Join(l.dir, lab.Unique("key")+".pem")
		pubFile = filepath.Join(l.dir, lab.Unique("pub")+".pem")
		os.WriteFile(keyFile, oPriv, 0o600)
		os.WriteFile(pubFile, sPub, 0o644)
	}
	if c.auth == "cert" {
		oKey, oCert := lab.GenerateCert(t, ioIDO)
		sKey, sCert := lab.GenerateCert(t, ioIDS)
		sc.Auth, sc.LocalKeyPEM, sc.LocalCertPEM, sc.RemoteCertPEM = "cert", sKey, sCert, oCert
		keyFile = filepath.Join(l.dir, lab.Unique("key")+".pem")
		ours := filepath.Join(l.dir, lab.Unique("crt")+".pem")
		theirs := filepath.Join(l.dir, lab.Unique("crt")+".pem")
		os.WriteFile(keyFile, oKey, 0o600)
		os.WriteFile(ours, oCert, 0o644)
		os.WriteFile(theirs, sCert, 0o644)
		pubFile = ours + "|" + theirs
	}
	if c.auth == "ca" {
		// Both certificates from one root CA, which each side trusts;
		// nothing pinned.
		root := lab.NewCA(t, "oevpn lab root", nil)
		issuer, chain := root, []byte(nil)
		if c.chain {
			issuer = lab.NewCA(t, "oevpn lab intermediate", root)
			chain = issuer.PEM
		}
		oKey, oCert := issuer.Issue(t, ioIDO, time.Time{})
		sKey, sCert := root.Issue(t, ioIDS, time.Time{})
		sc.Auth, sc.LocalKeyPEM, sc.LocalCertPEM, sc.CACertPEMs, sc.SendCert = "cert", sKey, sCert, [][]byte{root.PEM}, c.swSendCert
		keyFile = filepath.Join(l.dir, lab.Unique("key")+".pem")
		ours := filepath.Join(l.dir, lab.Unique("crt")+".pem")
		ca := filepath.Join(l.dir, lab.Unique("ca")+".pem")
		os.WriteFile(keyFile, oKey, 0o600)
		os.WriteFile(ours, append(oCert, chain...), 0o644)
		os.WriteFile(ca, root.PEM, 0o644)
		pubFile = ours + "|" + ca
	}
	sw := lab.StartStrongSwan(t, l.s, sc)
	start := "start"
	if c.swanStarts {
		start = "none"
	}
	p, cfgPath := l.startOevpnExtra(t, c, keyFile, pubFile, start, c.extra)
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	if c.swanStarts {
		if err := sw.Initiate(lab.SwanName); err != nil {
			t.Fatalf("strongSwan initiate: %v", err)
		}
	}
	if err := p.WaitFor("Child SA installed", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := sw.WaitInstalled(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if c.extra == "fragment_size = 300" && !strings.Contains(sw.Log(), "received fragment #") {
		t.Fatalf("strongSwan received no IKE fragments:\n%s", sw.Log())
	}
	l.o.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)
	l.s.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerS, ioInnerO)
	hashedTransfer(t, l.o, l.s, ioInnerS+":5201", 0.5)
	sas := sw.ListSAs()
	if !strings.Contains(sas, "INSTALLED, TUNNEL-in-UDP") {
		t.Fatalf("strongSwan SAs:\n%s", sas)
	}
	want := map[string]string{"": "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519",
		"chacha20poly1305-prfsha256-x25519": "CHACHA20_POLY1305/PRF_HMAC_SHA2_256/CURVE_25519",
		"aes256-sha256-prfsha256-modp2048":  "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
		"aes128-sha384-ecp256":              "AES_CBC-128/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_256"}[c.ikeProps]
	if want != "" && !strings.Contains(sas, want) {
		t.Fatalf("strongSwan did not negotiate %s:\n%s", want, sas)
	}
	t.Logf("strongSwan sees:\n%s", sas)
	if out, err := exec.Command(oevpnBinary(t), "check", "-c", cfgPath, ioInnerS).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "10.2.0.1: encrypted-and-authenticated (peer 192.0.2.2:4500): IKE SA authenticated by") {
		t.Fatalf("oevpn check %s: %v\n%s", ioInnerS, err, out)
	}
	if out, _ := exec.Command(oevpnBinary(t), "check", "-c", cfgPath, "203.0.113.9").CombinedOutput(); !strings.Contains(string(out), "203.0.113.9: clear") {
		t.Fatalf("oevpn check 203.0.113.9:\n%s", out)
	}
	st := oevpnStatus(t, cfgPath)
	if len(st.IKESAs) != 1 || st.IKESAs[0].State != "established" || len(st.IKESAs[0].Children) != 1 ||
		st.IKESAs[0].Children[0].Out.Packets < 5 || st.IKESAs[0].Children[0].In.Packets < 5 || st.IKESAs[0].RemoteID != ioIDS {
		t.Fatalf("oevpn status: %+v", st)
	}
	swGone := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for strings.Contains(sw.ListSAs(), "ESTABLISHED") {
			if time.Now().After(deadline) {
				t.Fatalf("strongSwan still has the IKE SA after %s:\n%s", what, sw.ListSAs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	switch c.teardown {
	case "down":
		out, err := exec.Command(oevpnBinary(t), "down", "-c", cfgPath, "sw").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "1 IKE SA(s) deleted") {
			t.Fatalf("oevpn down: %v %s", err, out)
		}
		swGone("oevpn down")
		if st := oevpnStatus(t, cfgPath); len(st.IKESAs)+len(st.Static) != 0 {
			t.Fatalf("SAs left after oevpn down: %+v", st)
		}
	case "swan":
		if out, err := sw.Swanctl("--terminate", "--ike", lab.SwanName); err != nil {
			t.Fatalf("swanctl --terminate: %v\n%s", err, out)
		}
		waitUntil(t, 5*time.Second, "oevpn removes the SAs strongSwan deleted", func() bool {
			st := oevpnStatus(t, cfgPath)
			return len(st.IKESAs) == 0 && len(st.Static) == 0
		})
	}
	// SIGTERM: oevpn deletes its IKE SA, and strongSwan honours it.
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("oevpn exit: %v", err)
	}
	swGone("oevpn's Delete")
	sw.Stop()
}

// TestLabInteropAuthNull: strongSwan does not implement RFC 7619, so an
// oevpn peer configured for AUTH_NULL must report the refusal clearly and keep
// running.
func TestLabInteropAuthNull(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	l := newInteropLab(t)
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	p, _ := l.startOevpn(t, interopCase{auth: "null"}, "", "", "start")
	if err := p.WaitFor("peer refused IKE_AUTH: AUTHENTICATION_FAILED", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Output(), "AUTH_NULL, RFC 7619") {
		t.Fatalf("the refusal does not say that AUTH_NULL was used:\n%s", p.Output())
	}
	time.Sleep(500 * time.Millisecond)
	if err := p.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("oevpn stopped after the refusal: %v", err)
	}
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("oevpn exit: %v\n%s", err, p.Output())
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLabInteropRekey rekeys the Child SA and the IKE SA under a running TCP
// transfer, once driven by strongSwan and once by oevpn; the transfer must
// arrive intact.
func TestLabInteropRekey(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	l := newInteropLab(t)
	for _, who := range []string{"strongswan", "oevpn"} {
		t.Run(who+"-rekeys", func(t *testing.T) {
			sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
				Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO}
			extra := ""
			if who == "strongswan" {
				sc.ChildRekeyTime, sc.RekeyTime = "2s", "3s"
			} else {
				extra = "child_lifetime = \"2s\"\nike_lifetime = \"3s\""
			}
			sw := lab.StartStrongSwan(t, l.s, sc)
			defer sw.Stop()
			p, _ := l.startOevpnExtra(t, interopCase{auth: "psk"}, "", "", "start", extra)
			defer func() {
				if t.Failed() {
					t.Logf("oevpn log:\n%s", p.Output())
				}
			}()
			if err := p.WaitFor("Child SA installed", 15*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := sw.WaitInstalled(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			if who == "strongswan" {
				// Besides its own timers, make strongSwan rekey on cue:
				// its libipsec does not always fire a 2 s soft lifetime.
				go func() {
					defer close(done)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						case <-time.After(1500 * time.Millisecond):
						}
						what := "--child"
						if i%2 == 1 {
							what = "--ike"
						}
						sw.Swanctl("--rekey", what, lab.SwanName)
					}
				}()
			} else {
				close(done)
			}
			hashedTransfer(t, l.o, l.s, ioInnerS+":5202", 7)
			close(stop)
			<-done
			out := p.Output()
			if n := strings.Count(out, "Child SA installed"); n < 3 {
				t.Fatalf("only %d Child SAs in 7 s of 2 s lifetimes", n)
			}
			if !strings.Contains(out, "IKE SA rekeyed") {
				t.Fatalf("the IKE SA was not rekeyed")
			}
			l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)
			p.Signal(syscall.SIGTERM)
			p.Wait(10 * time.Second)
		})
	}
}

// TestLabInteropDeadPeer kills strongSwan: oevpn must find the peer dead,
// clean up, and bring the tunnel back once strongSwan runs again. Then
// strongSwan loses its state once more and initiates with INITIAL_CONTACT:
// oevpn must drop the stale SA.
func TestLabInteropDeadPeer(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	l := newInteropLab(t)
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO}
	sw := lab.StartStrongSwan(t, l.s, sc)
	p, cfg := l.startOevpnExtra(t, interopCase{auth: "psk"}, "", "", "start",
		"dpd = \"1s\"\nretransmit_timeout = \"200ms\"\nretransmit_tries = 3")
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	if err := p.WaitFor("Child SA installed", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	l.o.Run("ping", "-c", "1", "-W", "2", "-I", ioInnerO, ioInnerS)

	sw.Kill()
	if err := p.WaitFor("no answer from the peer", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "no established SA after the peer died", func() bool {
		for _, sa := range oevpnStatus(t, cfg).IKESAs {
			if sa.State == "established" {
				return false
			}
		}
		return true
	})
	// strongSwan comes back: oevpn re-initiates by itself.
	sw = lab.StartStrongSwan(t, l.s, sc)
	waitUntil(t, 20*time.Second, "oevpn re-established the tunnel", func() bool {
		return strings.Count(p.Output(), "Child SA installed") >= 2
	})
	l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)

	// strongSwan loses its state again and initiates itself this time,
	// with INITIAL_CONTACT: oevpn keeps only the new IKE SA.
	sw.Kill()
	sw = lab.StartStrongSwan(t, l.s, sc)
	if err := sw.Initiate(lab.SwanName); err != nil {
		t.Fatalf("strongSwan initiate: %v", err)
	}
	if err := p.WaitFor("INITIAL_CONTACT: removing the peer's old IKE SA", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)
	// The old IKE SA goes at once from the datapath; its Delete, which
	// strongSwan does not answer, gives up after 3 sends.
	waitUntil(t, 5*time.Second, "oevpn keeps only the new IKE SA", func() bool {
		st := oevpnStatus(t, cfg)
		return len(st.IKESAs) == 1 && st.IKESAs[0].State == "established" && !st.IKESAs[0].Initiator
	})
	sw.Stop()
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// TestLabInteropOnDemand: oevpn negotiates with strongSwan when the first
// packet arrives (held, then delivered), and after strongSwan deletes the
// Child SA but keeps the IKE SA, the next packet makes a new Child SA with
// CREATE_CHILD_SA.
func TestLabInteropOnDemand(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	l := newInteropLab(t)
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	p, cfgPath := l.startOevpnExtra(t, interopCase{auth: "psk"}, "", "", "traffic", "")
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	time.Sleep(200 * time.Millisecond)
	if strings.Contains(p.Output(), "initiating IKE SA") {
		t.Fatal("negotiated before any traffic")
	}
	if out, _ := exec.Command(oevpnBinary(t), "check", "-c", cfgPath, ioInnerS).CombinedOutput(); !strings.Contains(string(out), "pending (peer sw)") {
		t.Fatalf("oevpn check before traffic:\n%s", out)
	}
	// One echo request only: it must be held and delivered, not lost.
	l.o.Run("ping", "-c", "1", "-W", "5", "-I", ioInnerO, ioInnerS)
	if out, err := sw.Swanctl("--terminate", "--child", lab.SwanName); err != nil {
		t.Fatalf("swanctl --terminate --child: %v\n%s", err, out)
	}
	if err := p.WaitFor("peer deleted a Child SA", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	l.o.Run("ping", "-c", "1", "-W", "5", "-I", ioInnerO, ioInnerS)
	if !strings.Contains(p.Output(), "negotiating a Child SA for selectors without one") || strings.Count(p.Output(), "IKE SA established") != 1 {
		t.Fatal("the Child SA was not re-created inside the existing IKE SA")
	}
	hashedTransfer(t, l.o, l.s, ioInnerS+":5203", 0.5)
}

// TestLabInteropIssue11 covers the interop defects of issue 11 against
// strongSwan, both directions where they apply.
func TestLabInteropIssue11(t *testing.T) {
	lab.Require(t, "charon-systemd", "swanctl", "ping")
	l := newInteropLab(t)
	for _, swanStarts := range []bool{false, true} {
		dir := "oevpn-initiates"
		if swanStarts {
			dir = "strongswan-initiates"
		}
		// Item 12: no PRF named: strongSwan derives PRF_HMAC_SHA2_384
		// from sha384, and so must oevpn.
		t.Run("prf-from-integrity/"+dir, func(t *testing.T) {
			l.run(t, interopCase{auth: "psk", ikeProps: "aes128-sha384-ecp256", espProps: "aes128-sha256", swanStarts: swanStarts})
		})
		// Item 10: strongSwan sends its certificate only when asked
		// (send_cert = ifasked): oevpn must send CERTREQ.
		t.Run("certreq-ifasked/"+dir, func(t *testing.T) {
			l.run(t, interopCase{auth: "ca", swSendCert: "ifasked", swanStarts: swanStarts})
		})
		// Item 11: oevpn's certificate comes from an intermediate CA
		// that strongSwan does not have: oevpn must send it.
		t.Run("intermediate-ca/"+dir, func(t *testing.T) {
			l.run(t, interopCase{auth: "ca", chain: true, swanStarts: swanStarts})
		})
		// Item 16: PKCS#1 RSA private keys ("RSA PRIVATE KEY").
		t.Run("rsa-pkcs1-key/"+dir, func(t *testing.T) {
			l.run(t, interopCase{auth: "rsa-pkcs1", swanStarts: swanStarts})
		})
		// Item 14: a pinned certificate that has expired is refused.
		t.Run("pinned-expired/"+dir, func(t *testing.T) { l.pinnedExpired(t, swanStarts) })
	}
	t.Run("initiator-refuses-us", func(t *testing.T) { l.refusedCert(t, true) })
	t.Run("responder-refuses-us", func(t *testing.T) { l.refusedCert(t, false) })
	t.Run("child-refused", l.childRefused)
	t.Run("child-refused-by-oevpn", func(t *testing.T) { l.childRefusedByOevpn(t, false) })
	t.Run("child-refused-by-oevpn/strongswan-closes", func(t *testing.T) { l.childRefusedByOevpn(t, true) })
	t.Run("both-initiate", l.bothInitiate)
	for _, unique := range []string{"no", "replace"} {
		t.Run("restart-racing-dpd/unique-"+unique, func(t *testing.T) { l.restartRacingDPD(t, unique) })
	}
	t.Run("two-children/two-peers", func(t *testing.T) { l.twoChildren(t, false) })
	t.Run("two-children/one-peer", func(t *testing.T) { l.twoChildren(t, true) })
	t.Run("child-deleted-remade", l.childDeletedRemade)
}

// childDeletedRemade (item 13): oevpn, configured to start, has two Child
// SAs with strongSwan in one IKE SA (strongSwan narrows the first to one
// of its children); strongSwan deletes one Child SA, then the other
// (swanctl --terminate --child), keeping the IKE SA. oevpn must make each
// again in the same IKE SA, and traffic flow.
func (l *interopLab) childDeletedRemade(t *testing.T) {
	const inner2, net2 = "10.3.0.1", "10.3.0.0/24"
	l.s.Run("ip", "addr", "replace", inner2+"/32", "dev", "lo")
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO,
		MoreChildren: []lab.SwanChild{{Name: "rig2", LocalTS: net2, RemoteTS: ioNetO}}}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	p, cfg := l.startOevpn(t, interopCase{auth: "psk", remotes: []string{ioNetS, net2}}, "", "", "start")
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	waitUntil(t, 15*time.Second, "two Child SAs at strongSwan", func() bool {
		return strings.Count(sw.ListSAs(), "INSTALLED") == 2
	})
	for i, child := range []string{"rig2", lab.SwanName} {
		if out, err := sw.Swanctl("--terminate", "--child", child); err != nil {
			t.Fatalf("swanctl --terminate --child %s: %v\n%s", child, err, out)
		}
		waitUntil(t, 5*time.Second, "oevpn hears the Delete", func() bool {
			return strings.Count(p.Output(), "peer deleted a Child SA") == i+1
		})
		gone := time.Now()
		waitUntil(t, 10*time.Second, "oevpn makes the deleted Child SA again", func() bool {
			return strings.Count(sw.ListSAs(), "INSTALLED") == 2 &&
				strings.Count(p.Output(), "negotiating a Child SA for selectors without one") == i+1
		})
		t.Logf("Child SA %s made again after %v", child, time.Since(gone).Round(time.Millisecond))
		if n := strings.Count(sw.ListSAs(), "ESTABLISHED"); n != 1 || strings.Count(p.Output(), "IKE SA established") != 1 {
			t.Fatalf("the Child SA was not made in the same IKE SA:\n%s", sw.ListSAs())
		}
		l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)
		l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, inner2)
	}
	for _, dst := range []string{ioInnerS, inner2} {
		if out, _ := exec.Command(oevpnBinary(t), "check", "-c", cfg, dst).CombinedOutput(); !strings.Contains(string(out), "encrypted-and-authenticated") {
			t.Fatalf("oevpn check %s:\n%s", dst, out)
		}
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// refusedCert (item 8): strongSwan pins another certificate for oevpn's
// identity, so it refuses oevpn's authentication. When strongSwan
// initiates, oevpn (responder) has installed the Child SA by then and must
// remove it on strongSwan's AUTHENTICATION_FAILED; either way no SA may
// remain and check must not say the peer is protected.
func (l *interopLab) refusedCert(t *testing.T, swanStarts bool) {
	oKey, oCert := lab.GenerateCert(t, ioIDO)
	_, other := lab.GenerateCert(t, ioIDO)
	sKey, sCert := lab.GenerateCert(t, ioIDS)
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "cert", LocalKeyPEM: sKey, LocalCertPEM: sCert, RemoteCertPEM: other, LocalTS: ioNetS, RemoteTS: ioNetO}
	keyFile, ours, theirs := l.writeCerts(t, oKey, oCert, sCert)
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	start, want := "start", "peer refused IKE_AUTH: AUTHENTICATION_FAILED"
	if swanStarts {
		start, want = "none", "peer refused our authentication"
	}
	p, cfg := l.startOevpn(t, interopCase{auth: "cert"}, keyFile, ours+"|"+theirs, start)
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	if swanStarts {
		if err := sw.Initiate(lab.SwanName); err == nil {
			t.Fatal("strongSwan accepted a certificate it does not pin")
		}
	}
	if err := p.WaitFor(want, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 3*time.Second, "oevpn removes the SAs the peer refused", func() bool {
		st := oevpnStatus(t, cfg)
		for _, sa := range st.IKESAs {
			if sa.State == "established" || len(sa.Children) > 0 {
				return false
			}
		}
		return true
	})
	if out, _ := exec.Command(oevpnBinary(t), "check", "-c", cfg, ioInnerS).CombinedOutput(); strings.Contains(string(out), "encrypted") {
		t.Fatalf("oevpn check after the refusal:\n%s", out)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// childRefused (item 15): strongSwan accepts the IKE SA but refuses the
// Child SA (no common ESP proposal). oevpn must not leave the IKE SA
// orphaned at strongSwan, and must back off its retries.
func (l *interopLab) childRefused(t *testing.T) {
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO, ESPProposals: "aes128-sha256"}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	p, _ := l.startOevpn(t, interopCase{auth: "psk", espProps: "aes256gcm16"}, "", "", "start")
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	if err := p.WaitFor("NO_PROPOSAL_CHOSEN", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	out := p.Output()
	if !strings.Contains(out, "we offered ESP AES_GCM_16-256") {
		t.Errorf("the failure does not say what was offered")
	}
	if n := strings.Count(out, "initiating IKE SA"); n > 4 {
		t.Errorf("%d attempts in about 10 s: no backoff", n)
	}
	if n := strings.Count(sw.ListSAs(), "ESTABLISHED"); n > 1 {
		t.Errorf("%d IKE SAs at strongSwan: orphans of refused attempts:\n%s", n, sw.ListSAs())
	}
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("oevpn exit: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Contains(sw.ListSAs(), "ESTABLISHED") {
		if time.Now().After(deadline) {
			t.Fatalf("strongSwan keeps IKE SAs oevpn left:\n%s", sw.ListSAs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// childRefusedByOevpn (item 15, the other direction): strongSwan initiates,
// and oevpn, the responder, refuses the Child SA (no common ESP proposal)
// in IKE_AUTH. strongSwan tries again and again (swanctl --initiate, and
// start_action = trap on its traffic), keeping the IKE SA without a Child
// SA (its default) or deleting it (close_ike_on_child_failure). Neither
// side may be left with an IKE SA the other does not have, nor with a
// growing pile of them.
func (l *interopLab) childRefusedByOevpn(t *testing.T, swanCloses bool) {
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO, ESPProposals: "aes128-sha256", StartAction: "trap"}
	if swanCloses {
		sc.Charon = []string{"close_ike_on_child_failure = yes"}
	}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	p, cfg := l.startOevpn(t, interopCase{auth: "psk", espProps: "aes256gcm16"}, "", "", "none")
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	established := func() (ours int, spis []string) {
		for _, sa := range oevpnStatus(t, cfg).IKESAs {
			if sa.State == "established" {
				ours++
				spis = append(spis, sa.SPIi+"_i")
			}
		}
		return ours, spis
	}
	for i := range 4 {
		if err := sw.Initiate(lab.SwanName); err == nil {
			t.Fatal("strongSwan installed a Child SA oevpn cannot have accepted")
		}
		// strongSwan's traffic hits its trap too.
		l.s.Cmd("ping", "-c", "1", "-W", "1", "-I", ioInnerS, ioInnerO).Run()
		time.Sleep(500 * time.Millisecond)
		if i == 0 && !strings.Contains(p.Output(), "no acceptable ESP proposal") {
			t.Fatal("oevpn did not log the refusal")
		}
	}
	time.Sleep(2 * time.Second)
	sas := sw.ListSAs()
	theirs := strings.Count(sas, "ESTABLISHED")
	ours, spis := established()
	t.Logf("after 4 refused attempts: strongSwan %d IKE SAs, oevpn %d (%v)", theirs, ours, spis)
	if theirs > 1 || ours > 1 || theirs != ours {
		t.Fatalf("strongSwan has %d IKE SAs, oevpn %d:\n%s", theirs, ours, sas)
	}
	for _, spi := range spis {
		if !strings.Contains(sas, spi) {
			t.Fatalf("oevpn's IKE SA %s is not strongSwan's:\n%s", spi, sas)
		}
	}
	if strings.Contains(sas, "INSTALLED") {
		t.Fatalf("a Child SA at strongSwan:\n%s", sas)
	}
	if out, _ := exec.Command(oevpnBinary(t), "check", "-c", cfg, ioInnerS).CombinedOutput(); strings.Contains(string(out), "encrypted") {
		t.Fatalf("oevpn check with the Child SA refused:\n%s", out)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// pinnedExpired (item 14): oevpn pins strongSwan's certificate, which has
// expired: oevpn must refuse it, in either direction.
func (l *interopLab) pinnedExpired(t *testing.T, swanStarts bool) {
	ca := lab.NewCA(t, "oevpn lab root", nil)
	sKey, sCert := ca.Issue(t, ioIDS, time.Now().Add(-time.Hour))
	oKey, oCert := lab.GenerateCert(t, ioIDO)
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "cert", LocalKeyPEM: sKey, LocalCertPEM: sCert, RemoteCertPEM: oCert, LocalTS: ioNetS, RemoteTS: ioNetO}
	keyFile, ours, theirs := l.writeCerts(t, oKey, oCert, sCert)
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	start := "start"
	if swanStarts {
		start = "none"
	}
	p, cfg := l.startOevpn(t, interopCase{auth: "cert"}, keyFile, ours+"|"+theirs, start)
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	if swanStarts {
		sw.Initiate(lab.SwanName)
	}
	if err := p.WaitFor("not now: pin a renewed one", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, sa := range oevpnStatus(t, cfg).IKESAs {
		if sa.State == "established" || len(sa.Children) > 0 {
			t.Fatalf("oevpn accepted the expired certificate: %+v", sa)
		}
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// pkcs1PEM rewrites a PKCS#8 RSA private key PEM as PKCS#1.
func pkcs1PEM(t *testing.T, p8 []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(p8)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	rk, ok := k.(*rsa.PrivateKey)
	if err != nil || !ok {
		t.Fatalf("not an RSA key: %T %v", k, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
}

// twoChildren (item 13): two selector sets towards the same peer, oevpn
// initiating: two [[peer]] sections with one address, or one whose remote
// selectors strongSwan has in two children (it narrows the first Child SA
// to one of them). Both must end up installed at strongSwan and carry
// traffic.
func (l *interopLab) twoChildren(t *testing.T, onePeer bool) {
	const inner2, net2 = "10.3.0.1", "10.3.0.0/24"
	l.s.Run("ip", "addr", "replace", inner2+"/32", "dev", "lo")
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO,
		MoreChildren: []lab.SwanChild{{Name: "rig2", LocalTS: net2, RemoteTS: ioNetO}}}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	second := fmt.Sprintf(`
[[peer]]
name = "sw2"
address = %q
local_id = %q
remote_id = %q
auth = "psk"
psk = %q
local = [%q]
remote = [%q]
start = "start"
`, ioOuterS, ioIDO, ioIDS, ioPSK, ioInnerO, net2)
	c := interopCase{auth: "psk"}
	if onePeer {
		c.remotes, second = []string{ioNetS, net2}, ""
	}
	p, cfg := l.startOevpnExtra(t, c, "", "", "start", second)
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	waitUntil(t, 15*time.Second, "two Child SAs at strongSwan", func() bool {
		return strings.Count(sw.ListSAs(), "INSTALLED") == 2
	})
	// And they stay: neither replaces the other.
	time.Sleep(3 * time.Second)
	if n := strings.Count(sw.ListSAs(), "INSTALLED"); n != 2 {
		t.Fatalf("%d Child SAs at strongSwan after 3 s:\n%s", n, sw.ListSAs())
	}
	l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)
	l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, inner2)
	for _, dst := range []string{ioInnerS, inner2} {
		if out, _ := exec.Command(oevpnBinary(t), "check", "-c", cfg, dst).CombinedOutput(); !strings.Contains(string(out), "encrypted-and-authenticated") {
			t.Fatalf("oevpn check %s:\n%s", dst, out)
		}
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// bothInitiate (item 9): both sides initiate at once; one IKE SA and one
// Child SA pair must remain on each side.
func (l *interopLab) bothInitiate(t *testing.T) {
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	// strongSwan's IKE_SA_INIT goes out before oevpn listens; its
	// retransmission comes while oevpn's own IKE SA is being made.
	initiated := make(chan struct{})
	go func() {
		defer close(initiated)
		sw.Swanctl("--initiate", "--child", lab.SwanName, "--timeout", "20")
	}()
	time.Sleep(200 * time.Millisecond)
	p, cfg := l.startOevpn(t, interopCase{auth: "psk"}, "", "", "start")
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	<-initiated
	time.Sleep(3 * time.Second)
	sas := sw.ListSAs()
	st := oevpnStatus(t, cfg)
	established := 0
	for _, sa := range st.IKESAs {
		if sa.State == "established" {
			established++
		}
	}
	if n := strings.Count(sas, "ESTABLISHED"); n != 1 || established != 1 || strings.Count(sas, "INSTALLED") != 1 {
		t.Fatalf("after both initiated: strongSwan has:\n%s\noevpn has %d established: %+v", sas, established, st.IKESAs)
	}
	l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)
	t.Logf("duplicates deleted by oevpn: %d", strings.Count(p.Output(), "duplicate IKE SA"))
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// restartRacingDPD (item 9): oevpn, configured to start, is killed (-9)
// and started again just as strongSwan's dead-peer detection gives up on
// it and restarts the connection itself (dpd_action = restart), at a few
// offsets around that moment. Both initiate: after the race, each side
// must hold one IKE SA and one Child SA pair, the same, and traffic flow.
func (l *interopLab) restartRacingDPD(t *testing.T, unique string) {
	sc := lab.SwanConfig{LocalAddr: ioOuterS, RemoteAddr: ioOuterO, LocalID: ioIDS, RemoteID: ioIDO,
		Auth: "psk", PSK: ioPSK, LocalTS: ioNetS, RemoteTS: ioNetO, DPDDelay: "1s", DPDAction: "restart", Unique: unique,
		// Dead after about 4.4 s of silence: 3 sends, 1 s apart and growing.
		Charon: []string{"retransmit_timeout = 1", "retransmit_base = 1.4", "retransmit_tries = 2"}}
	sw := lab.StartStrongSwan(t, l.s, sc)
	defer sw.Stop()
	p, cfg := l.startOevpn(t, interopCase{auth: "psk"}, "", "", "start")
	defer func() {
		if t.Failed() {
			t.Logf("oevpn log:\n%s", p.Output())
		}
	}()
	if _, ok := pingUntil(l.o, ioInnerO, ioInnerS, 15*time.Second); !ok {
		t.Fatal("no tunnel to start with")
	}
	for _, offset := range []time.Duration{-time.Second, 0, 300 * time.Millisecond, time.Second} {
		gaveUp := strings.Count(sw.Log(), "giving up after")
		p.Signal(syscall.SIGKILL)
		p.Wait(10 * time.Second)
		if offset < 0 {
			// Before strongSwan gives up: about 4.4 s after its first
			// unanswered check, which comes a second after the kill.
			time.Sleep(5400*time.Millisecond + offset)
		} else {
			waitUntil(t, 15*time.Second, "strongSwan's dead-peer detection gives up", func() bool {
				return strings.Count(sw.Log(), "giving up after") > gaveUp
			})
			time.Sleep(offset)
		}
		p, cfg = l.startOevpn(t, interopCase{auth: "psk"}, "", "", "start")
		took, ok := pingUntil(l.o, ioInnerO, ioInnerS, 20*time.Second)
		if !ok {
			t.Fatalf("restart %v after strongSwan gave up: no traffic in 20 s\n%s", offset, sw.ListSAs())
		}
		// Let the duplicates, their Deletes and strongSwan's retries settle.
		time.Sleep(8 * time.Second)
		sas := sw.ListSAs()
		var ours []labIKESA
		for _, sa := range oevpnStatus(t, cfg).IKESAs {
			if sa.State == "established" {
				ours = append(ours, sa)
			}
		}
		t.Logf("restart %v after strongSwan gave up: traffic after %v; strongSwan %d IKE SAs %d Child SAs, oevpn %d",
			offset, took.Round(10*time.Millisecond), strings.Count(sas, "ESTABLISHED"), strings.Count(sas, "INSTALLED"), len(ours))
		if strings.Count(sas, "ESTABLISHED") != 1 || strings.Count(sas, "INSTALLED") != 1 || len(ours) != 1 || len(ours[0].Children) != 1 ||
			!strings.Contains(sas, ours[0].SPIi+"_i") {
			t.Fatalf("restart %v after strongSwan gave up: strongSwan has\n%s\noevpn has %+v", offset, sas, ours)
		}
		l.o.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ioInnerO, ioInnerS)
	}
	p.Signal(syscall.SIGTERM)
	p.Wait(10 * time.Second)
}

// writeCerts writes oevpn's key and certificate and strongSwan's
// certificate into the lab's directory and returns their files.
func (l *interopLab) writeCerts(t *testing.T, key, cert, peerCert []byte) (keyFile, ours, theirs string) {
	t.Helper()
	keyFile = filepath.Join(l.dir, lab.Unique("key")+".pem")
	ours = filepath.Join(l.dir, lab.Unique("crt")+".pem")
	theirs = filepath.Join(l.dir, lab.Unique("crt")+".pem")
	for f, b := range map[string][]byte{keyFile: key, ours: cert, theirs: peerCert} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return keyFile, ours, theirs
}
