package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// The responder's script (RFC 7296 §1.2), one step per message, in the
// order it runs below:
//
//	onInitRequest      ← IKE_SA_INIT request; a retransmission gets the same answer
//	admitInit          the request may cost us anything (limits.go, §2.6 cookies)
//	initPeer           the peer it comes from
//	processInit        proposal, group, KE: a new IKE SA and its keys, or
//	                   the notify to refuse with, returned as the error
//	sendInitResponse   → SA, KE, Nr; the IKE SA is half-open
//	processAuth        ← IDi, AUTH verified (the initiator's key looked up
//	                     first, if it must be)
//	sendAuthResponse   → IDr, AUTH, the first Child SA (respondChild); the
//	                     IKE SA is up
//
// The daemon's goroutine runs each step as its message arrives
// (Daemon.receive, onMessage); a failed step refuses the exchange.

// onInitRequest answers an IKE_SA_INIT request.
func (d *Daemon) onInitRequest(m *Message, from netip.AddrPort, to netip.Addr, natt bool) {
	key := halfKey{m.SPIi, from}
	if sa := d.half[key]; sa != nil {
		if hs := sa.rhs; hs != nil && bytes.Equal(m.Raw(), hs.initReq) && hs.initResp != nil {
			d.send(sa, hs.initResp) // retransmitted request
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
	hs, err := d.processInit(p, m, from, natt, avNonce)
	if err != nil {
		var np *NotifyPayload
		if errors.As(err, &np) {
			reply(np)
		}
		return
	}
	hs.sendInitResponse(key)
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

// processInit chooses the IKE proposal, checks the initiator's group and
// KE, and makes the IKE SA with its keys. A refusal is returned as the
// *NotifyPayload to answer with (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD,
// INVALID_SYNTAX); other errors get no answer.
func (d *Daemon) processInit(p *PeerConfig, m *Message, from netip.AddrPort, natt bool, avNonce []byte) (*responderHandshake, error) {
	sap, ke, ni := Get[*SAPayload](m), Get[*KEPayload](m), Get[*NoncePayload](m)
	chosen, err := choose(sap.Proposals, p.IKEProposals, ProtoIKE)
	if err != nil {
		d.logRefusal(p, "no acceptable IKE proposal", "from", from,
			"offered", proposalsString(sap.Proposals), "configured", proposalsString(p.IKEProposals))
		return nil, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	suite, err := suiteOf(chosen)
	if err != nil {
		return nil, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	if ke.Group != suite.DH {
		// §1.2: tell the initiator which group we want.
		return nil, &NotifyPayload{NotifyType: INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, suite.DH)}
	}
	g, err := newDH(suite.DH)
	if err != nil {
		return nil, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}
	}
	if avNonce != nil && d.cfg.ClaimAutoVPNNonce != nil && !d.cfg.ClaimAutoVPNNonce(from, avNonce) {
		d.log.Info("IKE_SA_INIT with an AutoVPN nonce already spent", "from", from)
		return nil, errors.New("AutoVPN nonce already spent")
	}
	// Keep exact copies of what AUTH needs, not the received datagram
	// they point into.
	sa := &ikeSA{d: d, peer: p, spiI: m.SPIi, spiR: randSPI(), remote: from, natt: natt, suite: suite,
		nI: bytes.Clone(ni.Data), nR: randNonce(), created: time.Now(), peerMsgID: 1,
		fragOK: m.Notify(IKEV2_FRAGMENTATION_SUPPORTED) != nil}
	hs := &responderHandshake{handshake: handshake{d: d, sa: sa, initReq: bytes.Clone(m.Raw())}, chosen: chosen}
	sa.rhs = hs
	priv, pub, err := g.generate()
	if err != nil {
		return nil, err
	}
	hs.ke = pub
	shared, err := g.shared(priv, ke.Data)
	if err != nil {
		d.log.Debug("bad KE in IKE_SA_INIT", "from", from, "err", err)
		return nil, &NotifyPayload{NotifyType: INVALID_SYNTAX}
	}
	if err := sa.deriveKeys(shared); err != nil {
		d.log.Warn("deriving IKE keys", "err", err)
		return nil, err
	}
	return hs, nil
}

// sendInitResponse answers IKE_SA_INIT with our SA, KE and nonce, and
// keeps the IKE SA half-open (under key in Daemon.half) until IKE_AUTH
// completes it or the half-open timeout ends it.
func (hs *responderHandshake) sendInitResponse(key halfKey) {
	d, sa, p := hs.d, hs.sa, hs.sa.peer
	r := &Message{Header: Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: IKE_SA_INIT, Flags: FlagResponse}}
	r.Payloads = append(r.Payloads, &SAPayload{Proposals: []Proposal{*hs.chosen}}, &KEPayload{Group: sa.suite.DH, Data: hs.ke},
		&NoncePayload{Data: sa.nR})
	r.Payloads = append(r.Payloads, certReqPayloads(&p.PeerAuth)...) // §3.7: in the IKE_SA_INIT response
	r.Payloads = append(r.Payloads, natNotifies(sa.spiI, sa.spiR, key.from)...)
	r.Payloads = append(r.Payloads, sigHashNotify())
	if sa.fragOK {
		r.Payloads = append(r.Payloads, &NotifyPayload{NotifyType: IKEV2_FRAGMENTATION_SUPPORTED})
	}
	resp, err := r.Marshal()
	if err != nil {
		return
	}
	hs.chosen, hs.ke = nil, nil // in initResp now
	hs.initResp = resp
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

// processAuth takes the IKE_AUTH request: the initiator's identity and
// AUTH are verified, with its key looked up first if it must be
// (lookupKey); on success sendAuthResponse completes the IKE SA.
func (hs *responderHandshake) processAuth(m *Message) {
	sa, p := hs.sa, hs.sa.peer
	idi, auth := m.ID(true), Get[*AuthPayload](m)
	if idi == nil || auth == nil {
		hs.fail(m, fmt.Errorf("%w: IKE_AUTH without IDi or AUTH", ErrMissing))
		return
	}
	peerID := Identity{Type: idi.IDType, Data: idi.Data}
	if p.LookupKey != nil && p.PeerAuth.PublicKey == nil && auth.Method != AuthNULL && sa.lookedUp == nil {
		hs.lookupKey(m, peerID)
		return
	}
	if p.CheckNull != nil && auth.Method == AuthNULL {
		if err := p.CheckNull(sa.remote.Addr()); err != nil {
			hs.fail(m, fmt.Errorf("%w: %w", ErrAuth, err))
			return
		}
	}
	// A key looked up for the identity speaks for it; otherwise the
	// identity must be the configured one.
	if sa.lookedUp == nil && !hs.d.acceptID(p, peerID) {
		hs.fail(m, fmt.Errorf("%w: peer identity %v is not %s", ErrAuth, peerID, expectedID(p)))
		return
	}
	if err := hs.verifyPeer(m, peerID, auth, signedOctets(sa.prf, hs.initReq, sa.nR, hs.skPi, idi)); err != nil {
		hs.fail(m, err)
		return
	}
	sa.peerIDSeen = peerID
	hs.readAutoVPN(m)
	hs.sendAuthResponse(m, peerID, auth)
}

// lookupKey finds the initiator's key (§4.12.2) off the daemon's
// goroutine, then takes the IKE_AUTH request m again; retransmissions
// meanwhile are ignored.
func (hs *responderHandshake) lookupKey(m *Message, peerID Identity) {
	if hs.lookingUp {
		return
	}
	hs.lookingUp = true
	d, sa := hs.d, hs.sa
	lookup, from := sa.peer.LookupKey, sa.remote.Addr()
	go func() {
		key, err := lookup(peerID, from)
		d.call(func() {
			if sa.state != stateInitDone {
				return // torn down meanwhile
			}
			hs.lookingUp = false
			if err != nil {
				hs.fail(m, fmt.Errorf("%w: no key for opportunistic initiator %v at %v: %w", ErrAuth, peerID, from, err))
				return
			}
			sa.lookedUp = key
			hs.processAuth(m)
		})
	}()
}

// fail refuses the IKE_AUTH request m with AUTHENTICATION_FAILED and
// tears the IKE SA down with err.
func (hs *responderHandshake) fail(m *Message, err error) {
	hs.d.respond(hs.sa, m, []Payload{&NotifyPayload{NotifyType: AUTHENTICATION_FAILED}})
	hs.d.teardown(hs.sa, err)
}

// sendAuthResponse answers the verified IKE_AUTH request m with our
// identity and AUTH and the first Child SA (or the notify refusing it),
// and brings the IKE SA up.
func (hs *responderHandshake) sendAuthResponse(m *Message, peerID Identity, auth *AuthPayload) {
	d, sa, p := hs.d, hs.sa, hs.sa.peer
	id := ourID(p).payload(false)
	cred := &p.Auth
	switch {
	case hs.bySecret:
		cred = &Credential{PSK: hs.authSecret, Cert: p.Auth.Cert} // answer with the secret the peer used
	case p.PeerAuth.SharedSecret != nil:
		// AutoVPN: a shared secret with this peer is used in preference
		// to our certificate (§9.2), so that we may roll ours.
		if secret := p.PeerAuth.SharedSecret(peerID, hs.peerCert); secret != nil {
			cred = &Credential{PSK: secret, Cert: p.Auth.Cert}
		}
	}
	ourAuth, err := makeAuth(sa.prf, cred, signedOctets(sa.prf, hs.initResp, sa.nI, hs.skPr, id))
	if err != nil {
		hs.fail(m, err)
		return
	}
	resp := append(append(append([]Payload{id}, certPayloads(p)...), hs.autovpnPayloads()...), ourAuth)
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
	hs.reportEstablished()
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
