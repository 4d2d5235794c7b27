package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/ike"
)

// TestKeygenCertDN checks that the subject of a certificate keygen makes
// is the DN as written, so that a peer that writes the same DN as the
// gateway's remote_id accepts the certificate. keygen had a DN parser of
// its own, which reordered the attributes (O before CN): the certificate
// of "CN=gw.example.org, O=Example" did not confirm that identity.
func TestKeygenCertDN(t *testing.T) {
	for _, dn := range []string{"CN=gw.example.org, O=Example", "C=CH, O=Example, OU=Lab, CN=gw.example.org", "CN=gw"} {
		dir := t.TempDir()
		key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
		if code, out, errOut := runCLI("keygen", "-o", key, "-cert", dn, "-cert-out", cert); code != 0 {
			t.Fatalf("keygen -cert %q: %d %s %s", dn, code, out, errOut)
		}
		data, err := os.ReadFile(cert)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		id, err := ike.ParseIdentity(dn)
		if err != nil {
			t.Fatal(err)
		}
		if subject := (ike.Identity{Type: ike.IDDERASN1D, Data: c.RawSubject}); !id.Equal(subject) {
			t.Errorf("keygen -cert %q made a certificate for %s, which does not confirm the identity %s", dn, subject, id)
		}
	}
	for _, tt := range []struct{ dn, err string }{
		{"O=Example", "a CN is needed"},
		{"CN=gw, X=1", "distinguished name"},
		{"gw.example.org", "distinguished name"},
	} {
		dir := t.TempDir()
		code, _, errOut := runCLI("keygen", "-o", filepath.Join(dir, "k"), "-cert", tt.dn, "-cert-out", filepath.Join(dir, "c"))
		if code == 0 || !strings.Contains(errOut, tt.err) {
			t.Errorf("keygen -cert %q: %d %q, want an error about %q", tt.dn, code, errOut, tt.err)
		}
	}
}
