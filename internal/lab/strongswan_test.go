//go:build linux

package lab

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// swanPair builds two namespaces joined by a veth pair (192.0.2.1/24 and
// 192.0.2.2/24, inner addresses 10.1.0.1 and 10.2.0.1 on lo) and starts a
// charon in each from the two configurations, to which it adds the
// addresses and traffic selectors.
func swanPair(t *testing.T, c1, c2 SwanConfig) (*StrongSwan, *StrongSwan) {
	t.Helper()
	n1, n2 := NewNetns(t), NewNetns(t)
	e1, e2 := Veth(t, n1, n2)
	n1.Run("ip", "addr", "add", "192.0.2.1/24", "dev", e1)
	n2.Run("ip", "addr", "add", "192.0.2.2/24", "dev", e2)
	n1.Run("ip", "addr", "add", "10.1.0.1/32", "dev", "lo")
	n2.Run("ip", "addr", "add", "10.2.0.1/32", "dev", "lo")
	c1.LocalAddr, c1.RemoteAddr, c1.LocalTS, c1.RemoteTS = "192.0.2.1", "192.0.2.2", "10.1.0.0/24", "10.2.0.0/24"
	c2.LocalAddr, c2.RemoteAddr, c2.LocalTS, c2.RemoteTS = "192.0.2.2", "192.0.2.1", "10.2.0.0/24", "10.1.0.0/24"
	return StartStrongSwan(t, n1, c1), StartStrongSwan(t, n2, c2)
}

// checkTunnel initiates from s1 and pings through the tunnel.
func checkTunnel(t *testing.T, s1, s2 *StrongSwan) {
	t.Helper()
	start := time.Now()
	if err := s1.Initiate(SwanName); err != nil {
		t.Fatalf("initiate: %v", err)
	}
	if err := s2.WaitInstalled(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("tunnel up in %v", time.Since(start).Round(time.Millisecond))
	if out, err := s1.NS.Try("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", "10.1.0.1", "10.2.0.1"); err != nil {
		t.Fatalf("ping through the tunnel: %v\n%s\n%s", err, out, s1.ListSAs())
	}
	// Both ends counted the pings on their child SA (3 out, 3 in).
	for _, s := range []*StrongSwan{s1, s2} {
		sas := s.ListSAs()
		t.Logf("%s: swanctl --list-sas:\n%s", s.NS.Name, sas)
		if !strings.Contains(sas, "INSTALLED, TUNNEL-in-UDP") {
			t.Errorf("%s: no INSTALLED UDP-encapsulated tunnel:\n%s", s.NS.Name, sas)
		}
		for _, dir := range []string{"in", "out"} {
			if !regexp.MustCompile(`(?m)^ +` + dir + ` .*, +3 packets`).MatchString(sas) {
				t.Errorf("%s: child SA did not count 3 packets %s:\n%s", s.NS.Name, dir, sas)
			}
		}
	}
}

func TestLabStrongSwanPSK(t *testing.T) {
	Require(t, "charon-systemd", "swanctl", "ping")
	c := SwanConfig{Auth: "psk", PSK: `lab "psk" \ 0123456789`}
	c1, c2 := c, c
	c1.LocalID, c1.RemoteID = "sw1.lab.test", "sw2.lab.test"
	c2.LocalID, c2.RemoteID = "sw2.lab.test", "sw1.lab.test"
	s1, s2 := swanPair(t, c1, c2)
	checkTunnel(t, s1, s2)
	if sas := s1.ListSAs(); !strings.Contains(sas, "AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519") {
		t.Errorf("unexpected IKE algorithms:\n%s", sas)
	}
}

func TestLabStrongSwanPubkey(t *testing.T) {
	Require(t, "charon-systemd", "swanctl", "ping")
	for _, kind := range []string{"ed25519", "ecdsa"} {
		t.Run(kind, func(t *testing.T) {
			priv1, pub1 := GenerateKey(t, kind)
			priv2, pub2 := GenerateKey(t, kind)
			c1 := SwanConfig{Auth: "pubkey", LocalID: "sw1.lab.test", RemoteID: "sw2.lab.test",
				LocalKeyPEM: priv1, RemotePubPEM: pub2,
				Proposals: "chacha20poly1305-prfsha256-x25519", ESPProposals: "chacha20poly1305"}
			c2 := SwanConfig{Auth: "pubkey", LocalID: "sw2.lab.test", RemoteID: "sw1.lab.test",
				LocalKeyPEM: priv2, RemotePubPEM: pub1,
				Proposals: c1.Proposals, ESPProposals: c1.ESPProposals}
			s1, s2 := swanPair(t, c1, c2)
			checkTunnel(t, s1, s2)
			want := map[string]string{"ed25519": "with ED25519 successful", "ecdsa": "with ECDSA_WITH_SHA256_DER successful"}[kind]
			for _, s := range []*StrongSwan{s1, s2} {
				if !strings.Contains(s.Log(), want) {
					t.Errorf("%s: log lacks %q", s.NS.Name, want)
				}
			}
			if sas := s1.ListSAs(); !strings.Contains(sas, "CHACHA20_POLY1305") {
				t.Errorf("ChaCha20-Poly1305 not negotiated:\n%s", sas)
			}
		})
	}
}

func TestLabStrongSwanStopKill(t *testing.T) {
	Require(t, "charon-systemd", "swanctl")
	c := SwanConfig{Auth: "psk", PSK: "stop-kill"}
	s1, s2 := swanPair(t, c, c)
	if err := s1.Initiate(SwanName); err != nil {
		t.Fatal(err)
	}
	s2.Kill()
	s2.Kill()
	s2.Stop()
	s1.Stop()
	s1.Stop()
	if !strings.Contains(s1.Log(), "deleting IKE_SA") {
		t.Errorf("SIGTERM: charon did not delete its IKE SA:\n%s", s1.Log())
	}
}

// TestLabStrongSwanCert checks the harness's X.509 mode between two charons
// with self-signed certificates pinned on both sides.
func TestLabStrongSwanCert(t *testing.T) {
	Require(t, "charon-systemd", "swanctl", "ping")
	k1, c1 := GenerateCert(t, "sw1.lab.test")
	k2, c2 := GenerateCert(t, "sw2.lab.test")
	cfg1 := SwanConfig{Auth: "cert", LocalID: "sw1.lab.test", RemoteID: "sw2.lab.test", LocalKeyPEM: k1, LocalCertPEM: c1, RemoteCertPEM: c2}
	cfg2 := SwanConfig{Auth: "cert", LocalID: "sw2.lab.test", RemoteID: "sw1.lab.test", LocalKeyPEM: k2, LocalCertPEM: c2, RemoteCertPEM: c1}
	s1, s2 := swanPair(t, cfg1, cfg2)
	checkTunnel(t, s1, s2)
}
