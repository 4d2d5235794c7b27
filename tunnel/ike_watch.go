package tunnel

import (
	"time"

	"github.com/oevpn/oevpn/ike"
)

// ChildOutPackets returns how many packets a Child SA sent: with
// ChildInPackets, the IKE daemon sees traffic that gets no answer (a peer
// that restarted and drops our ESP silently).
func (e *Engine) ChildOutPackets(c *ike.ChildSA) uint64 {
	if p, ok := c.Handle.(*SAPair); ok {
		return p.Out.Counters().Packets
	}
	return 0
}

// ChildHeard returns when a Child SA last accepted a packet (to the
// received batch), or the zero time: dead-peer detection is due dpd after
// the peer was last heard.
func (e *Engine) ChildHeard(c *ike.ChildSA) time.Time {
	if p, ok := c.Handle.(*SAPair); ok {
		if n := p.heard.Load(); n != 0 {
			return time.Unix(0, n)
		}
	}
	return time.Time{}
}
