package ike

import "crypto/x509"

// handshake is what an IKE SA needs only while IKE_SA_INIT and IKE_AUTH
// run, in either role: the raw IKE_SA_INIT messages and SK_pi/SK_pr,
// which the AUTH payloads sign and key (§2.15), and what the peer's
// IKE_AUTH revealed until it is reported. Each role's handshake embeds it
// (initiatorHandshake, responderHandshake) and holds what only that role
// needs; its methods are the role's steps. The daemon drops it when the
// IKE SA is established (forgetAuthState): what stays in ikeSA is the
// established SA's.
type handshake struct {
	d  *Daemon
	sa *ikeSA

	initReq, initResp []byte // the raw IKE_SA_INIT messages, for AUTH
	skPi, skPr        []byte // the keys of the AUTH payloads

	// What the peer's IKE_AUTH revealed, for reportEstablished.
	peerCert      *x509.Certificate // the certificate the peer presented
	peerContact   string            // the peer's Contact Details
	bySecret      bool              // the peer authenticated with the AutoVPN shared secret
	authSecret    []byte            // that secret: the responder answers with it too
	sentSecretReq bool              // AUTOVPN_SHARED_SECRET was in an IKE_AUTH message
}

// initiatorHandshake is the handshake of an IKE SA we initiate
// (handshake_initiator.go has its steps).
type initiatorHandshake struct {
	handshake
	group       dhGroup // the DH group of our KE
	dhPriv      any     // our DH private key, until the shared secret is computed
	ke          []byte  // our KE value, kept for a retry with a COOKIE (§2.6)
	cookie      []byte  // the responder's COOKIE, sent back (§2.6)
	cookieTries int     // COOKIE demands answered so far

	childSPI uint32 // inbound SPI reserved for the first Child SA
	// firstProp and firstTS are the first Child SA's proposal and
	// selectors (TSi, TSr) from the IKE_AUTH response, until installed.
	firstProp *Proposal
	firstTS   [2][]TrafficSelector
}

// responderHandshake is the handshake of an IKE SA the peer initiates
// (handshake_responder.go has its steps).
type responderHandshake struct {
	handshake
	chosen    *Proposal // the IKE proposal chosen, for the IKE_SA_INIT response
	ke        []byte    // our KE value, for the IKE_SA_INIT response
	lookingUp bool      // the peer's key is being looked up (PeerConfig.LookupKey)
}

// hs returns the state common to both roles' handshakes, or nil once the
// IKE SA is established (and for one made by a rekey).
func (sa *ikeSA) hs() *handshake {
	switch {
	case sa.ihs != nil:
		return &sa.ihs.handshake
	case sa.rhs != nil:
		return &sa.rhs.handshake
	}
	return nil
}

// forgetAuthState drops the handshake state once the IKE SA is up, with
// SK_pi and SK_pr zeroed. Reauthentication makes a new IKE SA, and a
// retransmitted IKE_AUTH request is answered from lastResp, so nothing
// needs it again; the nonces stay in the SA (the first Child SA's keys,
// §2.17, and the duplicate check, §2.8.1).
func (sa *ikeSA) forgetAuthState() {
	if hs := sa.hs(); hs != nil {
		clear(hs.skPi)
		clear(hs.skPr)
	}
	// The AutoVPN secret in it is the trust store's, not ours to zero.
	sa.ihs, sa.rhs = nil, nil
}
