package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Protected INVALID_SPI (RFC 7296 §2.21.4): ESP for an SPI we do not know,
// from an address we hold an established IKE SA with, is a Child SA the
// peer still has and we lost (removed at its hard lifetime while our
// Delete was lost, or refused half-made). We tell the peer inside the IKE
// SA, so that it can believe us and make the Child SA again; a peer that
// tells us so, likewise, gets our Child SA deleted and made again.
//
// Who can make us send one: anyone who can send UDP with the peer's
// source address, with any SPI. What it costs: the datapath's call is
// rate-limited per source and in all before it is queued (UnknownESP),
// and each IKE SA sends at most one INFORMATIONAL per invalidSPIInterval,
// and none while the last is unanswered; the peer answers it and drops
// the notify for an SPI it does not have. Who can make us act on one:
// only the peer itself (the message is authenticated), which could delete
// the Child SA anyway; its Child SAs come back with the backoff of
// childLost, so it cannot make us rekey in a loop.

// invalidSPIInterval is the least time between two protected INVALID_SPI
// notifies in one IKE SA.
const invalidSPIInterval = time.Second

// indexAddr adds sa to the IKE SAs by peer address (add), or removes it.
// putSA, deleteSA and setRemote keep it, so that the IKE SAs with an
// address are found without a scan of all.
func (d *Daemon) indexAddr(sa *ikeSA, add bool) {
	if sa == nil {
		return
	}
	a := sa.remote.Addr()
	l := d.byAddr[a]
	if add {
		d.byAddr[a] = append(l, sa)
		return
	}
	for i, x := range l {
		if x == sa {
			l[i] = l[len(l)-1]
			l[len(l)-1] = nil
			l = l[:len(l)-1]
			break
		}
	}
	if len(l) == 0 {
		delete(d.byAddr, a)
		return
	}
	d.byAddr[a] = l
}

// sendInvalidSPI answers an ESP packet with an unknown SPI, on the
// daemon's goroutine: inside each established IKE SA with the sender's
// address (limited per IKE SA), or, when there is none, unprotected
// (§1.5; UnknownESP limited its rate).
func (d *Daemon) sendInvalidSPI(spi uint32, from netip.AddrPort) {
	inSA := false
	for _, sa := range d.byAddr[from.Addr()] {
		if sa.state == stateEstablished && !sa.rekeyed {
			inSA = true
			d.notifyInvalidSPI(sa, spi)
		}
	}
	if inSA {
		return
	}
	m := &Message{Header: Header{SPIi: randSPI(), Exchange: INFORMATIONAL, Flags: FlagInitiator},
		Payloads: []Payload{&NotifyPayload{NotifyType: INVALID_SPI, Data: binary.BigEndian.AppendUint32(nil, spi)}}}
	if b, err := m.Marshal(); err == nil {
		d.dp.SendIKE(b, from, true)
		d.stats.invalidSPI.Add(1)
	}
}

// notifyInvalidSPI sends INVALID_SPI for spi in sa, unless sa sent one
// less than invalidSPIInterval ago or it is not answered yet.
func (d *Daemon) notifyInvalidSPI(sa *ikeSA, spi uint32) {
	if now := time.Now(); sa.invalidSPIBusy || now.Sub(sa.invalidSPISent) < invalidSPIInterval {
		d.stats.limited.Add(1)
		return
	} else {
		sa.invalidSPISent = now
	}
	sa.invalidSPIBusy = true
	d.log.Debug("ESP for an unknown SPI from a peer with an IKE SA: telling it", "peer", sa.peer.Name, "spi", fmt.Sprintf("%#08x", spi))
	d.queueRequest(sa, exchange{exch: INFORMATIONAL,
		payloads: func() ([]Payload, error) {
			return []Payload{&NotifyPayload{NotifyType: INVALID_SPI, Data: binary.BigEndian.AppendUint32(nil, spi)}}, nil
		},
		onResponse: func(*ikeSA, *Message) { sa.invalidSPIBusy = false }})
	d.stats.invalidSPI.Add(1)
}

// onInvalidSPI handles a protected INVALID_SPI notify of the peer in sa:
// if it names the outbound SPI of one of sa's Child SAs, the peer lost
// that Child SA. It is removed here, a Delete for its other half goes to
// the peer, and a new one is made for its selectors (with the backoff of
// childLost).
func (d *Daemon) onInvalidSPI(sa *ikeSA, n *NotifyPayload) {
	b := n.Data
	if len(b) != 4 {
		b = n.SPI
	}
	if len(b) != 4 {
		return
	}
	spi := binary.BigEndian.Uint32(b)
	owner := sa.current()
	for i, c := range owner.children {
		if c.Out.SPI != spi {
			continue
		}
		owner.children = append(owner.children[:i], owner.children[i+1:]...)
		if c.rekeyTimer != nil {
			c.rekeyTimer.Stop()
		}
		d.dp.RemoveChild(c.In.SPI)
		d.log.Info("peer lost a Child SA (INVALID_SPI): removing it and making it again", "peer", sa.peer.Name,
			"spi_out", fmt.Sprintf("%#08x", c.Out.SPI))
		d.queueRequest(owner, exchange{exch: INFORMATIONAL, movable: true, payloads: func() ([]Payload, error) {
			return []Payload{&DeletePayload{Protocol: ProtoESP, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, c.In.SPI)}}}, nil
		}})
		if !c.replaced && len(uncovered(owner.peer.RemoteTS, owner.children)) > 0 {
			d.childLost(owner)
			d.restoreChildren(owner)
		}
		return
	}
	d.log.Debug("INVALID_SPI for no Child SA of ours", "peer", sa.peer.Name, "spi", fmt.Sprintf("%#08x", spi))
}
