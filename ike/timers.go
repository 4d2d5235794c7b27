package ike

import (
	"fmt"
	"time"
)

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
// INITIAL_CONTACT (§2.4): it says it holds no other. Most often it lost
// their state; but it decided so when it started sa, and one of ours may
// have come up at its end since (both sides initiated after a restart).
// So the old ones are retired: their Child SAs go at once, and a Delete
// tells the peer, which answers it, or drops it for an IKE SA it does not
// know (our Delete then gives up after suspectTries, quietly).
func (d *Daemon) initialContact(sa *ikeSA) {
	for _, other := range d.sas {
		if other != sa && other.peer == sa.peer && other.state == stateEstablished && !other.rekeyed {
			d.log.Info("INITIAL_CONTACT: removing the peer's old IKE SA", "peer", sa.peer.Name,
				"spi_i", fmt.Sprintf("%016x", other.spiI))
			other.rekeyed = true // not a failure: no restart
			other.suspect = true
			d.retire(other)
		}
	}
}

// scheduleRestart re-initiates a peer after a failure, with backoff.
func (d *Daemon) scheduleRestart(p *PeerConfig) {
	delay := restartDelay(p)
	d.log.Info("will re-initiate", "peer", p.Name, "in", delay)
	time.AfterFunc(delay, func() {
		d.post(func() {
			if d.peerByName(p.Name) != p {
				return // removed or replaced by SetPeers
			}
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

// scheduleDPD checks the peer's liveness dpd after it was last heard: an
// authenticated IKE message, or ESP accepted by one of sa's Child SAs.
// With a datapath that cannot tell when (no childHearer), ESP counts as
// heard when a check sees the packet counts grew, so the check comes up
// to twice dpd after the last packet.
func (d *Daemon) scheduleDPD(sa *ikeSA) {
	iv := sa.peer.dpd()
	if iv < 0 {
		return
	}
	hearer, exact := d.dp.(childHearer)
	var lastIn uint64
	var check func()
	check = func() {
		d.post(func() {
			if sa.state != stateEstablished {
				return
			}
			var in uint64
			for _, c := range sa.children {
				if exact {
					if t := hearer.ChildHeard(c.In.SPI); t.After(sa.lastHeard) {
						sa.lastHeard = t
					}
					continue
				}
				in += d.dp.ChildInPackets(c.In.SPI)
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

func (d *Daemon) scheduleChildRekey(c *ChildSA) {
	delay := jitter(c.ike.peer.childLifetime())
	c.rekeyAt = time.Now().Add(delay)
	c.rekeyTimer = time.AfterFunc(delay, func() {
		d.post(func() { d.rekeyChild(c) })
	})
}

// ChildEvent tells the daemon that the Child SA whose inbound SPI is spi
// reached a lifetime limit in the datapath: a soft event starts a rekey;
// at the hard one the Child SA is removed and the peer told (RFC 7296
// §2.8), whatever became of its rekey. An SPI the daemon no longer knows
// is ignored (the datapath removes a pair at its hard limit itself).
func (d *Daemon) ChildEvent(spi uint32, hard bool) {
	d.post(func() {
		c := d.childBySPI(spi)
		if c == nil {
			return
		}
		if !hard {
			d.rekeyChild(c)
			return
		}
		d.dp.RemoveChild(c.In.SPI)
		if sa := c.ike; sa != nil && sa.state != stateDead {
			d.log.Warn("Child SA past its hard lifetime: removed", "peer", sa.peer.Name, "spi_in", fmt.Sprintf("%#08x", c.In.SPI))
			d.deleteChild(c)
		}
	})
}

func (d *Daemon) scheduleIKERekey(sa *ikeSA) {
	delay := jitter(sa.peer.ikeLifetime())
	sa.rekeyAt = time.Now().Add(delay)
	sa.rekeyTimer = time.AfterFunc(delay, func() {
		d.post(func() { d.rekeyIKE(sa) })
	})
}

// childBySPI returns the Child SA of an IKE SA whose inbound SPI is spi,
// or nil.
func (d *Daemon) childBySPI(spi uint32) *ChildSA {
	for _, sa := range d.sas {
		for _, c := range sa.children {
			if c.In.SPI == spi {
				return c
			}
		}
	}
	return nil
}

// childHearer is implemented by datapaths that tell when each Child SA
// (by inbound SPI) last accepted a packet (tunnel.Engine does, to the
// received batch).
type childHearer interface {
	ChildHeard(spi uint32) time.Time
}
