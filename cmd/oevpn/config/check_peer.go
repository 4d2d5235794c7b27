package config

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/oevpn/oevpn/ike"
)

// checkPeers checks the [[peer]] tables: each peer in turn, and their names
// unique.
func (c *Config) checkPeers() error {
	names := map[string]bool{}
	for i := range c.Peers {
		if err := c.checkPeer(i, names); err != nil {
			return err
		}
	}
	return nil
}

// checkPeer applies the defaults of peer i and checks it; names holds the
// names of the peers before it.
func (c *Config) checkPeer(i int, names map[string]bool) error {
	p := &c.Peers[i]
	k := func(f string) string { return fmt.Sprintf("peer[%d].%s", i, f) }
	if p.Name == "" {
		p.Name = fmt.Sprintf("peer%d", i)
	}
	if names[p.Name] {
		return keyErr(k("name"), "%q names two peers", p.Name)
	}
	if strings.HasPrefix(p.Name, "oe-") {
		return keyErr(k("name"), "%q: names starting with \"oe-\" are opportunistic peers", p.Name)
	}
	names[p.Name] = true
	if !p.Address.IsValid() {
		return keyErr(k("address"), "missing: the peer's IP address")
	}
	for _, port := range []struct {
		v    *int
		def  int
		name string
	}{{&p.IKEPort, 500, "ike_port"}, {&p.NATTPort, 4500, "natt_port"}} {
		if *port.v == 0 {
			*port.v = port.def
		}
		if *port.v < 1 || *port.v > 65535 {
			return keyErr(k(port.name), "%d is not a port", *port.v)
		}
	}
	if len(p.Local) == 0 {
		return keyErr(k("local"), "missing: the local traffic selectors")
	}
	if len(p.Remote) == 0 {
		return keyErr(k("remote"), "missing: the remote traffic selectors")
	}
	if err := p.checkAuth(k); err != nil {
		return err
	}
	if err := p.parseIdentities(k); err != nil {
		return err
	}
	if err := p.parseProposals(k); err != nil {
		return err
	}
	if err := c.loadCredentials(p, k); err != nil {
		return err
	}
	return p.checkTimers(k)
}

// checkAuth checks that the peer names an authentication method and the
// files or secret it needs.
func (p *Peer) checkAuth(k func(string) string) error {
	switch p.Auth {
	case AuthPSK:
		if p.PSK == "" {
			return keyErr(k("psk"), "missing: auth = \"psk\" needs a secret of your own, at least 16 characters (e.g. from openssl rand -base64 32)")
		}
		if len(p.PSK) < 16 {
			return keyErr(k("psk"), "a pre-shared key needs at least 16 characters")
		}
	case AuthPubkey:
		if p.PrivateKey == "" {
			return keyErr(k("private_key"), "missing: the PEM file of our private key")
		}
		if p.RemotePublicKey == "" {
			return keyErr(k("remote_public_key"), "missing: the PEM file of the peer's public key")
		}
	case AuthCert:
		if p.PrivateKey == "" {
			return keyErr(k("private_key"), "missing: the PEM file of our private key")
		}
		if p.Certificate == "" {
			return keyErr(k("certificate"), "missing: the PEM file of our certificate")
		}
		if p.RemoteCert == "" && p.CA == "" {
			return keyErr(k("remote_certificate"), "missing: the peer's certificate to pin, or a ca to trust")
		}
	case AuthNull:
	case "":
		return keyErr(k("auth"), "missing: one of %q, %q, %q, %q", AuthPSK, AuthPubkey, AuthCert, AuthNull)
	default:
		return keyErr(k("auth"), "%q is not one of %q, %q, %q, %q", p.Auth, AuthPSK, AuthPubkey, AuthCert, AuthNull)
	}
	// Without local_id, PSK and raw-key peers get our address (the one
	// the peer is reached from, as strongSwan defaults it): the command
	// fills it in at start (PeerConfig.LocalID).
	return nil
}

// parseIdentities parses local_id and remote_id; without remote_id, a
// peer that authenticates must prove it is its address.
func (p *Peer) parseIdentities(k func(string) string) error {
	var err error
	if p.LocalID != "" {
		if p.LocalIdentity, err = ike.ParseIdentity(p.LocalID); err != nil {
			return keyErr(k("local_id"), "%v", err)
		}
	}
	switch {
	case p.RemoteID != "":
		if p.RemoteIdentity, err = ike.ParseIdentity(p.RemoteID); err != nil {
			return keyErr(k("remote_id"), "%v", err)
		}
	case p.Auth != AuthNull:
		// The peer must prove it is its address (with a certificate:
		// one that names the address), not whoever a CA vouches for.
		// AUTH_NULL peers prove nothing: no default.
		p.RemoteIdentity = ike.IdentityOf(p.Address)
	}
	return nil
}

// parseProposals parses the IKE and ESP proposals, defaults applied.
func (p *Peer) parseProposals(k func(string) string) error {
	if p.IKEProposals == "" {
		p.IKEProposals = ike.DefaultIKEProposals
	}
	if p.ESPProposals == "" {
		p.ESPProposals = ike.DefaultESPProposals
	}
	var err error
	if p.IKE, err = ike.ParseProposals(p.IKEProposals, ike.ProtoIKE); err != nil {
		return keyErr(k("ike_proposals"), "%v", err)
	}
	if p.ESP, err = ike.ParseProposals(p.ESPProposals, ike.ProtoESP); err != nil {
		return keyErr(k("esp_proposals"), "%v", err)
	}
	return nil
}

// loadCredentials loads the key, certificates and trust anchors the
// peer's authentication method names.
func (c *Config) loadCredentials(p *Peer, k func(string) string) error {
	var err error
	switch p.Auth {
	case AuthCert:
		return c.loadCertificates(p, k)
	case AuthPubkey:
		if p.Signer, err = loadPrivateKey(c.resolve(p.PrivateKey)); err != nil {
			return keyErr(k("private_key"), "%v", err)
		}
		if p.RemoteKey, err = loadPublicKey(c.resolve(p.RemotePublicKey)); err != nil {
			return keyErr(k("remote_public_key"), "%v", err)
		}
	}
	return nil
}

// loadCertificates loads a certificate peer's private key, our chain (each
// certificate issued by the next), the pinned certificates and the CAs.
func (c *Config) loadCertificates(p *Peer, k func(string) string) error {
	var err error
	if p.Signer, err = loadPrivateKey(c.resolve(p.PrivateKey)); err != nil {
		return keyErr(k("private_key"), "%v", err)
	}
	certs, err := loadCerts(c.resolve(p.Certificate))
	if err != nil {
		return keyErr(k("certificate"), "%v", err)
	}
	p.Cert, p.CertChain = certs[0], certs[1:]
	if !publicKeysEqual(p.Cert.PublicKey, p.Signer.Public()) {
		return keyErr(k("certificate"), "the certificate is not for the key in private_key")
	}
	for i := 1; i < len(certs); i++ {
		// Our certificate, then its issuer, and so on: the chain
		// sent to the peer.
		if err := certs[i-1].CheckSignatureFrom(certs[i]); err != nil {
			return keyErr(k("certificate"), "certificate %d (%s) did not issue certificate %d (%s): list the chain from ours to the root: %v",
				i+1, certs[i].Subject, i, certs[i-1].Subject, err)
		}
	}
	if p.RemoteCert != "" {
		if p.RemoteCerts, err = loadCerts(c.resolve(p.RemoteCert)); err != nil {
			return keyErr(k("remote_certificate"), "%v", err)
		}
	}
	if p.CA != "" {
		cas, err := loadCerts(c.resolve(p.CA))
		if err != nil {
			return keyErr(k("ca"), "%v", err)
		}
		p.Roots, p.CACerts = x509.NewCertPool(), cas
		for _, ca := range cas {
			p.Roots.AddCert(ca)
		}
	}
	return nil
}

// checkTimers checks the peer's lifetimes, retransmission, fragment size
// and start mode.
func (p *Peer) checkTimers(k func(string) string) error {
	for _, dur := range []struct {
		v    Duration
		name string
		min  time.Duration
	}{{p.IKELifetime, "ike_lifetime", time.Second}, {p.ChildLifetime, "child_lifetime", time.Second},
		{p.RetransmitBase, "retransmit_timeout", 10 * time.Millisecond}} {
		if dur.v != 0 && time.Duration(dur.v) < dur.min {
			return keyErr(k(dur.name), "%v is shorter than %v", time.Duration(dur.v), dur.min)
		}
	}
	if p.FragmentSize != 0 && (p.FragmentSize < 200 || p.FragmentSize > 65000) {
		return keyErr(k("fragment_size"), "%d is outside 200..65000", p.FragmentSize)
	}
	if p.RetransmitTries < 0 || p.RetransmitTries > 20 {
		return keyErr(k("retransmit_tries"), "%d is outside 1..20", p.RetransmitTries)
	}
	switch p.Start {
	case "":
		p.Start = StartNow
	case StartNow, StartTraffic, StartNever:
	default:
		return keyErr(k("start"), "%q is not %q, %q or %q", p.Start, StartNow, StartTraffic, StartNever)
	}
	return nil
}
