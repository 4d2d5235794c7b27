package ike

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/oevpn/oevpn/esp"
)

func randSPI() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if s := binary.BigEndian.Uint64(b[:]); s != 0 {
			return s
		}
	}
}

func randNonce() []byte {
	b := make([]byte, nonceLen)
	rand.Read(b)
	return b
}

// natHash is the NAT_DETECTION hash of §2.23: SHA-1(SPIi | SPIr | IP | port).
func natHash(spiI, spiR uint64, ap netip.AddrPort) []byte {
	h := sha1.New()
	binary.Write(h, binary.BigEndian, spiI)
	binary.Write(h, binary.BigEndian, spiR)
	h.Write(ap.Addr().Unmap().AsSlice())
	binary.Write(h, binary.BigEndian, ap.Port())
	return h.Sum(nil)
}

// natNotifies returns the NAT detection notifies. oevpn's datapath carries
// ESP in UDP only, so like strongSwan's encap=yes it sends a source hash
// that cannot match: the peer sees a NAT and encapsulates too (§2.23).
func natNotifies(spiI, spiR uint64, to netip.AddrPort) []Payload {
	bogus := make([]byte, sha1.Size)
	rand.Read(bogus)
	return []Payload{
		&NotifyPayload{NotifyType: NAT_DETECTION_SOURCE_IP, Data: bogus},
		&NotifyPayload{NotifyType: NAT_DETECTION_DESTINATION_IP, Data: natHash(spiI, spiR, to)},
	}
}

func sigHashNotify() *NotifyPayload {
	return &NotifyPayload{NotifyType: SIGNATURE_HASH_ALGORITHMS, Data: []byte{0, HashSHA2_256, 0, HashSHA2_384, 0, HashSHA2_512, 0, HashIdentity}}
}

// installChild keys and installs a Child SA of sa negotiated with chosen
// (whose SPI is the peer's), the exchange's nonces and, with PFS, the new
// shared secret. tsi and tsr are the exchange's final selectors.
func (d *Daemon) installChild(via *ikeSA, chosen *Proposal, nI, nR, shared []byte, ourSPI uint32, weInitiated bool, tsi, tsr []TrafficSelector) *ChildSA {
	return d.installChildDeferred(via, chosen, nI, nR, shared, ourSPI, weInitiated, tsi, tsr, false)
}

func (d *Daemon) installChildDeferred(via *ikeSA, chosen *Proposal, nI, nR, shared []byte, ourSPI uint32, weInitiated bool, tsi, tsr []TrafficSelector, deferred bool) *ChildSA {
	// Keys come from the IKE SA the exchange ran in; the Child SA belongs
	// to the one that replaced it, if it was rekeyed meanwhile.
	sa := via
	cs, err := childSuiteOf(chosen)
	if err != nil {
		d.log.Warn("bad ESP proposal", "peer", sa.peer.Name, "err", err)
		return nil
	}
	peerSPI := binary.BigEndian.Uint32(chosen.SPI)
	out, in, err := sa.childKeys(cs, nI, nR, shared, ourSPI, peerSPI, weInitiated)
	if err != nil {
		d.log.Warn("keying Child SA", "peer", sa.peer.Name, "err", err)
		return nil
	}
	// The hard lifetime is a backstop: rekeying happens at the soft one.
	life := sa.peer.childLifetime()
	hard := esp.Lifetime{Time: life + life/10 + 30*time.Second}
	soft := esp.Lifetime{}
	if !cs.ESN {
		soft.Packets = 1<<32 - 1<<24 // rekey well before the 32-bit sequence number runs out
	}
	out.Soft, out.Hard, in.Hard = soft, hard, hard
	local, remote := tsi, tsr
	if !weInitiated {
		local, remote = tsr, tsi
	}
	c := &ChildSA{ike: sa, Peer: sa.peer.nattAddr(), Local: selectors(local), Remote: selectors(remote), Out: out, In: in, Suite: cs,
		nonce: minNonce(nI, nR), Deferred: deferred, peerAuth: sa.peerAuthMethod()}
	if sa.natt {
		// Where the peer's authenticated messages come from, as a NAT
		// in front of it maps its port 4500 (RFC 7296 §2.23, RFC 3948).
		c.Peer = sa.remote
	}
	if err := d.dp.InstallChild(c); err != nil {
		d.log.Warn("installing Child SA", "peer", sa.peer.Name, "err", err)
		return nil
	}
	owner := via.current()
	c.ike = owner
	owner.children = append(owner.children, c)
	d.scheduleChildRekey(c)
	d.log.Info("Child SA installed", "peer", sa.peer.Name, "transform", out.Transform, "esn", cs.ESN,
		"spi_in", fmt.Sprintf("%#08x", in.SPI), "spi_out", fmt.Sprintf("%#08x", out.SPI), "local", c.Local, "remote", c.Remote)
	return c
}

// withoutDH drops DH transforms: a Child SA created in IKE_AUTH has no
// KE payload, so no PFS.
func withoutDH(ts []Transform) []Transform {
	out := make([]Transform, 0, len(ts))
	for _, t := range ts {
		if t.Type != TransformDH {
			out = append(out, t)
		}
	}
	return out
}

func minNonce(a, b []byte) []byte {
	if bytes.Compare(a, b) < 0 {
		return a
	}
	return b
}

// verifyPeer checks the peer's AUTH payload over octets with the key its
// configuration or certificate gives, then asks the Authorizer.
func (d *Daemon) verifyPeer(sa *ikeSA, m *Message, id Identity, auth *AuthPayload, octets []byte) error {
	var sent []*CertPayload
	for _, p := range m.Payloads {
		if c, ok := p.(*CertPayload); ok && !c.Request {
			sent = append(sent, c)
		}
	}
	pa := sa.peer.PeerAuth
	if sa.lookedUp != nil {
		pa.PublicKey = sa.lookedUp
	}
	if auth.Method == AuthPSK && pa.PSK == nil && pa.SharedSecret != nil {
		// AutoVPN: the shared secret authenticates the peer, whatever
		// certificate it now presents (§9.2), which is kept for a roll.
		var cert *x509.Certificate
		for _, c := range sent {
			if pc, err := x509.ParseCertificate(c.Data); err == nil && c.Encoding == CertX509Signature && certConfirms(pc, id) {
				cert = pc
				break
			}
		}
		if pa.PSK = pa.SharedSecret(id, cert); pa.PSK == nil {
			return fmt.Errorf("%w: peer used a shared secret, and none is kept (or usable) for %v", ErrAuth, id)
		}
		if err := verifyAuth(sa.prf, &pa, auth, octets); err != nil {
			return err
		}
		sa.bySecret = true
		sa.hs.authSecret = pa.PSK
		sa.peerCert = cert
		return nil
	}
	key, cert, err := peerKeyCert(&pa, id, sent)
	if err != nil {
		return err
	}
	pa.PublicKey = key
	if err := verifyAuth(sa.prf, &pa, auth, octets); err != nil {
		return err
	}
	sa.peerCert = cert
	sa.peerNull = auth.Method == AuthNULL
	if d.cfg.Authorizer == nil || sa.peer.Opportunistic {
		return nil
	}
	method := "signature"
	switch auth.Method {
	case AuthPSK:
		method, key = "psk", nil
	case AuthNULL:
		method, key = "null", nil
	}
	if err := d.cfg.Authorizer.AuthorizePeer(PeerIdentity{Peer: sa.peer.Name, Identity: id.String(), Key: key, Method: method}); err != nil {
		return fmt.Errorf("%w: %w", ErrAuth, err)
	}
	return nil
}

// certPayloads returns our CERT payloads: our certificate and the
// intermediate CA certificates after it, if we have a certificate. They are
// sent whether or not the peer asked with a CERTREQ (§3.6 allows it), as
// a peer with strongSwan's send_cert = ifasked would ask anyway.
func certPayloads(p *PeerConfig) []Payload {
	if p.Auth.Cert == nil {
		return nil
	}
	out := []Payload{&CertPayload{Encoding: CertX509Signature, Data: p.Auth.Cert.Raw}}
	for _, c := range p.Auth.Chain {
		out = append(out, &CertPayload{Encoding: CertX509Signature, Data: c.Raw})
	}
	return out
}

// autovpnPayloads returns our Contact Details and AUTOVPN_SHARED_SECRET
// for an IKE_AUTH message, as the peer's configuration asks.
func autovpnPayloads(sa *ikeSA) []Payload {
	var out []Payload
	if sa.peer.Contact != "" {
		out = append(out, &ContactDetailsPayload{Text: sa.peer.Contact})
	}
	if sa.peer.SendSharedSecret {
		sa.sentSecretReq = true
		out = append(out, &NotifyPayload{NotifyType: AUTOVPN_SHARED_SECRET})
	}
	return out
}

// readAutoVPN notes the AutoVPN payloads of the peer's IKE_AUTH message.
func readAutoVPN(sa *ikeSA, m *Message) {
	if c := Get[*ContactDetailsPayload](m); c != nil {
		sa.peerContact = c.Text
	}
	if m.Notify(AUTOVPN_SHARED_SECRET) != nil {
		sa.sentSecretReq = true
	}
}

// reportEstablished tells the peer's OnEstablished what IKE_AUTH revealed,
// and forgets the peer's certificate and Contact Details: nothing else
// needs them, and a parsed certificate is the largest part of an
// established IKE SA.
func (d *Daemon) reportEstablished(sa *ikeSA) {
	p := sa.peer
	cert, contact := sa.peerCert, sa.peerContact
	sa.peerCert, sa.peerContact = nil, ""
	if p.OnEstablished == nil {
		return
	}
	info := EstablishedInfo{Peer: p.Name, Remote: sa.remote, PeerID: sa.peerIDSeen, Cert: cert,
		BySharedSecret: sa.bySecret, Contact: contact}
	if sa.sentSecretReq {
		info.SharedSecret = sa.prf.plus(sa.skD, []byte(sharedSecretLabel), sa.prf.size)
	}
	p.OnEstablished(info)
}

// sharedSecretLabel is the prf+ seed of the AutoVPN shared secret (§9.2).
const sharedSecretLabel = "shared secret for AutoVPN"
