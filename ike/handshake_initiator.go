package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

func (d *Daemon) startInitiator(p *PeerConfig) error {
	groups := dhGroups(p.IKEProposals)
	if len(groups) == 0 {
		return fmt.Errorf("ike: peer %s: no DH group in the IKE proposals", p.Name)
	}
	sa := &ikeSA{d: d, peer: p, initiator: true, spiI: randSPI(), remote: p.ikeAddr(), created: time.Now(), hs: &handshake{}}
	if p.ikeAddr() == p.nattAddr() {
		// Start on the NAT-T port, behind the non-ESP marker (RFC 7296 §2.23).
		sa.natt = true
	}
	d.putSA(sa.spiI, sa)
	d.log.Info("initiating IKE SA", "peer", p.Name, "remote", sa.remote)
	return d.sendInit(sa, groups[0])
}

// sendInit sends IKE_SA_INIT with a KE for group. A retry with a COOKIE
// keeps the nonce and KE the cookie was computed over (§2.6).
func (d *Daemon) sendInit(sa *ikeSA, group uint16) error {
	if sa.hs.group == nil || sa.hs.group.id() != group || sa.hs.cookie == nil {
		g, err := newDH(group)
		if err != nil {
			return err
		}
		sa.hs.group = g
		if sa.hs.dhPriv, sa.hs.ke, err = g.generate(); err != nil {
			return err
		}
		sa.nI = randNonce()
	}
	m := &Message{Header: Header{SPIi: sa.spiI, Exchange: IKE_SA_INIT, Flags: FlagInitiator}}
	if sa.hs.cookie != nil {
		m.Payloads = append(m.Payloads, &NotifyPayload{NotifyType: COOKIE, Data: sa.hs.cookie})
	}
	m.Payloads = append(m.Payloads, &SAPayload{Proposals: sa.peer.IKEProposals}, &KEPayload{Group: group, Data: sa.hs.ke},
		&NoncePayload{Data: sa.nI})
	if sa.peer.AutoVPNNonce != nil {
		m.Payloads = append(m.Payloads, &AutoVPNNoncePayload{Nonce: sa.peer.AutoVPNNonce})
	}
	m.Payloads = append(m.Payloads, natNotifies(sa.spiI, 0, sa.remote)...)
	m.Payloads = append(m.Payloads, sigHashNotify(), &NotifyPayload{NotifyType: IKEV2_FRAGMENTATION_SUPPORTED})
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	sa.hs.initReq = b
	sa.state = stateInitSent
	d.sendRequest(sa, [][]byte{b}, 0, nil)
	return nil
}

func (d *Daemon) onInitResponse(sa *ikeSA, m *Message, from netip.AddrPort) {
	if m.MessageID != 0 {
		return
	}
	if n := m.Notify(COOKIE); n != nil && sa.hs.cookieTries < 3 {
		d.answered(sa)
		sa.hs.cookieTries++
		sa.hs.cookie = bytes.Clone(n.Data)
		d.sendInit(sa, sa.hs.group.id())
		return
	}
	if n := m.Notify(INVALID_KE_PAYLOAD); n != nil && len(n.Data) == 2 {
		g := binary.BigEndian.Uint16(n.Data)
		if g == sa.hs.group.id() {
			return // the same answer to a retransmission of the request before the switch
		}
		for _, ours := range dhGroups(sa.peer.IKEProposals) {
			if ours == g && g != sa.hs.group.id() {
				d.answered(sa)
				d.log.Info("peer asks for another DH group", "peer", sa.peer.Name, "group", g)
				d.sendInit(sa, g)
				return
			}
		}
		d.teardown(sa, fmt.Errorf("%w: peer wants DH group %d, which we do not offer", ErrNoProposal, g))
		return
	}
	if n := m.ErrorNotify(); n != nil {
		d.teardown(sa, &RefusedError{Exchange: IKE_SA_INIT, Notify: n.NotifyType})
		return
	}
	sap, ke, nr := Get[*SAPayload](m), Get[*KEPayload](m), Get[*NoncePayload](m)
	if sap == nil || ke == nil || nr == nil || m.SPIr == 0 || len(sap.Proposals) != 1 {
		d.log.Debug("IKE_SA_INIT response without SA, KE or nonce", "peer", sa.peer.Name)
		return
	}
	d.answered(sa)
	chosen := sap.Proposals[0]
	if _, ok := intersectExact(&chosen, sa.peer.IKEProposals); !ok {
		d.teardown(sa, errors.New("peer chose an IKE proposal we did not offer"))
		return
	}
	suite, err := suiteOf(&chosen)
	if err != nil || suite.DH != sa.hs.group.id() || ke.Group != suite.DH {
		d.teardown(sa, fmt.Errorf("peer's DH group does not match: %v", err))
		return
	}
	shared, err := sa.hs.group.shared(sa.hs.dhPriv, ke.Data)
	if err != nil {
		d.teardown(sa, err)
		return
	}
	sa.suite, sa.spiR, sa.nR, sa.hs.initResp = suite, m.SPIr, bytes.Clone(nr.Data), bytes.Clone(m.Raw())
	sa.fragOK = m.Notify(IKEV2_FRAGMENTATION_SUPPORTED) != nil
	if err := sa.deriveKeys(shared); err != nil {
		d.teardown(sa, err)
		return
	}
	sa.hs.dhPriv = nil
	// Our NAT_DETECTION_SOURCE_IP is bogus, so there is always a "NAT":
	// move to the NAT-T port (§2.23).
	sa.natt = true
	d.setRemote(sa, sa.peer.nattAddr())
	sa.nextMsgID = 1
	d.sendAuth(sa)
}

// intersectExact checks that chosen has one transform per type, each
// offered by one of ours.
func intersectExact(chosen *Proposal, ours []Proposal) (*Proposal, bool) {
	for i := range ours {
		if ours[i].Protocol != chosen.Protocol {
			continue
		}
		ok := true
		seen := map[TransformType]bool{}
		for _, t := range chosen.Transforms {
			if seen[t.Type] || !offers(&ours[i], t) {
				ok = false
				break
			}
			seen[t.Type] = true
		}
		if ok {
			return &ours[i], true
		}
	}
	return nil, false
}

// firstContact reports whether sa is the only IKE SA with its peer's address.
func (d *Daemon) firstContact(sa *ikeSA) bool {
	for _, other := range d.sas {
		if other != sa && other.state != stateDead && other.peer.Addr == sa.peer.Addr {
			return false
		}
	}
	return true
}

func (d *Daemon) sendAuth(sa *ikeSA) {
	p := sa.peer
	spi, err := d.dp.ReserveSPI()
	if err != nil {
		d.teardown(sa, err)
		return
	}
	sa.hs.childSPI = spi
	id := ourID(p).payload(true)
	auth, err := makeAuth(sa.prf, &p.Auth, signedOctets(sa.prf, sa.hs.initReq, sa.nR, sa.hs.skPi, id))
	if err != nil {
		d.teardown(sa, err)
		return
	}
	props := make([]Proposal, len(p.ESPProposals))
	for i, pr := range p.ESPProposals {
		pr.SPI = binary.BigEndian.AppendUint32(nil, spi)
		pr.Transforms = withoutDH(pr.Transforms) // no KE in IKE_AUTH (§1.2)
		props[i] = pr
	}
	payloads := append(append([]Payload{id}, certPayloads(p)...), certReqPayloads(&p.PeerAuth)...)
	if d.firstContact(sa) {
		// §2.4: only when we hold no other IKE SA with this peer, or the
		// peer would drop SAs that are still in use.
		payloads = append(payloads, &NotifyPayload{NotifyType: INITIAL_CONTACT})
	}
	if p.RemoteID.Type != 0 {
		payloads = append(payloads, p.RemoteID.payload(false))
	}
	payloads = append(payloads, autovpnPayloads(sa)...)
	payloads = append(payloads, auth, &SAPayload{Proposals: props},
		&TSPayload{Initiator: true, Selectors: wireSelectors(p.LocalTS)},
		&TSPayload{Initiator: false, Selectors: wireSelectors(p.RemoteTS)})
	b, err := sa.encryptFrags(IKE_AUTH, 1, false, payloads)
	if err != nil {
		d.teardown(sa, err)
		return
	}
	sa.state = stateAuthSent
	sa.nextMsgID = 2
	d.sendRequest(sa, b, 1, nil)
}

func (d *Daemon) onAuthResponse(sa *ikeSA, m *Message) {
	p := sa.peer
	idr, auth := m.ID(false), Get[*AuthPayload](m)
	refused := m.ErrorNotify()
	if idr == nil || auth == nil {
		err := fmt.Errorf("%w: IKE_AUTH response without IDr or AUTH", ErrMissing)
		if refused != nil {
			err = &RefusedError{Exchange: IKE_AUTH, Notify: refused.NotifyType}
			if refused.NotifyType == AUTHENTICATION_FAILED && p.Auth.Null {
				err = fmt.Errorf("%w (we authenticated with AUTH_NULL, RFC 7619, which the peer may not implement)", err)
			}
		}
		d.teardown(sa, err)
		return
	}
	peerID := Identity{Type: idr.IDType, Data: idr.Data}
	if !d.acceptID(p, peerID) {
		d.sendDeleteIKE(sa) // the responder thinks the SA is up (§2.21.2)
		d.teardown(sa, fmt.Errorf("%w: peer identity %v is not %s", ErrAuth, peerID, expectedID(p)))
		return
	}
	if err := d.verifyPeer(sa, m, peerID, auth, signedOctets(sa.prf, sa.hs.initResp, sa.nI, sa.hs.skPr, idr)); err != nil {
		d.sendDeleteIKE(sa) // the responder thinks the SA is up (§2.21.2)
		d.teardown(sa, err)
		return
	}
	// The IKE SA is authenticated; the first Child SA may still have been
	// refused (§1.2). An IKE SA without the Child SA it was made for is
	// useless to a configured tunnel: delete it at the peer too, so that
	// it does not linger there, and let the restart back off.
	if err := d.firstChild(sa, m, refused); err != nil {
		d.log.Warn("the peer refused the Child SA; deleting the IKE SA", "peer", p.Name, "err", err)
		d.sendDeleteIKE(sa)
		d.teardown(sa, err)
		return
	}
	sa.peerIDSeen = peerID
	readAutoVPN(sa, m)
	hs := sa.hs // the first Child SA's proposal, selectors and SPI: established drops the handshake
	d.established(sa)
	p.restarts = 0
	d.reportEstablished(sa)
	d.log.Info("IKE SA established", "peer", p.Name, "remote", sa.remote, "peer_id", peerID, "auth", authMethodName(auth.Method),
		"spi_i", fmt.Sprintf("%016x", sa.spiI), "spi_r", fmt.Sprintf("%016x", sa.spiR))
	if d.cfg.OnChange != nil {
		d.cfg.OnChange(p.Name, true, nil)
	}
	if d.installChild(sa, hs.firstProp, sa.nI, sa.nR, nil, hs.childSPI, true, hs.firstTS[0], hs.firstTS[1]) == nil {
		d.dp.ReleaseSPI(hs.childSPI)
	}
	d.dropDuplicate(sa)
	d.coverSelectors(sa)
}

// firstChild checks the Child SA of an IKE_AUTH response (whose error
// notify, if any, is refused) and keeps what installChild needs.
func (d *Daemon) firstChild(sa *ikeSA, m *Message, refused *NotifyPayload) error {
	p := sa.peer
	if refused != nil {
		return fmt.Errorf("%w: %s (we offered ESP %s, selectors %s === %s)", ErrChildRefused, refused.NotifyType,
			proposalsString(p.ESPProposals), p.LocalTS, p.RemoteTS)
	}
	sap, tsi, tsr := Get[*SAPayload](m), m.TS(true), m.TS(false)
	if sap == nil || tsi == nil || tsr == nil || len(sap.Proposals) != 1 {
		return fmt.Errorf("%w: the response has no Child SA (notifies %v)", ErrChildRefused, notifyList(m))
	}
	chosen := sap.Proposals[0]
	if _, ok := intersectExact(&chosen, p.ESPProposals); !ok || len(chosen.SPI) != 4 {
		return fmt.Errorf("%w: the peer chose an ESP proposal we did not offer", ErrChildRefused)
	}
	if !within(tsi.Selectors, wireSelectors(p.LocalTS)) || !within(tsr.Selectors, wireSelectors(p.RemoteTS)) {
		return fmt.Errorf("%w: the peer's traffic selectors %s === %s exceed ours", ErrChildRefused,
			selectors(tsi.Selectors), selectors(tsr.Selectors))
	}
	sa.hs.firstProp, sa.hs.firstTS = &chosen, [2][]TrafficSelector{tsi.Selectors, tsr.Selectors}
	return nil
}

func notifyList(m *Message) []string {
	var l []string
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok {
			l = append(l, n.NotifyType.String())
		}
	}
	return l
}

// ErrChildRefused is wrapped when the peer refused, or answered
// unacceptably, the Child SA negotiated with the IKE SA.
var ErrChildRefused = errors.New("ike: Child SA refused")
