package ike

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

func (d *Daemon) rekeyIKE(sa *ikeSA) {
	if sa.state != stateEstablished || sa.rekeyed {
		return
	}
	nsa := &ikeSA{d: d, peer: sa.peer, initiator: true, spiI: randSPI(), remote: sa.remote, natt: sa.natt, peerNull: sa.peerNull, lookedUp: sa.lookedUp, created: time.Now(),
		peerIDSeen: sa.peerIDSeen, fragOK: sa.fragOK}
	var priv any
	var group dhGroup
	sa.rekeyingIKE = true
	d.queueRequest(sa, exchange{exch: CREATE_CHILD_SA,
		payloads: func() ([]Payload, error) {
			props := make([]Proposal, 0, len(sa.peer.IKEProposals))
			for _, pr := range sa.peer.IKEProposals {
				pr.SPI = binary.BigEndian.AppendUint64(nil, nsa.spiI)
				props = append(props, pr)
			}
			// Keep the current group: the peer accepted it.
			var err error
			if group, err = newDH(sa.suite.DH); err != nil {
				return nil, err
			}
			var ke []byte
			if priv, ke, err = group.generate(); err != nil {
				return nil, err
			}
			nsa.nI = randNonce()
			return []Payload{&SAPayload{Proposals: props}, &NoncePayload{Data: nsa.nI}, &KEPayload{Group: sa.suite.DH, Data: ke}}, nil
		},
		onResponse: func(_ *ikeSA, m *Message) {
			sa.rekeyingIKE = false
			if err := d.completeRekeyIKE(sa, nsa, m, group, priv); err != nil {
				d.log.Warn("IKE SA rekey failed; retrying in 10s", "peer", sa.peer.Name, "err", err)
				sa.rekeyAt = time.Now().Add(10 * time.Second)
				sa.rekeyTimer = time.AfterFunc(10*time.Second, func() { d.post(func() { d.rekeyIKE(sa) }) })
			}
		}})
}

func (d *Daemon) completeRekeyIKE(old, nsa *ikeSA, m *Message, group dhGroup, priv any) error {
	if n := m.ErrorNotify(); n != nil {
		if d.promoteColliding(old) {
			return nil // the peer's rekey, which we answered, is the one
		}
		return fmt.Errorf("peer answered %s", n.NotifyType.String())
	}
	sap, nr, ke := Get[*SAPayload](m), Get[*NoncePayload](m), Get[*KEPayload](m)
	if sap == nil || nr == nil || ke == nil || len(sap.Proposals) != 1 || len(sap.Proposals[0].SPI) != 8 {
		return fmt.Errorf("%w: IKE rekey response", ErrMissing)
	}
	chosen := sap.Proposals[0]
	if _, ok := intersectExact(&chosen, old.peer.IKEProposals); !ok {
		return errors.New("peer chose an IKE proposal we did not offer")
	}
	suite, err := suiteOf(&chosen)
	if err != nil || suite.DH != group.id() || ke.Group != suite.DH {
		return fmt.Errorf("DH group mismatch in the IKE rekey")
	}
	shared, err := group.shared(priv, ke.Data)
	if err != nil {
		return err
	}
	nsa.suite, nsa.spiR, nsa.nR = suite, binary.BigEndian.Uint64(chosen.SPI), nr.Data
	if err := nsa.rekeyKeys(old, shared); err != nil {
		return err
	}
	if peers := old.colliding; peers != nil {
		old.colliding = nil
		if bytes.Compare(minNonce(nsa.nI, nsa.nR), minNonce(peers.nI, peers.nR)) < 0 {
			// Ours holds the lowest nonce: it is redundant and we
			// delete it; the peer's SA wins and the peer deletes the
			// old one (§2.8.2).
			d.log.Info("IKE SA rekey collision: deleting our redundant IKE SA", "peer", old.peer.Name)
			nsa.state, nsa.rekeyed = stateEstablished, true
			d.putSA(nsa.ourSPI(), nsa)
			peers.rekeyed = false
			d.switchIKE(old, peers)
			d.sendDeleteIKE(nsa)
			d.teardown(nsa, nil)
			return nil
		}
		d.log.Info("IKE SA rekey collision: ours wins", "peer", old.peer.Name)
		// The peer deletes its redundant SA (it carries no Child SA);
		// should it not, it goes away on its own.
		time.AfterFunc(halfOpenTimeout, func() { d.post(func() { d.teardown(peers, nil) }) })
	}
	d.switchIKE(old, nsa)
	// The rekey initiator deletes the old IKE SA (§1.3.2).
	b, err := old.encrypt(INFORMATIONAL, old.nextMsgID, false, []Payload{&DeletePayload{Protocol: ProtoIKE}})
	if err == nil {
		old.nextMsgID++
		old.state = stateDeleting
		d.sendRequest(old, [][]byte{b}, old.nextMsgID-1, nil)
	}
	return nil
}

// promoteColliding makes the peer's rekey of sa, which we answered while
// ours ran, the peer's IKE SA: the peer finished it without seeing a
// collision (it deletes sa, or refuses our rekey). It reports whether
// there was one.
func (d *Daemon) promoteColliding(sa *ikeSA) bool {
	peers := sa.colliding
	if peers == nil || peers.state != stateEstablished {
		return false
	}
	sa.colliding = nil
	peers.rekeyed = false
	d.switchIKE(sa, peers)
	return true
}

// switchIKE makes nsa the peer's IKE SA, moving old's Child SAs to it.
func (d *Daemon) switchIKE(old, nsa *ikeSA) {
	nsa.children, old.children = old.children, nil
	nsa.lingering, old.lingering = append(nsa.lingering, old.lingering...), nil
	for _, c := range nsa.children {
		c.ike = nsa
	}
	old.next = nsa
	// Child SA requests waiting for the old SA's window go out on the
	// new one; the others (liveness, rekey of the old SA) are moot.
	for _, ex := range old.queue {
		if ex.movable {
			nsa.queue = append(nsa.queue, ex)
		}
	}
	old.queue = nil
	old.rekeyed = true
	if old.rekeyTimer != nil {
		old.rekeyTimer.Stop()
	}
	d.putSA(nsa.ourSPI(), nsa)
	d.established(nsa)
	if nsa.pending == nil && len(nsa.queue) > 0 {
		next := nsa.queue[0]
		nsa.queue = nsa.queue[1:]
		d.startRequest(nsa, next)
	}
	d.log.Info("IKE SA rekeyed", "peer", nsa.peer.Name, "spi_i", fmt.Sprintf("%016x", nsa.spiI),
		"spi_r", fmt.Sprintf("%016x", nsa.spiR), "algorithms", nsa.suite.String())
	if nsa.peer.OnIKERekey != nil {
		nsa.peer.OnIKERekey()
	}
}

func (d *Daemon) onRekeyIKE(sa *ikeSA, m *Message, sap *SAPayload, ni *NoncePayload) []Payload {
	if sa.rekeyed || sa.colliding != nil {
		return []Payload{&NotifyPayload{NotifyType: TEMPORARY_FAILURE}}
	}
	ke := Get[*KEPayload](m)
	chosen, err := choose(sap.Proposals, sa.peer.IKEProposals, ProtoIKE)
	if err != nil || len(chosen.SPI) != 8 || ke == nil {
		return []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}
	}
	suite, err := suiteOf(chosen)
	if err != nil {
		return []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}
	}
	if ke.Group != suite.DH {
		return []Payload{&NotifyPayload{NotifyType: INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, suite.DH)}}
	}
	g, err := newDH(suite.DH)
	if err != nil {
		return []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}
	}
	priv, pub, err := g.generate()
	if err != nil {
		return []Payload{&NotifyPayload{NotifyType: TEMPORARY_FAILURE}}
	}
	shared, err := g.shared(priv, ke.Data)
	if err != nil {
		return []Payload{&NotifyPayload{NotifyType: INVALID_SYNTAX}}
	}
	nsa := &ikeSA{d: d, peer: sa.peer, spiI: binary.BigEndian.Uint64(chosen.SPI), spiR: randSPI(), remote: sa.remote, natt: sa.natt, peerNull: sa.peerNull, lookedUp: sa.lookedUp,
		created: time.Now(), suite: suite, nI: ni.Data, nR: randNonce(), peerIDSeen: sa.peerIDSeen, fragOK: sa.fragOK}
	if err := nsa.rekeyKeys(sa, shared); err != nil {
		return []Payload{&NotifyPayload{NotifyType: TEMPORARY_FAILURE}}
	}
	if sa.rekeyingIKE {
		// Simultaneous rekey (§2.8.2): both new SAs come up; when our
		// own exchange completes, the one with the lowest nonce is
		// deleted by its initiator, the other takes the Child SAs.
		nsa.state, nsa.rekeyed = stateEstablished, true
		d.putSA(nsa.ourSPI(), nsa)
		sa.colliding = nsa
	} else {
		d.switchIKE(sa, nsa)
	}
	ours := *chosen
	ours.SPI = binary.BigEndian.AppendUint64(nil, nsa.spiR)
	return []Payload{&SAPayload{Proposals: []Proposal{ours}}, &NoncePayload{Data: nsa.nR}, &KEPayload{Group: suite.DH, Data: pub}}
}
