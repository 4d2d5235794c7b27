package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestActionableErrors: each configuration mistake a new user makes gets
// a message with the file, the line, the key, the value and what is
// expected there.
func TestActionableErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"string for a list", "[interface]\nmode = \"netstack\"\naddresses = \"10.9.0.1/32\"\n",
			`x.toml:3: interface.addresses: "10.9.0.1/32" is a string where a list (e.g. ["…", "…"]) is expected`},
		{"string for a number", "[interface]\nmtu = \"big\"\n",
			`x.toml:2: interface.mtu: "big" is a string where a whole number is expected`},
		{"address out of range", "[interface]\nmode = \"netstack\"\naddresses = [\"192.0.2.300/32\"]\n",
			`x.toml:3: interface.addresses: "192.0.2.300/32" is not an address prefix (IPv4 field has value >255): want ADDRESS/LENGTH, e.g. "10.9.0.1/32"`},
		{"prefix without length", "[policy]\nprivate = [\"10.0.0.0\"]\n",
			`x.toml:2: policy.private: "10.0.0.0" is not an address prefix (no '/'): want ADDRESS/LENGTH`},
		{"bad address", "[[sa]]\npeer = \"192.0.2.300:4500\"\n",
			`x.toml:2: sa.peer: "192.0.2.300" is not an IP address (IPv4 field has value >255)`},
		{"misspelt section", "[policy]\nblock = [\"192.0.2.0/24\"]\n\n[peers]\nname = \"x\"\n",
			`x.toml:4: peers: unknown key (did you mean [[peer]]?)`},
		{"empty", "", "x.toml: nothing to do: no [[peer]], [[sa]], [policy] class, [autovpn] or [proxy] is configured"},
		{"interface only", "[interface]\nname = \"oe1\"\n", "nothing to do"},
	}
	for _, tt := range tests {
		_, err := Parse("x.toml", []byte(tt.src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v\nwant %s", tt.name, err, tt.want)
		}
	}
	if _, err := Parse("x.toml", []byte("[interface]\nname = \"oe1\"\n")); !errors.Is(err, ErrNothingToDo) {
		t.Errorf("an empty configuration: %v, want ErrNothingToDo", err)
	}
}

// TestPublicKeyAsPrivateKey: a public key given as private_key is named
// as such, with where it belongs, instead of an ASN.1 error.
func TestPublicKeyAsPrivateKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	p := filepath.Join(t.TempDir(), "pub.pem")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	_, err := loadPrivateKey(p)
	if err == nil || !strings.Contains(err.Error(), "holds a public key, not a private key") || !strings.Contains(err.Error(), "remote_public_key") {
		t.Errorf("got %v", err)
	}
}

// TestPSKLocalIDOptional: as in strongSwan, a PSK peer needs no local_id
// (the command takes our address toward the peer).
func TestPSKLocalIDOptional(t *testing.T) {
	c, err := Parse("x.toml", []byte("[[peer]]\nname = \"gw\"\naddress = \"192.0.2.2\"\nauth = \"psk\"\npsk = \"0123456789abcdefghij\"\nlocal = [\"10.9.0.1\"]\nremote = [\"10.2.0.0/16\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Peers[0]; p.LocalIdentity.Type != 0 || p.RemoteIdentity.String() != "192.0.2.2" {
		t.Errorf("identities: local %v, remote %v", p.LocalIdentity, p.RemoteIdentity)
	}
}
