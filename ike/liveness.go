package ike

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

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
	for _, sa := range d.byAddr[from.Addr()] {
		if sa.state != stateEstablished || sa.rekeyed {
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
// does not know came from from (on the NAT-T port). Rate-limited, the
// sender is told with an INVALID_SPI notify (sendInvalidSPI): inside the
// IKE SA we hold with that address (we lost the Child SA), or unprotected
// (§1.5) when there is none (it restarted us, or we it). It neither
// blocks nor allocates beyond the rate limit: the datapath calls it for
// each such packet.
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
			in += d.dp.ChildInPackets(c.In.SPI)
			out += oc.ChildOutPackets(c.In.SPI)
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

// suspectTries is how many times a request is sent once the peer said it
// does not know the IKE SA or a Child SA: about 3.5 s with the default
// retransmission base, instead of about 30 s.
const suspectTries = 3

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
// SA (by inbound SPI) sent (tunnel.Engine does).
type childOutCounter interface {
	ChildOutPackets(spi uint32) uint64
}
