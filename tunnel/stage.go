package tunnel

import (
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
)

// stage holds copies of outbound packets that wait for an SA to be
// negotiated: a trap's (a configured peer) or an opportunistic
// destination's (discovery, then IKE). Its owner's lock guards it, and it
// is touched only for packets that have no SA, never on the path of those
// that have one.
type stage struct {
	pkts [][]byte
	// retired: the owner left the engine's tables. A packet that finds
	// it here was routed by a table older than that, and is decided
	// again rather than held where no flush will come.
	retired bool
}

// hold keeps a copy of pkt unless max are held already, and reports
// whether it did.
func (s *stage) hold(pkt []byte, max int) bool {
	if len(s.pkts) >= max {
		return false
	}
	s.pkts = append(s.pkts, append([]byte(nil), pkt...))
	return true
}

// len returns how many packets are held.
func (s *stage) len() int { return len(s.pkts) }

// take empties the stage and returns what it held.
func (s *stage) take() [][]byte {
	p := s.pkts
	s.pkts = nil
	return p
}

// retire empties the stage for good and returns what it held.
func (s *stage) retire() [][]byte {
	s.retired = true
	return s.take()
}

// sealThrough seals the held packets that pair p carries, in order, into
// new buffers appended to send; the others stay held.
func (s *stage) sealThrough(p *SAPair, send [][]byte) [][]byte {
	keep := s.pkts[:0:0]
	for _, pkt := range s.pkts {
		if out := sealCopy(p, pkt); out != nil {
			send = append(send, out)
		} else {
			keep = append(keep, pkt)
		}
	}
	s.pkts = keep
	return send
}

// sealCopy encrypts a held packet into a new buffer, or returns nil if the
// pair does not carry it.
func sealCopy(p *SAPair, pkt []byte) []byte {
	ip, err := ipview.Parse(pkt)
	if err != nil || !p.Remote.MatchDst(&ip) || !p.Local.MatchSrc(&ip) {
		return nil
	}
	buf := make([]byte, esp.Headroom+len(pkt)+esp.Tailroom)
	copy(buf[esp.Headroom:], pkt)
	nh := byte(ipview.ProtoIPv4)
	if ipview.Version(pkt) == 6 {
		nh = ipview.ProtoIPv6
	}
	out, err := p.Out.Seal(buf, esp.Headroom, ip.Len, nh)
	if err != nil {
		return nil
	}
	return out
}
