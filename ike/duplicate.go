package ike

import (
	"bytes"
	"fmt"
)

// dropDuplicate keeps one IKE SA with a peer when sa, just established by
// IKE_AUTH, duplicates another: both sides initiated at once, or one
// restarted while the other's dead-peer detection re-initiated (strongSwan
// with unique = no keeps both, and so would we, each with its own Child SA
// pair). As for simultaneous rekeys (RFC 7296 §2.8.1), the IKE SA whose
// lower nonce is the lowest goes, with a Delete: a rule both ends reach
// alone, so two oevpn ends delete the same one. The Child SAs of the one
// that stays carry the traffic. A peer that authenticated with AUTH_NULL
// proved nothing, so its IKE SAs are never taken for duplicates: whoever
// made the second could choose its nonce and replace the first.
func (d *Daemon) dropDuplicate(sa *ikeSA) {
	if sa.state != stateEstablished || sa.peerNull {
		return
	}
	for _, other := range d.sas {
		if other == sa || other.state != stateEstablished || other.rekeyed || other.peerNull || other.peer.Name != sa.peer.Name ||
			!other.peerIDSeen.Equal(sa.peerIDSeen) {
			continue
		}
		victim := other
		if bytes.Compare(minNonce(sa.nI, sa.nR), minNonce(other.nI, other.nR)) < 0 {
			victim = sa
		}
		d.log.Info("duplicate IKE SA with the peer; deleting one", "peer", sa.peer.Name,
			"spi_i", fmt.Sprintf("%016x", victim.spiI), "spi_r", fmt.Sprintf("%016x", victim.spiR))
		victim.rekeyed = true // not a failure: no restart, and the peer stays up
		d.retire(victim)
		if victim == sa {
			return
		}
	}
}

// retire deletes sa, an IKE SA another one replaces: its Child SAs leave
// the datapath at once, and its Delete is a request like any other,
// retransmitted until the peer answers (RFC 7296 §1.4.1), when sa is torn
// down. Sent once and forgotten, the Delete is lost whenever the peer
// handles it before our IKE_AUTH response that made sa (strongSwan then
// ignores it, as the SA is still connecting there), and the peer keeps
// both.
func (d *Daemon) retire(sa *ikeSA) {
	for _, c := range sa.children {
		if c.rekeyTimer != nil {
			c.rekeyTimer.Stop()
		}
		d.dp.RemoveChild(c.In.SPI)
	}
	sa.children = nil
	b, err := sa.encrypt(INFORMATIONAL, sa.nextMsgID, false, []Payload{&DeletePayload{Protocol: ProtoIKE}})
	if err != nil {
		d.teardown(sa, nil)
		return
	}
	sa.nextMsgID++
	sa.state = stateDeleting
	d.sendRequest(sa, [][]byte{b}, sa.nextMsgID-1, nil)
}
