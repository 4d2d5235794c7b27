package tunnel

import (
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/probe"
)

// kindProbe is the kind of an AutoVPN probe datagram on UDP/4500, beside
// the kinds RFC 3948 defines (esp.Kind).
const kindProbe esp.Kind = 255

// classify tells what a datagram received on the NAT-T port carries: what
// esp.Classify finds (ESP, IKE behind the non-ESP marker, a NAT-keepalive),
// or, among the SPIs RFC 4303 reserves, a probe behind its preamble. It
// returns 0 for anything else, to be dropped as malformed.
func classify(d []byte) esp.Kind {
	kind, err := esp.Classify(d)
	if err != nil && probe.HasPreamble(d) {
		return kindProbe
	}
	return kind
}
