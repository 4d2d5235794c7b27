package ike

import (
	"encoding/binary"
	"fmt"
)

// onInformational handles Delete payloads and liveness checks.
func (d *Daemon) onInformational(sa *ikeSA, m *Message) []Payload {
	var resp []Payload
	if n := m.Notify(AUTHENTICATION_FAILED); n != nil {
		// §2.21.2: the initiator could not authenticate our IKE_AUTH
		// response, after we installed the first Child SA. The IKE SA
		// and its Child SAs are void.
		d.log.Warn("peer refused our authentication; removing the IKE SA and its Child SAs", "peer", sa.peer.Name,
			"auth", sa.peer.Auth.Method(), "local_id", ourID(sa.peer), "notify", n.NotifyType)
		sa.state = stateDeleting
		return nil
	}
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok && n.NotifyType == INVALID_SPI && sa.state == stateEstablished {
			d.onInvalidSPI(sa, n)
		}
		del, ok := p.(*DeletePayload)
		if !ok {
			continue
		}
		switch del.Protocol {
		case ProtoIKE:
			d.log.Info("peer deleted the IKE SA", "peer", sa.peer.Name)
			d.promoteColliding(sa)
			sa.state = stateDeleting
			return nil
		case ProtoESP:
			var ours [][]byte
			owner := sa.current()
			lost := false
			for _, spi := range del.SPIs {
				for i, c := range owner.children {
					if len(spi) == 4 && binary.BigEndian.Uint32(spi) == c.Out.SPI {
						ours = append(ours, binary.BigEndian.AppendUint32(nil, c.In.SPI))
						d.uninstallChild(c)
						if c.rekeyTimer != nil {
							c.rekeyTimer.Stop()
						}
						owner.children = append(owner.children[:i], owner.children[i+1:]...)
						lost = lost || !c.replaced
						d.log.Info("peer deleted a Child SA", "peer", sa.peer.Name, "spi_out", fmt.Sprintf("%#08x", c.Out.SPI))
						break
					}
				}
			}
			if len(ours) > 0 {
				resp = append(resp, &DeletePayload{Protocol: ProtoESP, SPIs: ours})
			}
			if lost && len(uncovered(owner.peer.RemoteTS, owner.children)) > 0 {
				d.childLost(owner)
				if owner.peer.AutoStart {
					d.restoreChildren(owner)
				}
			}
		}
	}
	return resp
}

func (d *Daemon) sendDeleteIKE(sa *ikeSA) {
	b, err := sa.encrypt(INFORMATIONAL, sa.nextMsgID, false, []Payload{&DeletePayload{Protocol: ProtoIKE}})
	if err == nil {
		sa.nextMsgID++
		d.send(sa, b)
	}
}
