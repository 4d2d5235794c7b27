// Package probe implements the AutoVPN probe handshake
// (draft-sheffer-autovpn-00 §4–§6): the Probe Request, Probe Response and
// Probe Complete messages in their ICMP and UDP encodings, stateless
// nonces with key rollover, and the bookkeeping of both gateway roles.
//
// IPv6: RFC 4884 gives ICMPv6 Parameter Problem no length field, so over
// IPv6 all three messages travel over UDP to port 4500 behind the preamble,
// and the triggering packet's fragment, which ICMP carries as the original
// datagram, goes in a private-use Fragment payload (type 128).
package probe

// Wire constants (docs/ARCHITECTURE.md, "Wire constants"): the values the
// draft leaves to IANA, from private-use ranges.
const (
	// ClassNum is the ICMP extension object Class-Num of AutoVPN payloads
	// (RFC 4884 §7); the C-Type is the payload type.
	ClassNum = 250
	// PreambleLen is the length of the UDP preamble.
	PreambleLen = len(Preamble)
)

// Preamble starts every probe message carried over UDP/4500: an SPI from
// the range 1–255 that RFC 4303 §2.1 reserves (so never ESP, and never the
// non-ESP marker of IKE) followed by ASCII "AUTOVPNPROBE".
var Preamble = [16]byte{0, 0, 0, 0xA5, 'A', 'U', 'T', 'O', 'V', 'P', 'N', 'P', 'R', 'O', 'B', 'E'}

// HasPreamble reports whether the UDP payload b starts with the preamble:
// whether it is a probe message on port 4500 rather than ESP or IKE.
func HasPreamble(b []byte) bool {
	return len(b) >= PreambleLen && [PreambleLen]byte(b[:PreambleLen]) == Preamble
}

// PayloadType is an AutoVPN payload type (draft §5.3).
type PayloadType uint8

// Payload types. 128–255 are private use; oevpn uses 128 for the packet
// fragment of messages carried over UDP (IPv6).
const (
	PayloadVersion   PayloadType = 1
	PayloadNonceI    PayloadType = 2
	PayloadNonceR    PayloadType = 3
	PayloadNATDetect PayloadType = 4
	PayloadFragment  PayloadType = 128
)

// MsgType is the message type in the Version payload (draft §5.4).
type MsgType uint8

// Message types.
const (
	Request  MsgType = 1
	Response MsgType = 2
	Complete MsgType = 3
)

var msgNames = [...]string{Request: "probe-request", Response: "probe-response", Complete: "probe-complete"}

func (t MsgType) String() string {
	if int(t) < len(msgNames) && msgNames[t] != "" {
		return msgNames[t]
	}
	return "unknown"
}

// Limits of the protocol.
const (
	// Version is the protocol version this package speaks.
	Version = 1
	// MinNonce and MaxNonce bound a nonce's length (draft §5.5).
	MinNonce, MaxNonce = 8, 64
	// natDetectLen is the NAT-Detect value: IPv4 address XOR 0x0F0F0F0F
	// and port (draft §5.6).
	natDetectLen = 6
	natMask      = 0x0F0F0F0F
	// icmpParamProblem and icmpCodePointer... are the ICMP fields of the
	// ICMP encoding (draft §5.1).
	icmpTypeParamProblem = 12
	icmpCode             = 1
	icmpHeaderLen        = 8
	// minOriginal is the least length of the original datagram field
	// when extensions follow (RFC 4884 §4.1).
	minOriginal = 128
	// extVersion is the ICMP extension structure version (RFC 4884 §7).
	extVersion = 2
)
