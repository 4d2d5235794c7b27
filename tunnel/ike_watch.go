package tunnel

import "github.com/oevpn/oevpn/ike"

// ChildOutPackets returns how many packets a Child SA sent: with
// ChildInPackets, the IKE daemon sees traffic that gets no answer (a peer
// that restarted and drops our ESP silently).
func (e *Engine) ChildOutPackets(c *ike.ChildSA) uint64 {
	if p, ok := c.Handle.(*SAPair); ok {
		return p.Out.Counters().Packets
	}
	return 0
}
