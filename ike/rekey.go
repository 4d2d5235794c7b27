package ike

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/netip"
	"time"

	"github.com/oevpn/oevpn/policy"
)

var errDeadPeer = errors.New("dead peer: no answer to our requests")

func (p *PeerConfig) childLifetime() time.Duration { return orDur(p.ChildLifetime, time.Hour) }
func (p *PeerConfig) ikeLifetime() time.Duration   { return orDur(p.IKELifetime, 4*time.Hour) }
func (p *PeerConfig) dpd() time.Duration           { return orDur(p.DPD, 30*time.Second) }
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

// jitter returns d minus up to 10%, so that both ends do not rekey at once.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(mrand.Int64N(int64(d)/10+1))
}

// exchange is a request of an established IKE SA waiting for the window.
type exchange struct {
	exch       ExchangeType
	payloads   func() ([]Payload, error) // built when sent
	onResponse func(*ikeSA, *Message)    // with the IKE SA the exchange ran in
	// movable requests (Child SA operations) go on in the new IKE SA if
	// this one is rekeyed before they are sent.
	movable bool
}

// queueRequest sends ex now if the window is free, or after the requests
// before it were answered.
func (d *Daemon) queueRequest(sa *ikeSA, ex exchange) {
	if sa.pending == nil && sa.state == stateEstablished {
		d.startRequest(sa, ex)
		return
	}
	sa.queue = append(sa.queue, ex)
}

func (d *Daemon) startRequest(sa *ikeSA, ex exchange) {
	payloads, err := ex.payloads()
	if err != nil {
		d.log.Warn("building request", "peer", sa.peer.Name, "exchange", ex.exch, "err", err)
		return
	}
	id := sa.nextMsgID
	b, err := sa.encryptFrags(ex.exch, id, false, payloads)
	if err != nil {
		d.log.Warn("building request", "peer", sa.peer.Name, "exchange", ex.exch, "err", err)
		return
	}
	sa.nextMsgID++
	d.sendRequest(sa, b, id, ex.onResponse)
}

// established marks sa up and starts its timers.
func (d *Daemon) established(sa *ikeSA) {
	sa.state = stateEstablished
	sa.forgetAuthState()
	sa.lastHeard, sa.lastIn = time.Now(), time.Now()
	d.scheduleIKERekey(sa)
	d.scheduleDPD(sa)
	d.scheduleKeepalive(sa)
}

// initialContact removes the other IKE SAs with the peer that sent
// INITIAL_CONTACT: it has lost their state (§2.4).
func (d *Daemon) initialContact(sa *ikeSA) {
	for _, other := range d.sas {
		if other != sa && other.peer == sa.peer && other.state == stateEstablished {
			d.log.Info("INITIAL_CONTACT: removing the peer's old IKE SA", "peer", sa.peer.Name,
				"spi_i", fmt.Sprintf("%016x", other.spiI))
			other.rekeyed = true // not a failure: no restart
			d.teardown(other, nil)
		}
	}
}

// scheduleRestart re-initiates a peer after a failure, with backoff.
func (d *Daemon) scheduleRestart(p *PeerConfig) {
	delay := restartDelay(p)
	d.log.Info("will re-initiate", "peer", p.Name, "in", delay)
	time.AfterFunc(delay, func() {
		d.post(func() {
			for _, sa := range d.sas {
				if sa.peer == p {
					return
				}
			}
			if err := d.startInitiator(p); err != nil {
				d.log.Warn("re-initiating", "peer", p.Name, "err", err)
			}
		})
	})
}

func (p *PeerConfig) keepalive() time.Duration { return orDur(p.Keepalive, 20*time.Second) }

// scheduleKeepalive keeps NAT mappings alive while IKE runs on the NAT-T
// port. oevpn always encapsulates, so it does not know whether a NAT is
// really there and sends them whenever it uses port 4500.
func (d *Daemon) scheduleKeepalive(sa *ikeSA) {
	var tick func()
	tick = func() {
		d.post(func() {
			if sa.state != stateEstablished || !sa.natt {
				return
			}
			d.dp.SendKeepalive(sa.remote)
			sa.keepaliveTimer = time.AfterFunc(sa.peer.keepalive(), tick)
		})
	}
	sa.keepaliveTimer = time.AfterFunc(sa.peer.keepalive(), tick)
}

// ---- dead-peer detection ----

func (d *Daemon) scheduleDPD(sa *ikeSA) {
	iv := sa.peer.dpd()
	if iv < 0 {
		return
	}
	var lastIn uint64
	var check func()
	check = func() {
		d.post(func() {
			if sa.state != stateEstablished {
				return
			}
			var in uint64
			for _, c := range sa.children {
				in += d.dp.ChildInPackets(c)
			}
			if in != lastIn {
				lastIn = in
				sa.lastHeard = time.Now()
			}
			next := iv - time.Since(sa.lastHeard) // due dpd after the peer was last heard
			if next <= 0 && sa.pending == nil && len(sa.queue) == 0 {
				d.log.Debug("liveness check", "peer", sa.peer.Name)
				d.queueRequest(sa, exchange{exch: INFORMATIONAL, payloads: func() ([]Payload, error) { return nil, nil }})
			}
			if next <= 0 {
				next = iv
			}
			sa.dpdTimer = time.AfterFunc(next, check)
		})
	}
	sa.dpdTimer = time.AfterFunc(iv, check)
}

// ---- Child SA rekeying (§1.3.3, §2.8) ----

func (d *Daemon) scheduleChildRekey(c *ChildSA) {
	delay := jitter(c.ike.peer.childLifetime())
	c.rekeyAt = time.Now().Add(delay)
	c.rekeyTimer = time.AfterFunc(delay, func() {
		d.post(func() { d.rekeyChild(c) })
	})
}

// ChildEvent tells the daemon that a Child SA reached a lifetime limit in
// the datapath: a soft event starts a rekey; at the hard one the Child SA
// is removed and the peer told (RFC 7296 §2.8), whatever became of its
// rekey.
func (d *Daemon) ChildEvent(c *ChildSA, hard bool) {
	d.post(func() {
		if !hard {
			d.rekeyChild(c)
			return
		}
		d.dp.RemoveChild(c)
		if sa := c.ike; sa != nil && sa.state != stateDead && d.hasChild(sa, c) {
			d.log.Warn("Child SA past its hard lifetime: removed", "peer", sa.peer.Name, "spi_in", fmt.Sprintf("%#08x", c.In.SPI))
			d.deleteChild(c)
		}
	})
}

func (d *Daemon) rekeyChild(c *ChildSA) {
	sa := c.ike
	if sa == nil || sa.state != stateEstablished || c.rekeying || c.replaced || !d.hasChild(sa, c) {
		return
	}
	c.rekeying = true
	d.requestChild(sa, c, c.Local, c.Remote, func(nc *ChildSA, m *Message) {
		c.rekeying = false
		if nc == nil {
			d.log.Warn("Child SA rekey failed; retrying in 10s", "peer", sa.peer.Name, "notify", notifyList(m))
			c.rekeyAt = time.Now().Add(10 * time.Second)
			c.rekeyTimer = time.AfterFunc(10*time.Second, func() { d.post(func() { d.rekeyChild(c) }) })
			return
		}
		if c.replaced && c.successor != nil && bytes.Compare(nc.nonce, c.successor.nonce) < 0 {
			// Simultaneous rekey (§2.8.1): the SA with the lowest
			// nonce is redundant, and we created it: delete it.
			d.log.Info("rekey collision: deleting our redundant Child SA", "peer", sa.peer.Name)
			d.dp.RemoveChild(nc) // stop sending on it now; the Delete follows
			d.deleteChild(nc)
			return
		}
		c.replaced = true
		c.successor = nc
		d.deleteChild(c)
	})
}

// createChild negotiates a new Child SA in an established IKE SA (when
// traffic needs one and the peer had deleted the last).
func (d *Daemon) createChild(sa *ikeSA) {
	if sa.creatingChild {
		return
	}
	sa.creatingChild = true
	d.log.Info("negotiating a new Child SA", "peer", sa.peer.Name)
	d.requestChild(sa, nil, sa.peer.LocalTS, sa.peer.RemoteTS, func(nc *ChildSA, m *Message) {
		sa.creatingChild = false
		if nc == nil {
			d.log.Warn("new Child SA refused", "peer", sa.peer.Name, "notify", notifyList(m))
			return
		}
		d.coverSelectors(sa)
	})
}

// requestChild sends a CREATE_CHILD_SA request for a new Child SA (one that
// rekeys old, if not nil) and calls done with the installed SA or nil.
func (d *Daemon) requestChild(sa *ikeSA, old *ChildSA, local, remote policy.Selectors, done func(*ChildSA, *Message)) {
	var spi uint32
	var nI []byte
	var dhPriv any
	var group dhGroup
	d.queueRequest(sa, exchange{exch: CREATE_CHILD_SA, movable: true,
		payloads: func() ([]Payload, error) {
			var err error
			if spi, err = d.dp.ReserveSPI(); err != nil {
				return nil, err
			}
			nI = randNonce()
			props := make([]Proposal, 0, len(sa.peer.ESPProposals))
			for _, pr := range sa.peer.ESPProposals {
				pr.SPI = binary.BigEndian.AppendUint32(nil, spi)
				props = append(props, pr)
			}
			var payloads []Payload
			if old != nil {
				payloads = append(payloads, &NotifyPayload{Protocol: ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, old.In.SPI), NotifyType: REKEY_SA})
			}
			payloads = append(payloads, &SAPayload{Proposals: props}, &NoncePayload{Data: nI})
			if g := dhGroups(sa.peer.ESPProposals); len(g) > 0 {
				if group, err = newDH(g[0]); err != nil {
					return nil, err
				}
				var ke []byte
				if dhPriv, ke, err = group.generate(); err != nil {
					return nil, err
				}
				payloads = append(payloads, &KEPayload{Group: g[0], Data: ke})
			}
			return append(payloads, &TSPayload{Initiator: true, Selectors: wireSelectors(local)},
				&TSPayload{Initiator: false, Selectors: wireSelectors(remote)}), nil
		},
		onResponse: func(run *ikeSA, m *Message) {
			nc := d.completeCreateChild(run, m, spi, nI, group, dhPriv, true)
			if nc == nil {
				if m.ErrorNotify() == nil {
					// The peer installed its half: have it removed.
					d.queueRequest(run.current(), exchange{exch: INFORMATIONAL, movable: true, payloads: func() ([]Payload, error) {
						return []Payload{&DeletePayload{Protocol: ProtoESP, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, spi)}}}, nil
					}})
				}
				d.dp.ReleaseSPI(spi)
			}
			done(nc, m)
		}})
}

func (d *Daemon) hasChild(sa *ikeSA, c *ChildSA) bool {
	for _, x := range sa.children {
		if x == c {
			return true
		}
	}
	return false
}

// completeCreateChild reads a CREATE_CHILD_SA response that creates a Child
// SA and installs it.
func (d *Daemon) completeCreateChild(sa *ikeSA, m *Message, spi uint32, nI []byte, group dhGroup, dhPriv any, weInitiated bool) *ChildSA {
	if n := m.ErrorNotify(); n != nil {
		return nil
	}
	sap, nr, tsi, tsr := Get[*SAPayload](m), Get[*NoncePayload](m), m.TS(true), m.TS(false)
	if sap == nil || nr == nil || tsi == nil || tsr == nil || len(sap.Proposals) != 1 || len(sap.Proposals[0].SPI) != 4 {
		return nil
	}
	chosen := sap.Proposals[0]
	if _, ok := intersectExact(&chosen, sa.peer.ESPProposals); !ok {
		return nil
	}
	var shared []byte
	if cs, _ := childSuiteOf(&chosen); cs.DH != DH_NONE {
		ke := Get[*KEPayload](m)
		if group == nil || ke == nil || ke.Group != cs.DH || group.id() != cs.DH {
			return nil
		}
		var err error
		if shared, err = group.shared(dhPriv, ke.Data); err != nil {
			return nil
		}
	}
	return d.installChild(sa, &chosen, nI, nr.Data, shared, spi, weInitiated, tsi.Selectors, tsr.Selectors)
}

// deleteChild sends Delete for a Child SA and removes it when answered. It
// goes by the IKE SA that owns the Child SA now: the one that negotiated it
// may have been rekeyed meanwhile, and a request queued there would never
// be sent (the Child SA would stay installed).
func (d *Daemon) deleteChild(c *ChildSA) {
	d.queueRequest(c.ike.current(), exchange{exch: INFORMATIONAL, movable: true,
		payloads: func() ([]Payload, error) {
			return []Payload{&DeletePayload{Protocol: ProtoESP, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, c.In.SPI)}}}, nil
		},
		onResponse: func(*ikeSA, *Message) { d.removeChild(c) }})
}

func (d *Daemon) removeChild(c *ChildSA) {
	sa := c.ike
	for i, x := range sa.children {
		if x == c {
			sa.children = append(sa.children[:i], sa.children[i+1:]...)
			if c.rekeyTimer != nil {
				c.rekeyTimer.Stop()
			}
			d.dp.RemoveChild(c)
			d.log.Info("Child SA removed", "peer", sa.peer.Name, "spi_in", fmt.Sprintf("%#08x", c.In.SPI))
			return
		}
	}
}

// onCreateChildSA answers a CREATE_CHILD_SA request: a Child SA rekey, a new
// Child SA, or an IKE SA rekey.
func (d *Daemon) onCreateChildSA(sa *ikeSA, m *Message) []Payload {
	sap, ni := Get[*SAPayload](m), Get[*NoncePayload](m)
	if sap == nil || ni == nil || len(sap.Proposals) == 0 {
		return []Payload{&NotifyPayload{NotifyType: INVALID_SYNTAX}}
	}
	if sap.Proposals[0].Protocol == ProtoIKE {
		if d.ikeSAsAt(sa.remote.Addr()) >= MaxIKESAsPerAddr {
			// The peer rekeys without deleting the SAs it replaced.
			return []Payload{&NotifyPayload{NotifyType: NO_ADDITIONAL_SAS}}
		}
		return d.onRekeyIKE(sa, m, sap, ni)
	}
	// Bound the Child SAs the peer can make us keep (RFC 7296 §1.3:
	// NO_ADDITIONAL_SAS): new ones up to MaxChildSAs live, rekeys while
	// the ones they replace, not yet deleted, leave room.
	all, live := 0, 0
	for _, c := range sa.current().children {
		all++
		if !c.replaced {
			live++
		}
	}
	if all >= 2*MaxChildSAs || (m.Notify(REKEY_SA) == nil && live >= MaxChildSAs) {
		return []Payload{&NotifyPayload{NotifyType: NO_ADDITIONAL_SAS}}
	}
	var old *ChildSA
	if n := m.Notify(REKEY_SA); n != nil {
		if len(n.SPI) != 4 {
			return []Payload{&NotifyPayload{NotifyType: INVALID_SYNTAX}}
		}
		spi := binary.BigEndian.Uint32(n.SPI)
		for _, c := range sa.current().children {
			if c.Out.SPI == spi && !c.replaced {
				old = c
			}
		}
		if old == nil {
			return []Payload{&NotifyPayload{Protocol: ProtoESP, SPI: n.SPI, NotifyType: CHILD_SA_NOT_FOUND}}
		}
	}
	tsi, tsr := m.TS(true), m.TS(false)
	if tsi == nil || tsr == nil {
		return []Payload{&NotifyPayload{NotifyType: INVALID_SYNTAX}}
	}
	chosen, err := choose(sap.Proposals, sa.peer.ESPProposals, ProtoESP)
	if err != nil || len(chosen.SPI) != 4 {
		return []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}
	}
	cs, err := childSuiteOf(chosen)
	if err != nil {
		return []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}
	}
	nR := randNonce()
	var shared []byte
	var ourKE *KEPayload
	if cs.DH != DH_NONE {
		ke := Get[*KEPayload](m)
		if ke == nil || ke.Group != cs.DH {
			return []Payload{&NotifyPayload{NotifyType: INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, cs.DH)}}
		}
		g, err := newDH(cs.DH)
		if err != nil {
			return []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}
		}
		priv, pub, err := g.generate()
		if err != nil {
			return []Payload{&NotifyPayload{NotifyType: TEMPORARY_FAILURE}}
		}
		if shared, err = g.shared(priv, ke.Data); err != nil {
			return []Payload{&NotifyPayload{NotifyType: INVALID_SYNTAX}}
		}
		ourKE = &KEPayload{Group: cs.DH, Data: pub}
	}
	ntsi, ntsr := narrow(tsi.Selectors, sa.peer.RemoteTS), narrow(tsr.Selectors, sa.peer.LocalTS)
	if len(ntsi) == 0 || len(ntsr) == 0 {
		return []Payload{&NotifyPayload{NotifyType: TS_UNACCEPTABLE}}
	}
	spi, err := d.dp.ReserveSPI()
	if err != nil {
		return []Payload{&NotifyPayload{NotifyType: TEMPORARY_FAILURE}}
	}
	nc := d.installChildDeferred(sa, chosen, ni.Data, nR, shared, spi, false, ntsi, ntsr, old != nil)
	if nc == nil {
		d.dp.ReleaseSPI(spi)
		return []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}
	}
	if old != nil {
		if old.rekeying {
			// Simultaneous rekey: our own exchange decides which new
			// SA survives when it completes (§2.8.1).
			old.successor = nc
		}
		old.replaced = true
		if old.successor == nil {
			old.successor = nc
		}
		if old.rekeyTimer != nil {
			old.rekeyTimer.Stop()
		}
	}
	ours := *chosen
	ours.SPI = binary.BigEndian.AppendUint32(nil, spi)
	resp := []Payload{&SAPayload{Proposals: []Proposal{ours}}, &NoncePayload{Data: nR}}
	if ourKE != nil {
		resp = append(resp, ourKE)
	}
	return append(resp, &TSPayload{Initiator: true, Selectors: ntsi}, &TSPayload{Initiator: false, Selectors: ntsr})
}

// ---- IKE SA rekeying (§1.3.2, §2.18) ----

func (d *Daemon) scheduleIKERekey(sa *ikeSA) {
	delay := jitter(sa.peer.ikeLifetime())
	sa.rekeyAt = time.Now().Add(delay)
	sa.rekeyTimer = time.AfterFunc(delay, func() {
		d.post(func() { d.rekeyIKE(sa) })
	})
}

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

// ---- lost state: INVALID_IKE_SPI and INVALID_SPI (RFC 7296 §1.5, §2.21.4) ----

// suspectTries is how many times a request is sent once the peer said it
// does not know the IKE SA or a Child SA: about 3.5 s with the default
// retransmission base, instead of about 30 s.
const suspectTries = 3

func (sa *ikeSA) retransmitTries() int {
	if sa.suspect {
		return min(suspectTries, sa.peer.retransmitTries())
	}
	return sa.peer.retransmitTries()
}

// livenessHint is told that the peer may have lost sa: an unprotected
// notify said so, which anyone could have forged. It changes no state but
// this: a liveness check starts now (unless a request is under way), and
// the request under way gives up after suspectTries. A live peer answers,
// and nothing else happens.
func (d *Daemon) livenessHint(sa *ikeSA, why string) {
	if sa.state == stateDead || sa.suspect {
		return
	}
	d.stats.hints.Add(1)
	sa.suspect = true
	level := slog.LevelInfo // the peer said so: it restarted, most likely
	if why == hintSilence {
		level = slog.LevelDebug // one-way traffic does this too
	}
	d.log.Log(context.Background(), level, "peer may have lost our SAs: checking liveness now", "peer", sa.peer.Name, "hint", why)
	if sa.state == stateEstablished && !sa.rekeyed && sa.pending == nil && len(sa.queue) == 0 {
		d.queueRequest(sa, exchange{exch: INFORMATIONAL, payloads: func() ([]Payload, error) { return nil, nil }})
	}
}

// unknownIKESPI handles a message for an IKE SA we do not have. A request
// that is encrypted (we may have lost its SA in a restart) is answered,
// rate-limited, with an unprotected INVALID_IKE_SPI, the SPIs, exchange
// and message ID copied (§1.5, §2.21.4); responses never are. An
// unprotected INVALID_SPI notify (§1.5) is a hint for the IKE SA whose
// Child SA it names, and is never answered either.
func (d *Daemon) unknownIKESPI(m *Message, from netip.AddrPort, natt bool) {
	if !m.Encrypted() {
		if m.Exchange == INFORMATIONAL && !m.IsResponse() {
			if n := m.Notify(INVALID_SPI); n != nil {
				spi := n.Data
				if len(spi) != 4 {
					spi = n.SPI
				}
				if len(spi) == 4 {
					d.invalidSPIHint(binary.BigEndian.Uint32(spi), from)
				}
			}
		}
		return
	}
	d.log.Debug("IKE message for an unknown SA", "from", from, "spi_i", fmt.Sprintf("%016x", m.SPIi))
	if m.IsResponse() {
		return
	}
	if !d.limiter.allow(from.Addr()) {
		d.stats.limited.Add(1)
		return
	}
	flags := uint8(FlagResponse)
	if !m.IsInitiator() {
		flags |= FlagInitiator
	}
	r := &Message{Header: Header{SPIi: m.SPIi, SPIr: m.SPIr, Exchange: m.Exchange, MessageID: m.MessageID, Flags: flags},
		Payloads: []Payload{&NotifyPayload{NotifyType: INVALID_IKE_SPI}}}
	if b, err := r.Marshal(); err == nil {
		d.dp.SendIKE(b, from, natt)
		d.stats.invalidIKESPI.Add(1)
	}
}

// invalidSPIHint handles an unprotected INVALID_SPI from from: if it names
// the outbound SPI of one of our Child SAs with a peer at that address,
// the peer may have restarted.
func (d *Daemon) invalidSPIHint(spi uint32, from netip.AddrPort) {
	for _, sa := range d.sas {
		if sa.state != stateEstablished || sa.rekeyed || sa.remote.Addr() != from.Addr() {
			continue
		}
		for _, c := range sa.children {
			if c.Out.SPI == spi {
				d.livenessHint(sa, "INVALID_SPI")
				return
			}
		}
	}
	d.log.Debug("INVALID_SPI for no Child SA of ours", "from", from, "spi", fmt.Sprintf("%#08x", spi))
}

// UnknownESP tells the daemon that an ESP packet with an SPI the datapath
// does not know came from from (on the NAT-T port). Rate-limited, and when
// we hold no IKE SA with that address, the sender is told with an
// unprotected INVALID_SPI notify (§1.5): it restarted us, or we it. It
// neither blocks nor allocates beyond the rate limit: the datapath calls it
// for each such packet.
func (d *Daemon) UnknownESP(spi uint32, from netip.AddrPort) {
	if !d.limiter.allow(from.Addr()) {
		d.stats.limited.Add(1)
		return
	}
	select {
	case d.bulk <- packet{from: from, natt: true, esp: true, espSPI: spi}:
	default:
		d.stats.dropped.Add(1)
	}
}

// sendInvalidSPI answers an ESP packet with an unknown SPI, on the
// daemon's goroutine.
func (d *Daemon) sendInvalidSPI(spi uint32, from netip.AddrPort) {
	for _, sa := range d.sas {
		if sa.state == stateEstablished && !sa.rekeyed && sa.remote.Addr() == from.Addr() {
			// The peer has an IKE SA with us: a stale Child SA, not a
			// restart; the SA's own Deletes and rekeys deal with it.
			d.log.Debug("ESP for an unknown SPI from a peer with an IKE SA", "from", from, "spi", fmt.Sprintf("%#08x", spi))
			return
		}
	}
	m := &Message{Header: Header{SPIi: randSPI(), Exchange: INFORMATIONAL, Flags: FlagInitiator},
		Payloads: []Payload{&NotifyPayload{NotifyType: INVALID_SPI, Data: binary.BigEndian.AppendUint32(nil, spi)}}}
	if b, err := m.Marshal(); err == nil {
		d.dp.SendIKE(b, from, true)
		d.stats.invalidSPI.Add(1)
	}
}

// The traffic watch: a peer that restarted but sends no INVALID_SPI (as
// strongSwan, or a kernel, drops ESP for unknown SPIs silently) shows as
// ESP sent and none received. When that lasts silentFor, and nothing was
// heard on the IKE SA either, its liveness is checked at once, giving up
// after suspectTries, instead of waiting for the DPD interval and the
// whole retransmission schedule. A peer that answers costs one exchange
// per silentFor of one-way traffic.
const (
	watchTick   = time.Second
	silentFor   = 2 * time.Second
	hintSilence = "ESP sent, none received"
)

// childOutCounter is implemented by datapaths that count what each Child
// SA sent (tunnel.Engine does).
type childOutCounter interface {
	ChildOutPackets(c *ChildSA) uint64
}

// watchTraffic runs every watchTick on the daemon's goroutine, for all IKE
// SAs with dead-peer detection on.
func (d *Daemon) watchTraffic() {
	oc, ok := d.dp.(childOutCounter)
	if !ok {
		return
	}
	now := time.Now()
	for _, sa := range d.sas {
		if sa.state != stateEstablished || sa.rekeyed || sa.peer.dpd() < 0 || len(sa.children) == 0 {
			continue
		}
		var in, out uint64
		for _, c := range sa.children {
			in += d.dp.ChildInPackets(c)
			out += oc.ChildOutPackets(c)
		}
		if in != sa.watchIn {
			sa.watchIn, sa.lastIn = in, now
		}
		sent := out != sa.watchOut
		sa.watchOut = out
		if sent && now.Sub(sa.lastIn) >= silentFor && now.Sub(sa.lastHeard) >= silentFor && sa.pending == nil && len(sa.queue) == 0 {
			d.livenessHint(sa, hintSilence)
		}
	}
	d.after(watchTick, d.watchTraffic)
}
