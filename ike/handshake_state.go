package ike

// handshake is what an IKE SA needs only while IKE_SA_INIT and IKE_AUTH
// run, in either role: the DH exchange, the COOKIE, the raw IKE_SA_INIT
// messages and SK_pi/SK_pr, which the AUTH payloads sign and key
// (§2.15), and the first Child SA being negotiated. The daemon drops it
// when the IKE SA is established (forgetAuthState); what stays in ikeSA
// is the established SA's.
type handshake struct {
	group       dhGroup // the DH group of our KE
	dhPriv      any     // our DH private key
	ke          []byte  // our KE value
	cookie      []byte  // initiator: the responder's COOKIE, sent back (§2.6)
	cookieTries int     // initiator: COOKIE demands answered so far

	initReq, initResp []byte // the raw IKE_SA_INIT messages, for AUTH
	skPi, skPr        []byte // the keys of the AUTH payloads

	childSPI uint32 // inbound SPI reserved for the first Child SA
	// firstProp and firstTS are the first Child SA's proposal and
	// selectors (TSi, TSr) from the IKE_AUTH response, until installed.
	firstProp *Proposal
	firstTS   [2][]TrafficSelector

	lookingUp  bool   // responder: the peer's key is being looked up (PeerConfig.LookupKey)
	authSecret []byte // the AutoVPN shared secret the peer authenticated with: we answer with it too
}
