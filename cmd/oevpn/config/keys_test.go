package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadPrivateKeyFormats: the PEM private key formats that strongSwan's
// pki and openssl write load (issue 11 item 16: PKCS#1 RSA keys were
// refused).
func TestLoadPrivateKeyFormats(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ek)
	p8, _ := x509.MarshalPKCS8PrivateKey(rk)
	tests := []struct {
		name, typ string
		der       []byte
		wantErr   string
	}{
		{"PKCS#1 RSA", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), ""},
		{"SEC 1 ECDSA", "EC PRIVATE KEY", sec1, ""},
		{"PKCS#8 RSA", "PRIVATE KEY", p8, ""},
		{"PKCS#1 labelled", "RSA PRIVATE KEY", sec1, `"RSA PRIVATE KEY" PEM block`},
		{"garbage", "PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x00}, `"PRIVATE KEY" PEM block`},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		path := filepath.Join(dir, strings.Repeat("k", i+1))
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: tt.typ, Bytes: tt.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadPrivateKey(path)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}
