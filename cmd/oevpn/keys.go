package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/ike"
)

// cmdKeygen writes a new private key (PKCS#8 PEM, mode 0600) and prints the
// public key.
func cmdKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen")
	kind := fs.String("t", "ed25519", "key `type`: ed25519, ecdsa (P-256) or rsa (3072 bits)")
	out := fs.String("o", "", "write the private key to this `file` (refuses to overwrite)")
	certDN := fs.String("cert", "", "also make a self-signed certificate with this subject `DN`, e.g. \"CN=gw1.example.org, O=Example\" (AutoVPN)")
	certOut := fs.String("cert-out", "", "write the certificate to this `file` (with -cert)")
	days := fs.Int("days", 3650, "the certificate's validity in `days`")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *out == "" || len(rest) > 0 || (*certDN == "") != (*certOut == "") {
		return fmt.Errorf("%w: oevpn keygen [-t ed25519|ecdsa|rsa] -o FILE [-cert DN -cert-out FILE]", errUsage)
	}
	var subject ike.Identity
	if *certDN != "" {
		if subject, err = parseSubject(*certDN); err != nil {
			return fmt.Errorf("%w: -cert: %v", errUsage, err)
		}
	}
	var key crypto.Signer
	switch *kind {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return fmt.Errorf("%w: key type %q (want ed25519, ecdsa or rsa)", errUsage, *kind)
	}
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := errors.Join(pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), f.Close()); err != nil {
		os.Remove(*out)
		return err
	}
	if *certDN != "" {
		if err := writeSelfSigned(*certOut, subject, key, *days); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote %s: self-signed certificate for %q\n", *certOut, subject)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%s, mode 0600); public key:\n", *out, *kind)
	return pem.Encode(stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

// cmdDNSRecords prints the records that publish a key for an address or a
// domain name.
func cmdDNSRecords(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dns-records")
	keyFile := fs.String("k", "", "the `key` file: a private key (PKCS#8 PEM) or a PUBLIC KEY PEM")
	gateway := fs.String("gateway", "", "the security gateway, an `address or @FQDN` (default: the target itself)")
	prec := fs.Int("p", 10, "`precedence` (lower is preferred)")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *keyFile == "" || len(rest) != 1 {
		return fmt.Errorf("%w: oevpn dns-records -k KEYFILE [-gateway ADDR|@FQDN] [-p N] ADDRESS|FQDN", errUsage)
	}
	pub, err := readPublicKey(*keyFile)
	if err != nil {
		return err
	}
	lines, err := dnsoe.Records(rest[0], *gateway, *prec, pub)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "; oevpn: opportunistic IPsec records for %s — paste into the zone, sign it with DNSSEC\n", rest[0])
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return nil
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	switch blk.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(blk.Bytes)
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
		var k any
		switch blk.Type {
		case "RSA PRIVATE KEY": // PKCS#1: pki --gen, openssl genrsa
			k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		if s, ok := k.(crypto.Signer); ok {
			return s.Public(), nil
		}
	}
	return nil, fmt.Errorf("%s: a %q PEM block is not a key oevpn reads", path, blk.Type)
}

// parseSubject reads the DN of a certificate to make, e.g. "CN=gw1.example.org,
// O=Example", with the parser of IKE identities: the certificate's subject
// is then, attribute for attribute and in the order written, the identity
// a peer that writes the same DN as remote_id asks it to confirm.
func parseSubject(s string) (ike.Identity, error) {
	id, err := ike.ParseIdentity(s)
	if err != nil {
		return id, err
	}
	if id.Type != ike.IDDERASN1D {
		return id, fmt.Errorf("%q is not a distinguished name (want e.g. \"CN=gw1.example.org, O=Example\")", s)
	}
	var rdns pkix.RDNSequence
	var n pkix.Name
	if _, err := asn1.Unmarshal(id.Data, &rdns); err != nil {
		return id, err
	}
	if n.FillFromRDNSequence(&rdns); n.CommonName == "" {
		return id, errors.New("a CN is needed")
	}
	return id, nil
}

// writeSelfSigned writes a self-signed certificate for key (AutoVPN peers
// present them and are trusted by leap of faith).
func writeSelfSigned(path string, subject ike.Identity, key crypto.Signer, days int) error {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, RawSubject: subject.Data, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Duration(days) * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := errors.Join(pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: der}), f.Close()); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
