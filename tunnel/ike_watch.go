package tunnel

import "time"

// ChildOutPackets returns how many packets the Child SA whose inbound SPI
// is spi sent: with ChildInPackets, the IKE daemon sees traffic that gets
// no answer (a peer that restarted and drops our ESP silently).
func (e *Engine) ChildOutPackets(spi uint32) uint64 {
	if p := e.pairBySPI(spi); p != nil {
		return p.Out.Counters().Packets
	}
	return 0
}

// ChildHeard returns when the Child SA whose inbound SPI is spi last
// accepted a packet (to the received batch), or the zero time: dead-peer
// detection is due dpd after the peer was last heard.
func (e *Engine) ChildHeard(spi uint32) time.Time {
	if p := e.pairBySPI(spi); p != nil {
		if n := p.heard.Load(); n != 0 {
			return time.Unix(0, n)
		}
	}
	return time.Time{}
}
