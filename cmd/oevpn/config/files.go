package config

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// resolve makes a path relative to the configuration file's directory.
func (c *Config) resolve(p string) string {
	if filepath.IsAbs(p) || c.Path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.Path), p)
}

// loadPrivateKey reads a PEM private key: PKCS#8 ("PRIVATE KEY"; Ed25519,
// ECDSA or RSA), PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"),
// refusing a file that others can read.
func loadPrivateKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: private key readable by group or others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	blk, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	var k any
	switch blk.Type {
	case "PUBLIC KEY", "CERTIFICATE":
		return nil, fmt.Errorf("%s holds a %s, not a private key: private_key names the file of our private key (PEM \"PRIVATE KEY\", as oevpn keygen -o writes it); the peer's public key goes in remote_public_key", path, strings.ToLower(blk.Type))
	case "RSA PRIVATE KEY": // PKCS#1, as strongSwan's pki --gen and openssl genrsa write
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY": // SEC 1
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %q PEM block: %v", path, blk.Type, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key type %T cannot sign", path, k)
	}
	return s, nil
}

// maxFileSize bounds the configuration, key and certificate files read.
const maxFileSize = 1 << 20

// readFile reads a regular file of at most maxFileSize octets (not a
// device or a FIFO that never ends).
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d octets", path, maxFileSize)
	}
	return data, nil
}

// loadCerts reads the PEM certificates in a file.
func loadCerts(path string) ([]*x509.Certificate, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return certs, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// readPEM reads the first PEM block of a file.
func readPEM(path string) (*pem.Block, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return blk, nil
}

// loadPublicKey reads a PEM SubjectPublicKeyInfo ("PUBLIC KEY").
func loadPublicKey(path string) (crypto.PublicKey, error) {
	blk, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return k, nil
}

// loadCRL reads a PEM or DER revocation list and checks its signature by
// one of the CAs.
func loadCRL(path string, issuers []*x509.Certificate) (*x509.RevocationList, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(data); blk != nil {
		data = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, err
	}
	for _, ca := range issuers {
		if crl.CheckSignatureFrom(ca) == nil {
			return crl, nil
		}
	}
	return nil, errors.New("not signed by the configured ca")
}
