package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/oevpn/oevpn/internal/ipview"
)

// Selector is one traffic selector (RFC 7296 §3.13.1): an inclusive address
// range of one family, an IP protocol (0 = any) and an inclusive port range.
// For ICMP the "port" is type<<8 | code.
type Selector struct {
	Start, End         netip.Addr
	Proto              uint8
	StartPort, EndPort uint16
}

// ErrSelector is wrapped by every selector parse error.
var ErrSelector = errors.New("invalid traffic selector")

// PrefixSelector returns the selector covering prefix p, any protocol and port.
func PrefixSelector(p netip.Prefix) Selector {
	p = p.Masked()
	return Selector{Start: p.Addr(), End: lastAddr(p), EndPort: 65535}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ParseSelector parses "ADDR", "PREFIX" or "ADDR-ADDR", optionally followed by
// "[PROTO]" or "[PROTO/PORT]" or "[PROTO/LOW-HIGH]", e.g. "192.0.2.0/24",
// "2001:db8::1", "10.0.0.1-10.0.0.9[tcp/80]".
func ParseSelector(s string) (Selector, error) {
	addrs, rest, hasProto := strings.Cut(s, "[")
	var sel Selector
	switch {
	case strings.Contains(addrs, "/"):
		p, err := netip.ParsePrefix(addrs)
		if err != nil {
			return sel, fmt.Errorf("%w %q: %v", ErrSelector, s, err)
		}
		sel = PrefixSelector(p)
	case strings.Contains(addrs, "-"):
		lo, hi, _ := strings.Cut(addrs, "-")
		a, err1 := netip.ParseAddr(lo)
		b, err2 := netip.ParseAddr(hi)
		if err1 != nil || err2 != nil || a.Is4() != b.Is4() || b.Less(a) {
			return sel, fmt.Errorf("%w %q: want LOW-HIGH addresses of one family, LOW ≤ HIGH", ErrSelector, s)
		}
		sel = Selector{Start: a.Unmap(), End: b.Unmap(), EndPort: 65535}
	default:
		a, err := netip.ParseAddr(addrs)
		if err != nil {
			return sel, fmt.Errorf("%w %q: %v", ErrSelector, s, err)
		}
		sel = Selector{Start: a.Unmap(), End: a.Unmap(), EndPort: 65535}
	}
	if !hasProto {
		return sel, nil
	}
	spec, ok := strings.CutSuffix(rest, "]")
	if !ok {
		return sel, fmt.Errorf("%w %q: missing ']'", ErrSelector, s)
	}
	protoStr, ports, hasPorts := strings.Cut(spec, "/")
	p, ok := ipview.ParseProto(protoStr)
	if !ok {
		return sel, fmt.Errorf("%w %q: unknown protocol %q", ErrSelector, s, protoStr)
	}
	sel.Proto = p
	if hasPorts {
		lo, hi, isRange := strings.Cut(ports, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil || b < a {
			return sel, fmt.Errorf("%w %q: bad port range %q", ErrSelector, s, ports)
		}
		sel.StartPort, sel.EndPort = uint16(a), uint16(b)
	}
	return sel, nil
}

// String formats the selector in the syntax ParseSelector reads.
func (s Selector) String() string {
	var b strings.Builder
	if p, ok := s.Prefix(); ok {
		if p.IsSingleIP() {
			b.WriteString(p.Addr().String())
		} else {
			b.WriteString(p.String())
		}
	} else {
		b.WriteString(s.Start.String() + "-" + s.End.String())
	}
	if s.Proto != 0 {
		b.WriteString("[" + strconv.Itoa(int(s.Proto)))
		if !s.AnyPort() {
			b.WriteString("/" + strconv.Itoa(int(s.StartPort)))
			if s.EndPort != s.StartPort {
				b.WriteString("-" + strconv.Itoa(int(s.EndPort)))
			}
		}
		b.WriteString("]")
	}
	return b.String()
}

// Prefix returns the prefix the address range equals, if it is one.
func (s Selector) Prefix() (netip.Prefix, bool) {
	for bits := 0; bits <= s.Start.BitLen(); bits++ {
		p := netip.PrefixFrom(s.Start, bits)
		if p.Masked().Addr() == s.Start && lastAddr(p) == s.End {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// AnyPort reports whether the port range is the full one.
func (s Selector) AnyPort() bool { return s.StartPort == 0 && s.EndPort == 65535 }

// Single returns the one address the selector covers, if it covers one.
func (s Selector) Single() (netip.Addr, bool) { return s.Start, s.Start == s.End }

// Contains reports whether addr is in the selector's address range.
func (s Selector) Contains(addr netip.Addr) bool {
	return addr.Is4() == s.Start.Is4() && s.Start.Compare(addr) <= 0 && addr.Compare(s.End) <= 0
}

// match reports whether an address with the packet's protocol and port
// falls inside the selector.
func (s Selector) match(addr netip.Addr, proto uint8, port uint16, hasPort bool) bool {
	if !s.Contains(addr) {
		return false
	}
	if s.Proto != 0 && s.Proto != proto {
		return false
	}
	if s.AnyPort() {
		return true
	}
	return hasPort && s.StartPort <= port && port <= s.EndPort
}

// Selectors is a set of selectors: a packet matches if any one matches.
type Selectors []Selector

// MatchSrc reports whether the packet's source side falls inside the set.
func (ss Selectors) MatchSrc(p *ipview.Packet) bool {
	for i := range ss {
		if ss[i].match(p.Src, p.Proto, p.SrcPort, p.HasPorts) {
			return true
		}
	}
	return false
}

// MatchDst reports whether the packet's destination side falls inside the
// set. For ICMP the type and code are compared, as for the source side.
func (ss Selectors) MatchDst(p *ipview.Packet) bool {
	port := p.DstPort
	if p.Proto == ipview.ProtoICMP || p.Proto == ipview.ProtoICMPv6 {
		port = p.SrcPort
	}
	for i := range ss {
		if ss[i].match(p.Dst, p.Proto, port, p.HasPorts) {
			return true
		}
	}
	return false
}

// Contains reports whether one of the selectors contains addr.
func (ss Selectors) Contains(addr netip.Addr) bool {
	for _, s := range ss {
		if s.Contains(addr) {
			return true
		}
	}
	return false
}

// MarshalText implements encoding.TextMarshaler.
func (s Selector) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseSelector.
func (s *Selector) UnmarshalText(b []byte) error {
	v, err := ParseSelector(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
