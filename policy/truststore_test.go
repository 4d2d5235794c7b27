package policy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func selfSigned(t testing.TB, cn string) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"Lab, Inc."}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestTrustStoreStates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trust")
	s, err := OpenTrustStore(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	g2 := selfSigned(t, "gw2.example")
	if p, err := s.Check(g2, now); p != nil || err != nil {
		t.Fatalf("unknown: %v %v", p, err)
	}
	p, err := s.Seen(g2, "operated by Example; call 555-1212", netip.Addr{}, false, now)
	if err != nil || p.State != Unverified || p.DN != g2.Subject.String() {
		t.Fatalf("seen: %+v %v", p, err)
	}
	if p, err := s.Check(g2, now); err != nil || p.State != Unverified {
		t.Fatalf("known: %+v %v", p, err)
	}
	// Another certificate with the same DN is a conflict.
	impostor := selfSigned(t, "gw2.example")
	if _, err := s.Check(impostor, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflict: %v", err)
	}
	if _, err := s.Seen(impostor, "", netip.Addr{}, false, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflict on seen: %v", err)
	}
	// Manual marking, by fingerprint prefix.
	if _, err := s.SetState(p.Fingerprint[:12], Untrusted); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(g2, now); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("untrusted: %v", err)
	}
	if _, err := s.Seen(g2, "", netip.Addr{}, false, now); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("untrusted seen: %v", err)
	}
	if p, err := s.SetState(g2.Subject.String(), Trusted); err != nil || p.State != Trusted {
		t.Fatalf("trust by DN: %v", err)
	}
	// Persistence: the file is readable text, mode 0600, and reloads.
	fi, _ := os.Stat(path)
	data, _ := os.ReadFile(path)
	if fi.Mode().Perm() != 0o600 || !strings.Contains(string(data), "trusted "+p.Fingerprint) || !strings.Contains(string(data), "555-1212") {
		t.Fatalf("file (mode %v):\n%s", fi.Mode(), data)
	}
	s2, err := OpenTrustStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Peers(); len(got) != 1 || got[0].State != Trusted || got[0].Contact != "operated by Example; call 555-1212" ||
		!got[0].FirstSeen.Equal(now) {
		t.Fatalf("reloaded %+v", got)
	}
	// Forget: unknown again.
	if err := s2.Forget(p.Fingerprint); err != nil {
		t.Fatal(err)
	}
	if p, err := s2.Check(g2, now); p != nil || err != nil {
		t.Fatalf("forgotten: %v %v", p, err)
	}
	if err := s2.Forget("nonexistent"); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("forget unknown: %v", err)
	}
}

func TestTrustStoreExpiryAndSecret(t *testing.T) {
	s, _ := OpenTrustStore(filepath.Join(t.TempDir(), "trust"))
	s.UnverifiedTTL = 8 * 24 * time.Hour
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	a, b := selfSigned(t, "a.example"), selfSigned(t, "b.example")
	s.Seen(a, "", netip.Addr{}, false, now)
	s.Seen(b, "", netip.Addr{}, false, now)
	if err := s.SetSharedSecret(b.Subject.String(), make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	later := now.Add(9 * 24 * time.Hour)
	if p, _ := s.Check(a, later); p != nil {
		t.Fatal("unverified entry outlived its timeout")
	}
	if p, err := s.Check(b, later); p == nil || err != nil {
		t.Fatalf("entry pinned by a shared secret expired: %v", err)
	}
	// A certificate roll for b's DN, allowed by the shared secret only.
	b2 := selfSigned(t, "b.example")
	if _, err := s.Seen(b2, "", netip.Addr{}, false, later); !errors.Is(err, ErrConflict) {
		t.Fatalf("roll without the secret: %v", err)
	}
	if _, err := s.Seen(b2, "", netip.Addr{}, true, later); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Check(b2, later); p == nil || err != nil {
		t.Fatalf("rolled certificate: %v", err)
	}
	if _, err := s.Seen(selfSigned(t, "c.example"), "", netip.Addr{}, true, later); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("a shared secret claimed for a DN that has none: %v", err)
	}
}

func TestTrustStoreFileErrors(t *testing.T) {
	good := (&Peer{State: Trusted, DN: selfSigned(t, "x").Subject.String()})
	c := selfSigned(t, "x")
	good.Cert, good.Fingerprint, good.DN = c.Raw, Fingerprint(c.Raw), c.Subject.String()
	line := good.line()
	cases := map[string]string{
		"state":       strings.Replace(line, "trusted", "maybe", 1),
		"fingerprint": strings.Replace(line, good.Fingerprint, strings.Repeat("0", 64), 1),
		"secret":      strings.Replace(line, " - ", " zz ", 1),
		"dn":          strings.Replace(line, strconv.Quote(good.DN), `"CN=other"`, 1),
		"short":       "trusted abc\n",
		"trailing":    strings.TrimSuffix(line, "\n") + " extra\n",
		"duplicate":   line + line,
	}
	for name, text := range cases {
		_, err := ParseTrustStore(strings.NewReader("# comment\n"+text), "trust")
		if !errors.Is(err, ErrStoreFile) || !strings.Contains(err.Error(), "trust:2") && name != "duplicate" {
			t.Errorf("%s: %v", name, err)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "open")
	os.WriteFile(p, []byte(line), 0o644)
	if _, err := OpenTrustStore(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("readable store accepted: %v", err)
	}
}

func FuzzTrustStore(f *testing.F) {
	c := selfSigned(f, "fuzz.example")
	p := &Peer{State: Unverified, Fingerprint: Fingerprint(c.Raw), DN: c.Subject.String(), Cert: c.Raw, Contact: "hi"}
	f.Add(p.line())
	f.Fuzz(func(t *testing.T, s string) {
		peers, err := ParseTrustStore(strings.NewReader(s), "fuzz")
		if err != nil {
			return
		}
		var b strings.Builder
		for _, p := range peers {
			b.WriteString(p.line())
		}
		again, err := ParseTrustStore(strings.NewReader(b.String()), "again")
		if err != nil || len(again) != len(peers) {
			t.Fatalf("re-encoded store does not parse: %v", err)
		}
	})
}

// TestTrustStoreCrash kills a process that writes the store as fast as it
// can, many times, at random instants: the file always parses, and every
// entry the writer reported as stored is there.
func TestTrustStoreCrash(t *testing.T) {
	if os.Getenv("OEVPN_TRUST_WRITER") != "" {
		return // the writer runs in TestMain mode, not as a test
	}
	path := filepath.Join(t.TempDir(), "trust")
	self, _ := os.Executable()
	stored := 0
	for round := 0; round < 40; round++ {
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), "OEVPN_TRUST_WRITER="+path)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		deadline := time.After(time.Duration(5+round%15) * time.Millisecond)
		for waiting := true; waiting; {
			select {
			case <-deadline:
				waiting = false
			default:
				if !sc.Scan() {
					waiting = false
					break
				}
				if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "stored ")); err == nil {
					stored = max(stored, n)
				}
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for sc.Scan() { // what it reported before it died
			if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "stored ")); err == nil {
				stored = max(stored, n)
			}
		}
		cmd.Wait()
		s, err := OpenTrustStore(path)
		if err != nil {
			t.Fatalf("round %d: store unreadable after kill -9: %v", round, err)
		}
		if n := len(s.Peers()); n < stored {
			t.Fatalf("round %d: %d entries, but %d were reported stored", round, n, stored)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".trust.*")); len(left) > 0 {
		t.Errorf("temporary files left after reopening: %v", left)
	}
	t.Logf("%d entries stored across 40 kills", stored)
}

func TestMain(m *testing.M) {
	if path := os.Getenv("OEVPN_TRUST_WRITER"); path != "" {
		trustWriter(path)
		return
	}
	os.Exit(m.Run())
}

// trustWriter adds peers to the store forever, reporting each one stored.
func trustWriter(path string) {
	s, err := OpenTrustStore(path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for n := len(s.Peers()) + 1; ; n++ {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(n)), Subject: pkix.Name{CommonName: fmt.Sprintf("peer%d.example", n)},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		c, _ := x509.ParseCertificate(der)
		if _, err := s.Seen(c, "writer", netip.Addr{}, false, time.Now()); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("stored %d\n", n)
	}
}

func TestTrustStoreThirdParty(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Lab CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "gw.managed.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &k.PublicKey, caKey)
	leaf, _ := x509.ParseCertificate(der)
	s, _ := OpenTrustStore(filepath.Join(t.TempDir(), "trust"))
	s.Roots = x509.NewCertPool()
	s.Roots.AddCert(ca)
	if p, err := s.Seen(leaf, "", netip.Addr{}, false, time.Now()); err != nil || p.State != Trusted {
		t.Fatalf("CA-issued certificate: %+v %v", p, err)
	}
	if p, err := s.Seen(selfSigned(t, "stranger.example"), "", netip.Addr{}, false, time.Now()); err != nil || p.State != Unverified {
		t.Fatalf("self-signed certificate: %+v %v", p, err)
	}
}

func TestTrustStoreRevocation(t *testing.T) {
	ca, caKey, issue := testCA(t)
	good, bad := issue(10, "good.example"), issue(11, "bad.example")
	s, _ := OpenTrustStore(filepath.Join(t.TempDir(), "trust"))
	s.Seen(good, "", netip.Addr{}, false, time.Now())
	s.Seen(bad, "", netip.Addr{}, false, time.Now())
	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(),
		NextUpdate:                time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(11), RevocationTime: time.Now()}}}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	crl, _ := x509.ParseRevocationList(crlDER)
	s.CRLs = []*x509.RevocationList{crl}
	if _, err := s.Check(bad, time.Now()); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked certificate: %v", err)
	}
	if _, ok := s.ByDN(bad.Subject.String()); ok {
		t.Fatal("the revoked certificate is still in the store")
	}
	if p, err := s.Check(good, time.Now()); p == nil || err != nil {
		t.Fatalf("a certificate the CRL does not list: %v", err)
	}
}

// TestTrustStoreEveryPathRefuses performs issue 10 item 11 on the store:
// a peer with a shared secret is untrusted, or its certificate revoked;
// every way in (the shared secret, with or without a rolled certificate,
// the certificate itself, a CA-issued certificate's first exchange) must
// be refused.
func TestTrustStoreEveryPathRefuses(t *testing.T) {
	ca, caKey, issue := testCA(t)
	revoke := func(serials ...int64) []*x509.RevocationList {
		var entries []x509.RevocationListEntry
		for _, n := range serials {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(n), RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(),
			NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, ca, caKey)
		if err != nil {
			t.Fatal(err)
		}
		crl, _ := x509.ParseRevocationList(der)
		return []*x509.RevocationList{crl}
	}
	now := time.Now()
	secret := make([]byte, 32)
	for _, tc := range []struct {
		name string
		mark func(s *TrustStore, dn string)
		want error
	}{
		{"untrusted", func(s *TrustStore, dn string) { s.SetState(dn, Untrusted) }, ErrUntrusted},
		{"revoked", func(s *TrustStore, dn string) { s.CRLs = revoke(20) }, ErrRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := OpenTrustStore(filepath.Join(t.TempDir(), "trust"))
			peer := issue(20, "gw.example")
			dn := peer.Subject.String()
			if _, err := s.Seen(peer, "", netip.Addr{}, false, now); err != nil {
				t.Fatal(err)
			}
			s.SetSharedSecret(dn, secret)
			tc.mark(s, dn)
			rolled := issue(21, "gw.example")
			paths := []struct {
				name string
				try  func() error
			}{
				{"shared secret", func() error { _, err := s.Accept(dn, nil, true, now); return err }},
				{"shared secret with a rolled certificate", func() error { _, err := s.Accept(dn, rolled, true, now); return err }},
				{"certificate", func() error { _, err := s.Check(peer, now); return err }},
				{"exchange recorded", func() error { _, err := s.Seen(peer, "", netip.Addr{}, false, now); return err }},
				{"exchange recorded by the shared secret", func() error { _, err := s.Seen(rolled, "", netip.Addr{}, true, now); return err }},
			}
			for _, p := range paths {
				// Revocation deletes the entry: the secret path then finds
				// no secret, the certificate paths the CRL again.
				if err := p.try(); !errors.Is(err, tc.want) && !(tc.want == ErrRevoked && errors.Is(err, ErrNoPeer)) {
					t.Errorf("%s: %v, want %v", p.name, err, tc.want)
				}
			}
		})
	}
	// A CA-issued certificate, revoked, on its first exchange.
	s, _ := OpenTrustStore(filepath.Join(t.TempDir(), "trust"))
	s.Roots = x509.NewCertPool()
	s.Roots.AddCert(ca)
	s.CRLs = revoke(30)
	if p, err := s.Seen(issue(30, "managed.example"), "", netip.Addr{}, false, now); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked CA-issued certificate recorded: %+v, %v", p, err)
	}
}

// testCA makes a CA valid for the next hour, and a function that issues
// certificates from it by serial number and common name.
func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, func(serial int64, cn string) *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Lab CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string) *x509.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		c, _ := x509.ParseCertificate(der)
		return c
	}
	return ca, caKey, issue
}
