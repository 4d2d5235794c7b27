package ike

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"net/netip"
	"time"
)

// PeerConfig is one configured peer (a "configured tunnel").
type PeerConfig struct {
	Name string
	// Addr is the peer's address; IKEPort and NATTPort its ports (500 and
	// 4500 unless set).
	Addr              netip.Addr
	IKEPort, NATTPort uint16
	// LocalID is sent as our identity; RemoteID must match the peer's
	// (a zero RemoteID accepts the peer's address as its identity, which
	// a certificate must then confirm; opportunistic peers excepted).
	LocalID, RemoteID Identity
	Auth              Credential
	PeerAuth          PeerAuth
	IKEProposals      []Proposal
	ESPProposals      []Proposal
	LocalTS, RemoteTS Selectors

	// IKELifetime and ChildLifetime are when the IKE SA and each Child SA
	// are rekeyed (defaults 4h and 1h, minus up to 10% jitter).
	IKELifetime, ChildLifetime time.Duration
	// DPD is the interval of liveness checks when nothing was heard from
	// the peer (default 30s; negative disables them).
	DPD time.Duration
	// RetransmitBase and RetransmitTries bound retransmission: the first
	// retry after RetransmitBase (default 500ms), doubling, giving up
	// after RetransmitTries (default 6) sends.
	RetransmitBase  time.Duration
	RetransmitTries int
	// Keepalive is the NAT-keepalive interval while IKE uses the NAT-T
	// port (default 20s, RFC 3948 §4).
	Keepalive time.Duration
	// FragmentSize is the largest encrypted IKE message sent whole when
	// the peer supports fragmentation (default DefaultFragmentSize).
	FragmentSize int
	// AutoStart re-initiates the IKE SA after it failed or the peer died,
	// backing off exponentially while it keeps failing.
	AutoStart bool
	// restarts counts the failures since the peer last came up.
	restarts int
	// refusalLogged is when a refusal of the peer's proposals was last
	// logged at WARN (logRefusal).
	refusalLogged time.Time

	// Opportunistic marks a peer that opportunism made (AddPeer, or
	// Config.Responder): it is never found by the address of a configured
	// peer, the Authorizer is not asked (its key came from DNS, or it is
	// unauthenticated), and it is forgotten when its last IKE SA goes.
	Opportunistic bool
	// LookupKey, if set, finds the public key of a peer that
	// authenticates with a signature when PeerAuth pins none: the
	// reverse-zone check of an opportunistic initiator
	// (draft-richardson-ipsec-opportunistic §4.12.2). It runs on a
	// goroutine of its own and may block.
	LookupKey func(id Identity, addr netip.Addr) (crypto.PublicKey, error)
	// CheckNull, if set, is asked before a peer that authenticates with
	// AUTH_NULL from addr is accepted: an error refuses it (opportunism
	// refuses AUTH_NULL for an address that must be authenticated). It
	// runs on the daemon's goroutine and must not block.
	CheckNull func(addr netip.Addr) error

	// AutoVPN (draft-sheffer-autovpn §8): AutoVPNNonce, as initiator, is
	// the Nonce-R of the completed probe, sent in IKE_SA_INIT; Contact is
	// sent as Contact Details in IKE_AUTH; SendSharedSecret asks for a
	// shared secret with AUTOVPN_SHARED_SECRET in IKE_AUTH.
	AutoVPNNonce     []byte
	Contact          string
	SendSharedSecret bool
	// OnEstablished, if set, is told (on the daemon's goroutine; it must
	// not block) what the IKE_AUTH exchange revealed about the peer.
	OnEstablished func(EstablishedInfo)
	// OnIKERekey, if set, is told (on the daemon's goroutine; it must not
	// block) that the IKE SA was rekeyed, by either side: opportunism
	// checks then that the peer's key is still published.
	OnIKERekey func()
}

// EstablishedInfo is what an IKE SA's authentication said about the peer.
type EstablishedInfo struct {
	Peer   string
	Remote netip.AddrPort
	PeerID Identity
	// Cert is the certificate the peer sent (with a shared secret: the
	// one it now uses, perhaps a rolled one).
	Cert *x509.Certificate
	// BySharedSecret is set when the peer authenticated with the AutoVPN
	// shared secret.
	BySharedSecret bool
	// Contact is the peer's Contact Details, plain text.
	Contact string
	// SharedSecret is set when either side sent AUTOVPN_SHARED_SECRET:
	// prf+(SK_d, "shared secret for AutoVPN") of this IKE SA.
	SharedSecret []byte
}

func (p *PeerConfig) ikeAddr() netip.AddrPort { return netip.AddrPortFrom(p.Addr, or(p.IKEPort, 500)) }

func (p *PeerConfig) nattAddr() netip.AddrPort {
	return netip.AddrPortFrom(p.Addr, or(p.NATTPort, 4500))
}

func or(v, def uint16) uint16 {
	if v == 0 {
		return def
	}
	return v
}

func (p *PeerConfig) setDefaults() error {
	if len(p.IKEProposals) == 0 {
		p.IKEProposals, _ = ParseProposals(DefaultIKEProposals, ProtoIKE)
	}
	if len(p.ESPProposals) == 0 {
		p.ESPProposals, _ = ParseProposals(DefaultESPProposals, ProtoESP)
	}
	if len(p.LocalTS) == 0 || len(p.RemoteTS) == 0 {
		return fmt.Errorf("ike: peer %s: traffic selectors missing", p.Name)
	}
	return nil
}

func (d *Daemon) peerByName(name string) *PeerConfig {
	for _, p := range d.configured() {
		if p.Name == name {
			return p
		}
	}
	return d.dynamic[name]
}

// forgetIfUnused drops an opportunistic peer that has no IKE SA left.
func (d *Daemon) forgetIfUnused(p *PeerConfig) {
	if !p.Opportunistic || d.dynamic[p.Name] != p {
		return
	}
	for _, sa := range d.sas {
		if sa.peer == p {
			return
		}
	}
	delete(d.dynamic, p.Name)
}

func (d *Daemon) peerByAddr(a netip.Addr) *PeerConfig {
	for _, p := range d.configured() {
		if p.Addr == a.Unmap() {
			return p
		}
	}
	return nil
}

func (d *Daemon) acceptID(p *PeerConfig, id Identity) bool {
	if p.RemoteID.Type != 0 {
		return p.RemoteID.Equal(id)
	}
	// A configured peer must be its address: with certificates, the
	// certificate must then name the address (checked with the AUTH
	// payload), so that a CA's certificate for another identity does
	// not do. An opportunistic peer's key came from its address's
	// reverse zone: the key, not the name, speaks for the address; an
	// AutoVPN peer's certificate is for the trust store to judge.
	return IdentityOf(p.Addr).Equal(id) || (p.PeerAuth.Null && id.Type == IDNull) || p.PeerAuth.LeapOfFaith != nil ||
		(p.Opportunistic && p.PeerAuth.PublicKey != nil)
}

// expectedID describes the identity acceptID wants, for error messages.
func expectedID(p *PeerConfig) string {
	if p.RemoteID.Type != 0 {
		return "the configured " + p.RemoteID.String()
	}
	return "the peer's address " + p.Addr.String() + " (the default remote ID)"
}

// ourID returns the identity we use with p.
func ourID(p *PeerConfig) Identity {
	switch {
	case p.LocalID.Type != 0:
		return p.LocalID
	case p.Auth.Cert != nil:
		return CertIdentity(p.Auth.Cert)
	}
	return Identity{Type: IDNull}
}

func (p *PeerConfig) retransmitBase() time.Duration {
	return orDur(p.RetransmitBase, retransmitBase)
}

func (p *PeerConfig) retransmitTries() int {
	if p.RetransmitTries > 0 {
		return p.RetransmitTries
	}
	return retransmitTries
}

func orDur(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func (p *PeerConfig) childLifetime() time.Duration { return orDur(p.ChildLifetime, time.Hour) }

func (p *PeerConfig) ikeLifetime() time.Duration { return orDur(p.IKELifetime, 4*time.Hour) }

func (p *PeerConfig) dpd() time.Duration { return orDur(p.DPD, 30*time.Second) }

func (p *PeerConfig) keepalive() time.Duration { return orDur(p.Keepalive, 20*time.Second) }
