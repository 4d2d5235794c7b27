package probe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/oevpn/oevpn/internal/ipview"
)

// Errors of the decoders. Anything malformed is to be dropped silently
// and counted (draft §6).
var (
	// ErrMalformed wraps every decoding failure.
	ErrMalformed = errors.New("probe: malformed message")
	// ErrNotProbe is returned for an ICMP message that is well formed but
	// not an AutoVPN probe (no object of our Class-Num): the caller passes
	// it on untouched.
	ErrNotProbe = errors.New("probe: not an AutoVPN message")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// NATDetect is the NAT-Detect payload: the source address and port of the
// original clear packet as the remote gateway saw it (draft §5.6).
type NATDetect struct {
	Addr netip.Addr // IPv4
	Port uint16
}

// Message is one probe message.
type Message struct {
	Type     MsgType
	VendorID []byte
	NonceI   []byte
	NonceR   []byte
	NAT      *NATDetect
	// Fragment is the triggering packet's IP header and the 8 octets that
	// follow (the ICMP original datagram, without padding; over UDP the
	// Fragment payload).
	Fragment []byte
}

// check enforces the payloads each message type must carry (draft §4).
func (m *Message) check() error {
	switch m.Type {
	case Request:
		// NAT-Detect carries an IPv4 address: IPv6 requests go without.
		if m.NonceR == nil || m.NAT == nil && !(len(m.Fragment) > 0 && m.Fragment[0]>>4 == 6) {
			return malformed("probe request without Nonce-R or NAT-Detect")
		}
	case Response, Complete:
		if m.NonceI == nil || m.NonceR == nil {
			return malformed("%v without Nonce-I or Nonce-R", m.Type)
		}
	default:
		return malformed("message type %d", m.Type)
	}
	return nil
}

// payload appends one payload's value through emit(type, value).
func (m *Message) payloads(emit func(t PayloadType, v []byte)) {
	emit(PayloadVersion, append([]byte{Version, byte(m.Type), 0}, m.VendorID...))
	if m.NonceI != nil {
		emit(PayloadNonceI, m.NonceI)
	}
	if m.NonceR != nil {
		emit(PayloadNonceR, m.NonceR)
	}
	if m.NAT != nil {
		v := make([]byte, natDetectLen)
		a := m.NAT.Addr.Unmap().As4()
		binary.BigEndian.PutUint32(v, binary.BigEndian.Uint32(a[:])^natMask)
		binary.BigEndian.PutUint16(v[4:], m.NAT.Port)
		emit(PayloadNATDetect, v)
	}
}

// setPayload decodes one payload into m; unknown types are ignored.
func (m *Message) setPayload(t PayloadType, v []byte, seen map[PayloadType]bool) error {
	switch t {
	case PayloadVersion, PayloadNonceI, PayloadNonceR, PayloadNATDetect, PayloadFragment:
		if seen[t] {
			return malformed("payload %d twice", t)
		}
		seen[t] = true
	default:
		return nil // forward compatibility (draft §6)
	}
	switch t {
	case PayloadVersion:
		if len(v) < 3 {
			return malformed("short Version payload")
		}
		if v[0] != Version {
			return malformed("version %d", v[0])
		}
		m.Type = MsgType(v[1])
		if len(v) > 3 {
			m.VendorID = bytes.Clone(v[3:])
		}
	case PayloadNonceI, PayloadNonceR:
		if len(v) < MinNonce || len(v) > MaxNonce {
			return malformed("nonce of %d octets", len(v))
		}
		if t == PayloadNonceI {
			m.NonceI = bytes.Clone(v)
		} else {
			m.NonceR = bytes.Clone(v)
		}
	case PayloadNATDetect:
		if len(v) != natDetectLen {
			return malformed("NAT-Detect of %d octets", len(v))
		}
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(v)^natMask)
		m.NAT = &NATDetect{Addr: netip.AddrFrom4(a), Port: binary.BigEndian.Uint16(v[4:])}
	case PayloadFragment:
		m.Fragment = bytes.Clone(v)
	}
	return nil
}

// AppendUDP appends the UDP encoding (draft §5.2): the preamble, then each
// payload behind its header (Type, 0, Length including the header). Over
// UDP the fragment, if any, is a Fragment payload.
func (m *Message) AppendUDP(b []byte) []byte {
	b = append(b, Preamble[:]...)
	emit := func(t PayloadType, v []byte) {
		b = append(b, byte(t), 0)
		b = binary.BigEndian.AppendUint16(b, uint16(4+len(v)))
		b = append(b, v...)
	}
	m.payloads(emit)
	if m.Fragment != nil {
		emit(PayloadFragment, m.Fragment)
	}
	return b
}

// ParseUDP decodes a probe message carried over UDP; b starts with the
// preamble.
func ParseUDP(b []byte) (*Message, error) {
	if !HasPreamble(b) {
		return nil, malformed("no preamble")
	}
	b = b[PreambleLen:]
	m := &Message{}
	seen := map[PayloadType]bool{}
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, malformed("truncated payload header")
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < 4 || n > len(b) {
			return nil, malformed("payload length %d of %d", n, len(b))
		}
		if err := m.setPayload(PayloadType(b[0]), b[4:n], seen); err != nil {
			return nil, err
		}
		b = b[n:]
	}
	if !seen[PayloadVersion] {
		return nil, malformed("no Version payload")
	}
	return m, m.check()
}

// AppendICMP appends the ICMPv4 encoding (draft §5.1): a Parameter Problem
// (type 12, code 1) whose RFC 4884 length field covers the original
// datagram (the fragment, zero-padded to at least 128 octets), followed by
// an extension structure with one object of Class-Num ClassNum per payload
// (C-Type = payload type). Checksums are filled in.
func (m *Message) AppendICMP(b []byte) []byte {
	start := len(b)
	orig := max(minOriginal, (len(m.Fragment)+3)&^3)
	b = append(b, icmpTypeParamProblem, icmpCode, 0, 0, 0, byte(orig/4), 0, 0)
	b = append(b, m.Fragment...)
	b = append(b, make([]byte, orig-len(m.Fragment))...)
	ext := len(b)
	b = append(b, extVersion<<4, 0, 0, 0)
	m.payloads(func(t PayloadType, v []byte) {
		l := 4 + len(v)
		b = binary.BigEndian.AppendUint16(b, uint16(l))
		b = append(b, ClassNum, byte(t))
		b = append(b, v...)
	})
	binary.BigEndian.PutUint16(b[ext+2:], ipview.Checksum(b[ext:]))
	binary.BigEndian.PutUint16(b[start+2:], ipview.Checksum(b[start:]))
	return b
}

// ParseICMP decodes an ICMPv4 message (b starts at the ICMP header). It
// returns ErrNotProbe for a well-formed ICMP message that is not ours.
func ParseICMP(b []byte) (*Message, error) {
	if len(b) < icmpHeaderLen {
		return nil, malformed("short ICMP message")
	}
	if b[0] != icmpTypeParamProblem || b[1] != icmpCode {
		return nil, ErrNotProbe
	}
	if ipview.Checksum(b) != 0 {
		return nil, malformed("ICMP checksum")
	}
	orig := int(b[5]) * 4
	if orig < minOriginal {
		return nil, ErrNotProbe // no RFC 4884 extensions
	}
	if icmpHeaderLen+orig+4 > len(b) {
		return nil, malformed("original datagram of %d octets in %d", orig, len(b))
	}
	datagram := b[icmpHeaderLen : icmpHeaderLen+orig]
	ext := b[icmpHeaderLen+orig:]
	if ext[0]>>4 != extVersion {
		return nil, ErrNotProbe
	}
	if binary.BigEndian.Uint16(ext[2:]) != 0 && ipview.Checksum(ext) != 0 {
		return nil, malformed("extension checksum")
	}
	m := &Message{}
	seen := map[PayloadType]bool{}
	ours := false
	for objs := ext[4:]; len(objs) > 0; {
		if len(objs) < 4 {
			return nil, malformed("truncated extension object")
		}
		n := int(binary.BigEndian.Uint16(objs))
		if n < 4 || n > len(objs) {
			return nil, malformed("extension object length %d of %d", n, len(objs))
		}
		if objs[2] == ClassNum {
			ours = true
			if err := m.setPayload(PayloadType(objs[3]), objs[4:n], seen); err != nil {
				return nil, err
			}
		}
		objs = objs[n:]
	}
	if !ours {
		return nil, ErrNotProbe
	}
	if !seen[PayloadVersion] {
		return nil, malformed("no Version payload")
	}
	frag, err := fragmentOf(datagram)
	if err != nil {
		return nil, err
	}
	m.Fragment = frag
	return m, m.check()
}

// fragmentOf returns the IP header and 8 octets at the start of an
// original-datagram field, without its padding.
func fragmentOf(d []byte) ([]byte, error) {
	if len(d) == 0 {
		return nil, malformed("empty original datagram")
	}
	var n int
	switch ipview.Version(d) {
	case 4:
		n = ipview.IPv4(d).HeaderLength() + 8
		if n < ipview.IPv4MinimumSize+8 {
			return nil, malformed("original datagram IPv4 header length")
		}
	case 6:
		n = ipview.IPv6FixedSize + 8
	default:
		return nil, malformed("original datagram is not IP")
	}
	if n > len(d) {
		return nil, malformed("original datagram shorter than its header")
	}
	return bytes.Clone(d[:n]), nil
}

// Fragment returns the part of an IP packet that probe messages carry:
// its header and the 8 octets that follow, zero-padded if the packet is
// shorter (as the ICMP original-datagram field is).
func Fragment(pkt []byte) []byte {
	if len(pkt) == 0 {
		return nil
	}
	n := ipview.IPv6FixedSize + 8
	if ipview.Version(pkt) == 4 {
		n = ipview.IPv4(pkt).HeaderLength() + 8
	}
	f := make([]byte, n)
	copy(f, pkt)
	return f
}
