package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// onInitRequest answers an IKE_SA_INIT request (RFC 7296 §1.2) in steps:
// a retransmission gets the same answer; the request must be admitted
// (limits.go, §2.6 cookies); the peer it comes from is found; the
// exchange is accepted (proposal, group, KE) or refused with the notify
// its step returned; the response is sent and the half-open SA kept.
func (d *Daemon) onInitRequest(m *Message, from netip.AddrPort, to netip.Addr, natt bool) {
	key := halfKey{m.SPIi, from}
	if sa := d.half[key]; sa != nil {
		if sa.hs != nil && bytes.Equal(m.Raw(), sa.hs.initReq) && sa.hs.initResp != nil {
			d.send(sa, sa.hs.initResp) // retransmitted request
		}
		return
	}
	reply := func(n *NotifyPayload) {
		r := &Message{Header: Header{SPIi: m.SPIi, Exchange: IKE_SA_INIT, Flags: FlagResponse}, Payloads: []Payload{n}}
		if b, err := r.Marshal(); err == nil {
			d.dp.SendIKE(b, from, natt)
		}
	}
	if n, ok := d.admitInit(m, from); !ok {
		if n != nil {
			reply(n)
		}
		return
	}
	p, avNonce := d.initPeer(m, from, to)
	if p == nil {
		d.log.Debug("IKE_SA_INIT from an address with no configured peer", "from", from)
		return
	}
	defer d.forgetIfUnused(p) // an opportunistic peer that got no SA
	sa, resp, err := d.acceptInit(p, m, from, natt, avNonce)
	if err != nil {
		var np *NotifyPayload
		if errors.As(err, &np) {
			reply(np)
		}
		return
	}
	sa.hs.initResp = resp
	sa.state = stateInitDone
	d.putSA(sa.spiR, sa)
	d.addHalf(key, sa)
	d.after(d.halfOpenTimeout, func() {
		if sa.state == stateInitDone {
			d.teardown(sa, fmt.Errorf("%w: the initiator did not complete IKE_AUTH", ErrNoAnswer))
		}
	})
	d.send(sa, resp)
}

// admitInit decides whether an IKE_SA_INIT request may cost us anything:
// it has the payloads, is within the caps on what remote input makes us
// keep (limits.go; dropped before any DH work), proved its address with a
// COOKIE when we ask for one (§2.6; the notify to send then), and its
// address has room for another IKE SA.
func (d *Daemon) admitInit(m *Message, from netip.AddrPort) (*NotifyPayload, bool) {
	ni := Get[*NoncePayload](m)
	if Get[*SAPayload](m) == nil || Get[*KEPayload](m) == nil || ni == nil || m.MessageID != 0 {
		d.log.Debug("IKE_SA_INIT without SA, KE or nonce", "from", from)
		return nil, false
	}
	addr := from.Addr()
	switch {
	case len(m.Raw()) > MaxInitRequest:
		d.log.Debug("IKE_SA_INIT too large: dropped", "from", from, "octets", len(m.Raw()))
		return nil, false
	case d.halfByAddr[addr] >= MaxHalfOpenPerAddr:
		d.log.Debug("too many half-open IKE SAs from this address: dropped", "from", from)
		return nil, false
	case len(d.half) >= MaxHalfOpen:
		d.log.Debug("too many half-open IKE SAs: dropped", "from", from)
		return nil, false
	}
	if d.underAttack() || d.halfByAddr[addr] >= cookieThresholdPerAddr {
		// With many half-open SAs (from this address), make the
		// initiator prove that it receives at its address before
		// spending DH work on it (or using up an AutoVPN probe, or the
		// address's allowance of half-open SAs).
		c := m.Notify(COOKIE)
		if c == nil || !d.cookies.valid(c.Data, ni.Data, addr, m.SPIi) {
			return &NotifyPayload{NotifyType: COOKIE, Data: d.cookies.make(ni.Data, addr, m.SPIi)}, false
		}
	}
	if d.ikeSAsAt(addr) >= MaxIKESAsPerAddr {
		d.log.Debug("too many IKE SAs with this address: IKE_SA_INIT dropped", "from", from)
		return nil, false
	}
	return nil, true
}

// initPeer finds the peer an IKE_SA_INIT comes from: a configured one by
// address, else the one Config.Responder makes (opportunism; AutoVPN with
// the AutoVPN nonce it returns, spent only once the request is accepted).
func (d *Daemon) initPeer(m *Message, from netip.AddrPort, to netip.Addr) (*PeerConfig, []byte) {
	if p := d.peerByAddr(from.Addr()); p != nil || d.cfg.Responder == nil {
		return p, nil
	}
	var avNonce []byte
	if av := Get[*AutoVPNNoncePayload](m); av != nil {
		avNonce = av.Nonce
	}
	return d.responderPeer(from, to, avNonce), avNonce
}

// acceptInit chooses the IKE proposal, checks the initiator's group and
// KE, derives the keys and makes the response. A refusal is returned as
// the *NotifyPayload to answer with (NO_PROPOSAL_CHOSEN,
// INVALID_KE_PAYLOAD, INVALID_SYNTAX); other errors get no answer.
func (d *Daemon) acceptInit(p *PeerConfig, m *Message, from netip.AddrPort, natt bool, avNonce []byte) (*ikeSA, []byte, error) {
	sap, ke, ni := Get[*SAPayload](m), Get[*KEPayload](m), Get[*NoncePayload](m)
	chosen, err := choose(sap.Proposals, p.IKEProposals, ProtoIKE)
	if err != nil {
		d.logRefusal(p, "no acceptable IKE proposal", "from", from,
			"offered", proposalsString(sap.Proposals), "configured", proposalsString(p.IKEProposals))
		return nil, nil, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	suite, err := suiteOf(chosen)
	if err != nil {
		return nil, nil, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	if ke.Group != suite.DH {
		// §1.2: tell the initiator which group we want.
		return nil, nil, &NotifyPayload{NotifyType: INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, suite.DH)}
	}
	g, err := newDH(suite.DH)
	if err != nil {
		return nil, nil, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	if avNonce != nil && d.cfg.ClaimAutoVPNNonce != nil && !d.cfg.ClaimAutoVPNNonce(from, avNonce) {
		d.log.Info("IKE_SA_INIT with an AutoVPN nonce already spent", "from", from)
		return nil, nil, errors.New("AutoVPN nonce already spent")
	}
	// Keep exact copies of what AUTH needs, not the received datagram
	// they point into.
	sa := &ikeSA{d: d, peer: p, spiI: m.SPIi, spiR: randSPI(), remote: from, natt: natt, suite: suite,
		hs: &handshake{group: g, initReq: bytes.Clone(m.Raw())}, nI: bytes.Clone(ni.Data), nR: randNonce(), created: time.Now(), peerMsgID: 1,
		fragOK: m.Notify(IKEV2_FRAGMENTATION_SUPPORTED) != nil}
	priv, pub, err := g.generate()
	if err != nil {
		return nil, nil, err
	}
	shared, err := g.shared(priv, ke.Data)
	if err != nil {
		d.log.Debug("bad KE in IKE_SA_INIT", "from", from, "err", err)
		return nil, nil, &NotifyPayload{NotifyType: INVALID_SYNTAX}
	}
	if err := sa.deriveKeys(shared); err != nil {
		d.log.Warn("deriving IKE keys", "err", err)
		return nil, nil, err
	}
	r := &Message{Header: Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: IKE_SA_INIT, Flags: FlagResponse}}
	r.Payloads = append(r.Payloads, &SAPayload{Proposals: []Proposal{*chosen}}, &KEPayload{Group: suite.DH, Data: pub},
		&NoncePayload{Data: sa.nR})
	r.Payloads = append(r.Payloads, certReqPayloads(&p.PeerAuth)...) // §3.7: in the IKE_SA_INIT response
	r.Payloads = append(r.Payloads, natNotifies(sa.spiI, sa.spiR, from)...)
	r.Payloads = append(r.Payloads, sigHashNotify())
	if sa.fragOK {
		r.Payloads = append(r.Payloads, &NotifyPayload{NotifyType: IKEV2_FRAGMENTATION_SUPPORTED})
	}
	b, err := r.Marshal()
	return sa, b, err
}

// responderPeer asks Config.Responder for the opportunistic peer to answer
// an initiator as.
func (d *Daemon) responderPeer(from netip.AddrPort, to netip.Addr, nonce []byte) *PeerConfig {
	p := d.cfg.Responder(from, to, nonce)
	if p == nil {
		return nil
	}
	if old := d.dynamic[p.Name]; old != nil {
		return old
	}
	p.Opportunistic = true
	if err := p.setDefaults(); err != nil {
		d.log.Warn("opportunistic responder", "from", from, "err", err)
		return nil
	}
	d.dynamic[p.Name] = p
	return p
}

func (d *Daemon) onAuthRequest(sa *ikeSA, m *Message) {
	p := sa.peer
	fail := func(n NotifyType, err error) {
		d.respond(sa, m, []Payload{&NotifyPayload{NotifyType: n}})
		d.teardown(sa, err)
	}
	idi, auth := m.ID(true), Get[*AuthPayload](m)
	if idi == nil || auth == nil {
		fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: IKE_AUTH without IDi or AUTH", ErrMissing))
		return
	}
	peerID := Identity{Type: idi.IDType, Data: idi.Data}
	if p.LookupKey != nil && p.PeerAuth.PublicKey == nil && auth.Method != AuthNULL && sa.lookedUp == nil {
		// Find the initiator's key (§4.12.2) off the daemon's goroutine;
		// retransmissions meanwhile are ignored.
		if sa.hs.lookingUp {
			return
		}
		sa.hs.lookingUp = true
		from := sa.remote.Addr()
		go func() {
			key, err := p.LookupKey(peerID, from)
			d.call(func() {
				if sa.state != stateInitDone {
					return // torn down meanwhile
				}
				sa.hs.lookingUp = false
				if err != nil {
					fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: no key for opportunistic initiator %v at %v: %w", ErrAuth, peerID, from, err))
					return
				}
				sa.lookedUp = key
				d.onAuthRequest(sa, m)
			})
		}()
		return
	}
	if p.CheckNull != nil && auth.Method == AuthNULL {
		if err := p.CheckNull(sa.remote.Addr()); err != nil {
			fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: %w", ErrAuth, err))
			return
		}
	}
	// A key looked up for the identity speaks for it; otherwise the
	// identity must be the configured one.
	if sa.lookedUp == nil && !d.acceptID(p, peerID) {
		fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: peer identity %v is not %s", ErrAuth, peerID, expectedID(p)))
		return
	}
	if err := d.verifyPeer(sa, m, peerID, auth, signedOctets(sa.prf, sa.hs.initReq, sa.nR, sa.hs.skPi, idi)); err != nil {
		fail(AUTHENTICATION_FAILED, err)
		return
	}
	sa.peerIDSeen = peerID
	readAutoVPN(sa, m)
	id := ourID(p).payload(false)
	cred := &p.Auth
	switch {
	case sa.bySecret:
		cred = &Credential{PSK: sa.hs.authSecret, Cert: p.Auth.Cert} // answer with the secret the peer used
	case p.PeerAuth.SharedSecret != nil:
		// AutoVPN: a shared secret with this peer is used in preference
		// to our certificate (§9.2), so that we may roll ours.
		if secret := p.PeerAuth.SharedSecret(peerID, sa.peerCert); secret != nil {
			cred = &Credential{PSK: secret, Cert: p.Auth.Cert}
		}
	}
	ourAuth, err := makeAuth(sa.prf, cred, signedOctets(sa.prf, sa.hs.initResp, sa.nI, sa.hs.skPr, id))
	if err != nil {
		fail(AUTHENTICATION_FAILED, err)
		return
	}
	resp := append(append(append([]Payload{id}, certPayloads(p)...), autovpnPayloads(sa)...), ourAuth)
	childOK := false
	sap, tsi, tsr := Get[*SAPayload](m), m.TS(true), m.TS(false)
	if sap != nil && tsi != nil && tsr != nil {
		resp, childOK = d.respondChild(sa, resp, sap, tsi, tsr)
	}
	if m.Notify(INITIAL_CONTACT) != nil {
		d.initialContact(sa)
	}
	d.established(sa)
	p.restarts = 0
	d.respond(sa, m, resp)
	d.reportEstablished(sa)
	d.dropHalf(sa)
	d.log.Info("IKE SA established", "peer", p.Name, "remote", sa.remote, "peer_id", peerID, "auth", authMethodName(auth.Method),
		"spi_i", fmt.Sprintf("%016x", sa.spiI), "spi_r", fmt.Sprintf("%016x", sa.spiR), "child", childOK)
	if d.cfg.OnChange != nil {
		d.cfg.OnChange(p.Name, true, nil)
	}
	d.dropDuplicate(sa)
}

// respondChild negotiates the first Child SA as responder and appends the
// payloads (or error notify) to resp.
func (d *Daemon) respondChild(sa *ikeSA, resp []Payload, sap *SAPayload, tsi, tsr *TSPayload) ([]Payload, bool) {
	p := sa.peer
	theirs := make([]Proposal, len(sap.Proposals))
	for i, pr := range sap.Proposals {
		pr.Transforms = withoutDH(pr.Transforms) // no KE in IKE_AUTH (§1.2)
		theirs[i] = pr
	}
	chosen, err := chooseDH(theirs, p.ESPProposals, ProtoESP, false)
	if err != nil || len(chosen.SPI) != 4 {
		d.logRefusal(p, "no acceptable ESP proposal",
			"offered", proposalsString(theirs), "configured", proposalsString(p.ESPProposals))
		return append(resp, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}), false
	}
	ni := narrow(tsi.Selectors, p.RemoteTS)
	nr := narrow(tsr.Selectors, p.LocalTS)
	if len(ni) == 0 || len(nr) == 0 {
		d.logRefusal(p, "traffic selectors unacceptable", "tsi", selectors(tsi.Selectors), "tsr", selectors(tsr.Selectors),
			"local", p.LocalTS, "remote", p.RemoteTS)
		return append(resp, &NotifyPayload{NotifyType: TS_UNACCEPTABLE}), false
	}
	spi, err := d.dp.ReserveSPI()
	if err != nil {
		return append(resp, &NotifyPayload{NotifyType: TEMPORARY_FAILURE}), false
	}
	peerProp := *chosen
	if d.installChild(sa, &peerProp, sa.nI, sa.nR, nil, spi, false, ni, nr) == nil {
		d.dp.ReleaseSPI(spi)
		return append(resp, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}), false
	}
	ours := *chosen
	ours.SPI = binary.BigEndian.AppendUint32(nil, spi)
	return append(resp, &SAPayload{Proposals: []Proposal{ours}},
		&TSPayload{Initiator: true, Selectors: ni}, &TSPayload{Initiator: false, Selectors: nr}), true
}
