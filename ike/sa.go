package ike

import (
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/oevpn/oevpn/esp"
)

type saState int

const (
	stateInitSent saState = iota // initiator: IKE_SA_INIT request out
	stateAuthSent                // initiator: IKE_AUTH request out
	stateInitDone                // responder: IKE_SA_INIT answered, waiting for IKE_AUTH
	stateEstablished
	stateDeleting
	stateDead
)

func (s saState) String() string {
	return [...]string{"init-sent", "auth-sent", "init-done", "established", "deleting", "dead"}[s]
}

// ikeSA is one IKE SA. It is owned by the daemon's goroutine.
type ikeSA struct {
	d         *Daemon
	peer      *PeerConfig
	initiator bool
	state     saState
	spiI      uint64
	spiR      uint64
	remote    netip.AddrPort // where the peer's IKE messages come from
	natt      bool           // IKE moved to the NAT-T port
	created   time.Time

	// hs is the state of IKE_SA_INIT and IKE_AUTH, dropped once the IKE
	// SA is up (nil for one made by a rekey, but while its keys are
	// derived).
	hs *handshake

	suite   Suite
	prf     *prfFunc
	nI, nR  []byte   // the nonces: the first Child SA's keys (§2.17), the duplicate check (§2.8.1)
	halfKey *halfKey // set while half-open (responder): the key in Daemon.half

	skD     []byte
	out, in *skCipher

	nextMsgID      uint32   // the ID of our next request
	peerMsgID      uint32   // the ID expected in the peer's next request
	lastResp       [][]byte // our last response (or its fragments), resent for a retransmitted request
	lastReq        [32]byte // Message.sum of the request lastResp answers
	fragOK         bool     // the peer supports IKE fragmentation (RFC 7383)
	frags          *reassembly
	pending        *request
	peerIDSeen     Identity
	children       []*ChildSA
	lingering      []lingering // retired Child SAs whose inbound SAs still accept packets
	queue          []exchange  // requests waiting for the window
	lastHeard      time.Time   // last authenticated message from the peer
	watchIn        uint64      // inbound and outbound ESP packets of the Child SAs at the last traffic watch
	watchOut       uint64
	lastIn         time.Time // when watchIn last grew
	rekeyTimer     *time.Timer
	rekeyAt        time.Time // when rekeyTimer fires (for status)
	dpdTimer       *time.Timer
	keepaliveTimer *time.Timer
	rekeyed        bool              // replaced by a rekeyed IKE SA: children moved away
	stopped        bool              // ended by Down or Close: not restarted
	suspect        bool              // the peer may have lost it: liveness checks give up sooner
	rekeyingIKE    bool              // our CREATE_CHILD_SA rekeying this IKE SA is under way
	next           *ikeSA            // the IKE SA that replaced this one
	colliding      *ikeSA            // the peer's rekey of this SA, made while ours ran (§2.8.2)
	creatingChild  bool              // our CREATE_CHILD_SA for a new Child SA is under way
	lookedUp       crypto.PublicKey  // the key found by PeerConfig.LookupKey, which verified the peer's AUTH
	peerNull       bool              // the peer authenticated with AUTH_NULL
	peerCert       *x509.Certificate // the certificate the peer presented, until reported
	bySecret       bool              // the peer authenticated with the AutoVPN shared secret
	sentSecretReq  bool              // AUTOVPN_SHARED_SECRET was in an IKE_AUTH message of this SA
	peerContact    string            // the peer's Contact Details, until reported

	// coverAsked are the remote selectors asked for in Child SAs of
	// their own after the peer narrowed ours (coverSelectors).
	coverAsked Selectors
	// Child SAs the peer deleted or refused (childLost): how many in a
	// row, the last one, when restoreChildren may ask again, and the
	// timer that waits for it.
	childLosses   int
	lastChildLoss time.Time
	restoreAt     time.Time
	restoreTimer  *time.Timer
	// invalidSPISent is when this IKE SA last told the peer of ESP with
	// an SPI we do not know; invalidSPIBusy, that it is not answered.
	invalidSPISent time.Time
	invalidSPIBusy bool
}

// request is our outstanding request, retransmitted until answered.
type request struct {
	msgs       [][]byte
	sent       time.Time // first
	tries      int
	timer      *time.Timer
	id         uint32
	onResponse func(*ikeSA, *Message)
}

// ChildSA is an established pair of ESP SAs, as installed in the datapath.
type ChildSA struct {
	ike        *ikeSA
	rekeyTimer *time.Timer
	rekeyAt    time.Time
	rekeying   bool     // a CREATE_CHILD_SA to replace it is under way
	replaced   bool     // rekeyed: to be deleted
	successor  *ChildSA // the Child SA that replaced it
	peerAuth   string
	nonce      []byte // the lower of the nonces that created it (§2.8.1)

	Peer          netip.AddrPort // the peer's NAT-T address
	Local, Remote Selectors
	Out, In       esp.Config
	Suite         ChildSuite
	// Deferred asks the datapath not to send on this SA before a packet
	// arrives on it while an older SA covers the same traffic (we answered
	// a rekey; the peer installs its inbound SA when our answer arrives).
	Deferred bool
}

// forgetAuthState drops the handshake state once the IKE SA is up, with
// SK_pi and SK_pr zeroed. Reauthentication makes a new IKE SA, and a
// retransmitted IKE_AUTH request is answered from lastResp, so nothing
// needs it again; the nonces stay in the SA (the first Child SA's keys,
// §2.17, and the duplicate check, §2.8.1).
func (sa *ikeSA) forgetAuthState() {
	if sa.hs != nil {
		clear(sa.hs.skPi)
		clear(sa.hs.skPr)
		sa.hs = nil // the AutoVPN secret in it is the trust store's, not ours to zero
	}
}

// current follows the chain of rekeys from sa to the IKE SA that now owns
// the peer's Child SAs.
func (sa *ikeSA) current() *ikeSA {
	for i := 0; sa.next != nil && i < 16; i++ {
		sa = sa.next
	}
	return sa
}

// PeerAuthMethod is how the peer of the Child SA's IKE SA authenticates:
// "psk", "signature", "cert" or "null" (set when the SA is made; safe to
// read from any goroutine).
func (c *ChildSA) PeerAuthMethod() string { return c.peerAuth }

// peerAuthMethod is how the peer authenticated.
func (sa *ikeSA) peerAuthMethod() string {
	switch {
	case sa.peerNull:
		return "null"
	case sa.lookedUp != nil:
		return "signature"
	}
	return peerAuthMethod(&sa.peer.PeerAuth)
}

func peerAuthMethod(pa *PeerAuth) string {
	switch {
	case pa.PSK != nil:
		return "psk"
	case pa.usesCerts():
		return "cert"
	case pa.PublicKey != nil:
		return "signature"
	case pa.Null:
		return "null"
	}
	return ""
}

func (sa *ikeSA) ourSPI() uint64 {
	if sa.initiator {
		return sa.spiI
	}
	return sa.spiR
}

// deriveKeys computes SKEYSEED and the IKE SA keys (§2.14).
func (sa *ikeSA) deriveKeys(shared []byte) error {
	prf, err := newPRF(sa.suite.PRF)
	if err != nil {
		return err
	}
	nonces := append(append([]byte(nil), sa.nI...), sa.nR...)
	return sa.deriveKeysFrom(prf, prf.sum(nonces, shared))
}

// rekeyKeys derives the keys of an IKE SA that rekeys old (§2.18):
// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF.
func (sa *ikeSA) rekeyKeys(old *ikeSA, shared []byte) error {
	prf, err := newPRF(sa.suite.PRF)
	if err != nil {
		return err
	}
	seed := append(append(append([]byte(nil), shared...), sa.nI...), sa.nR...)
	return sa.deriveKeysFrom(prf, old.prf.sum(old.skD, seed))
}

func (sa *ikeSA) deriveKeysFrom(prf *prfFunc, skeyseed []byte) error {
	var err error
	encr, err := newEncrSpec(sa.suite.Encr)
	if err != nil {
		return err
	}
	var integ integSpec
	if !encr.aead {
		if integ, err = newIntegSpec(sa.suite.Integ); err != nil {
			return err
		}
	}
	sa.prf = prf
	nonces := append(append([]byte(nil), sa.nI...), sa.nR...)
	seed := binary.BigEndian.AppendUint64(nonces, sa.spiI)
	seed = binary.BigEndian.AppendUint64(seed, sa.spiR)
	eLen := encr.keyLen + encr.salt
	total := prf.size + 2*integ.keyLen + 2*eLen + 2*prf.size
	km := prf.plus(skeyseed, seed, total)
	take := func(n int) []byte {
		k := km[:n:n]
		km = km[n:]
		return k
	}
	sa.skD = take(prf.size)
	skAi, skAr := take(integ.keyLen), take(integ.keyLen)
	skEi, skEr := take(eLen), take(eLen)
	if sa.hs == nil {
		sa.hs = &handshake{} // a rekey's: established drops it at once
	}
	sa.hs.skPi, sa.hs.skPr = take(prf.size), take(prf.size)
	ci, err := newSKCipher(encr, integ, skEi, skAi)
	if err != nil {
		return err
	}
	cr, err := newSKCipher(encr, integ, skEr, skAr)
	if err != nil {
		return err
	}
	if sa.initiator {
		sa.out, sa.in = ci, cr
	} else {
		sa.out, sa.in = cr, ci
	}
	return nil
}

// encrypt builds an encrypted message of the given exchange.
func (sa *ikeSA) encrypt(exch ExchangeType, msgID uint32, response bool, payloads []Payload) ([]byte, error) {
	inner, first, err := marshalChain(nil, payloads)
	if err != nil {
		return nil, err
	}
	ptLen := len(inner) + 1
	if sa.out.aead == nil {
		ptLen += (16 - ptLen%16) % 16
	}
	skLen := payloadHeaderLen + sa.out.ivLen() + ptLen + sa.out.icvLen
	h := Header{SPIi: sa.spiI, SPIr: sa.spiR, NextPayload: PayloadSK, Exchange: exch, MessageID: msgID,
		Length: uint32(HeaderLen + skLen)}
	if sa.initiator {
		h.Flags |= FlagInitiator
	}
	if response {
		h.Flags |= FlagResponse
	}
	if h.Length > MaxMessageLen {
		return nil, fmt.Errorf("%w: message of %d octets (fragmentation is not implemented)", ErrMalformed, h.Length)
	}
	b := h.marshal(make([]byte, 0, h.Length))
	b = append(b, byte(first), 0)
	b = binary.BigEndian.AppendUint16(b, uint16(skLen))
	out, err := sa.out.seal(b, inner)
	if err != nil {
		return nil, err
	}
	if len(out) != int(h.Length) {
		return nil, fmt.Errorf("ike: internal error: encrypted message is %d octets, header says %d", len(out), h.Length)
	}
	return out, nil
}

// decrypt verifies and decrypts m's SK payload and appends the inner
// payloads to m.Payloads.
func (sa *ikeSA) decrypt(m *Message) error {
	if m.decrypted {
		return nil
	}
	if !m.Encrypted() {
		return ErrNoSK
	}
	if m.skType == PayloadSKF {
		return fmt.Errorf("%w: IKE fragments (RFC 7383)", ErrUnsupported)
	}
	pt, err := sa.in.open(m.raw, m.skOff+payloadHeaderLen)
	if err != nil {
		return err
	}
	return walk(m.skNext, pt, func(pt PayloadType, critical bool, body []byte, _ int) error {
		if pt == PayloadSK || pt == PayloadSKF {
			return fmt.Errorf("%w: nested SK payload", ErrMalformed)
		}
		p, err := decodePayload(pt, critical, body)
		if err != nil {
			return err
		}
		m.Payloads = append(m.Payloads, p)
		return nil
	})
}

// espTransform maps a negotiated ESP suite to the datapath's transform.
func espTransform(cs ChildSuite) (esp.Transform, error) {
	switch {
	case cs.Encr.ID == ENCR_AES_GCM_16 && cs.Encr.KeyLen == 128:
		return esp.AESGCM128, nil
	case cs.Encr.ID == ENCR_AES_GCM_16 && cs.Encr.KeyLen == 256:
		return esp.AESGCM256, nil
	case cs.Encr.ID == ENCR_CHACHA20_POLY1305:
		return esp.ChaCha20Poly1305, nil
	case cs.Encr.ID == ENCR_AES_CBC && cs.Integ == AUTH_HMAC_SHA2_256_128 && cs.Encr.KeyLen == 128:
		return esp.AESCBC128HMACSHA256, nil
	case cs.Encr.ID == ENCR_AES_CBC && cs.Integ == AUTH_HMAC_SHA2_256_128 && cs.Encr.KeyLen == 256:
		return esp.AESCBC256HMACSHA256, nil
	}
	return 0, fmt.Errorf("%w: ESP cipher %d/%d with integrity %d", ErrUnsupported, cs.Encr.ID, cs.Encr.KeyLen, cs.Integ)
}

// childKeys derives a Child SA's keys (§2.17) and returns the datapath
// configurations for the outbound and inbound SA.
func (sa *ikeSA) childKeys(cs ChildSuite, nI, nR, shared []byte, ourSPI, peerSPI uint32, weInitiated bool) (out, in esp.Config, err error) {
	tr, err := espTransform(cs)
	if err != nil {
		return out, in, err
	}
	n := tr.KeyLen()
	seed := append(append(append([]byte(nil), shared...), nI...), nR...)
	km := sa.prf.plus(sa.skD, seed, 2*n)
	iToR, rToI := km[:n:n], km[n:]
	out = esp.Config{Transform: tr, SPI: peerSPI, ESN: cs.ESN}
	in = esp.Config{Transform: tr, SPI: ourSPI, ESN: cs.ESN}
	if weInitiated {
		out.Key, in.Key = iToR, rToI
	} else {
		out.Key, in.Key = rToI, iToR
	}
	return out, in, nil
}

// selectors converts wire traffic selectors.
func selectors(ts []TrafficSelector) Selectors {
	out := make(Selectors, len(ts))
	for i, t := range ts {
		out[i] = Selector{Start: t.Start, End: t.End, Proto: t.Protocol, StartPort: t.StartPort, EndPort: t.EndPort}
	}
	return out
}

func wireSelectors(ss Selectors) []TrafficSelector {
	out := make([]TrafficSelector, len(ss))
	for i, s := range ss {
		out[i] = TrafficSelector{Protocol: s.Proto, StartPort: s.StartPort, EndPort: s.EndPort, Start: s.Start, End: s.End}
	}
	return out
}

// narrow intersects proposed selectors with the allowed ones (§2.9).
func narrow(proposed []TrafficSelector, allowed Selectors) []TrafficSelector {
	var out []TrafficSelector
	for _, p := range proposed {
		for _, a := range allowed {
			if p.Start.Is4() != a.Start.Is4() {
				continue
			}
			t := p
			if a.Start.Compare(t.Start) > 0 {
				t.Start = a.Start
			}
			if a.End.Compare(t.End) < 0 {
				t.End = a.End
			}
			if t.Start.Compare(t.End) > 0 {
				continue
			}
			switch {
			case a.Proto == 0:
			case t.Protocol == 0:
				t.Protocol = a.Proto
			case t.Protocol != a.Proto:
				continue
			}
			t.StartPort = max(t.StartPort, a.StartPort)
			t.EndPort = min(t.EndPort, a.EndPort)
			if t.StartPort > t.EndPort {
				continue
			}
			out = append(out, t)
		}
	}
	return out
}

// within reports whether every selector of got lies inside some selector of
// proposed: the initiator's check of the responder's narrowing.
func within(got, proposed []TrafficSelector) bool {
	for _, g := range got {
		ok := false
		for _, p := range proposed {
			if g.Start.Is4() == p.Start.Is4() && p.Start.Compare(g.Start) <= 0 && g.End.Compare(p.End) <= 0 &&
				(p.Protocol == 0 || p.Protocol == g.Protocol) && p.StartPort <= g.StartPort && g.EndPort <= p.EndPort {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return len(got) > 0
}
