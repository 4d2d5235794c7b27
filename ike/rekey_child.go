package ike

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

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
			d.dp.RemoveChild(nc.In.SPI) // stop sending on it now; the Delete follows
			d.deleteChild(nc)
			return
		}
		c.replaced = true
		c.successor = nc
		d.deleteChild(c)
	})
}

// requestChild sends a CREATE_CHILD_SA request for a new Child SA (one that
// rekeys old, if not nil) and calls done with the installed SA or nil.
func (d *Daemon) requestChild(sa *ikeSA, old *ChildSA, local, remote Selectors, done func(*ChildSA, *Message)) {
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
			d.uninstallChild(c)
			d.log.Info("Child SA removed", "peer", sa.peer.Name, "spi_in", fmt.Sprintf("%#08x", c.In.SPI))
			return
		}
	}
}

// rekeyedLinger is how long the inbound SA of a Child SA that a rekey
// replaced still accepts packets once it is deleted (strongSwan's
// delete_rekeyed_delay): the peer may have sent on it until it saw our
// answer, and ESP does not travel with IKE, so those packets can arrive
// after the Delete exchange that removed it.
const rekeyedLinger = 5 * time.Second

// lingering is the inbound SPI of a retired Child SA, until when the IKE
// SA may still end its linger. That is a second before the datapath ends
// it itself: after that, the SPI may be given out again.
type lingering struct {
	spi   uint32
	until time.Time
}

// uninstallChild takes a Child SA out of the datapath: at once, or, for
// one a rekey replaced, with its inbound SA lingering, which its IKE SA
// remembers: the linger ends with the IKE SA.
func (d *Daemon) uninstallChild(c *ChildSA) {
	if !c.replaced {
		d.dp.RemoveChild(c.In.SPI)
		return
	}
	d.dp.RetireChild(c.In.SPI, rekeyedLinger)
	sa := c.ike.current()
	now := time.Now()
	sa.lingering = slices.DeleteFunc(sa.lingering, func(l lingering) bool { return !now.Before(l.until) })
	sa.lingering = append(sa.lingering, lingering{c.In.SPI, now.Add(rekeyedLinger - time.Second)})
}

// endLingering ends the linger of the Child SAs sa retired: when the IKE
// SA goes, so do they (a peer removed by a reload, a dead peer).
func (d *Daemon) endLingering(sa *ikeSA) {
	now := time.Now()
	for _, l := range sa.lingering {
		if now.Before(l.until) {
			d.dp.RemoveChild(l.spi)
		}
	}
	sa.lingering = nil
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
