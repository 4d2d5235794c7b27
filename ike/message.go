package ike

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire layout of the IKE header (RFC 7296 §3.1) and the generic payload
// header (§3.2).
const (
	HeaderLen        = 28
	payloadHeaderLen = 4
	criticalBit      = 0x80

	// MaxMessageLen bounds what we parse or build: a UDP datagram.
	MaxMessageLen = 65535
)

// Errors returned by the decoder. Every one is wrapped with context.
var (
	ErrTruncated = errors.New("ike: truncated message")
	ErrMalformed = errors.New("ike: malformed message")
	ErrVersion   = errors.New("ike: unsupported major version")
	ErrCritical  = errors.New("ike: unsupported critical payload")
	ErrSKNotLast = errors.New("ike: SK payload is not the last payload")
	ErrNoSK      = errors.New("ike: message is not encrypted")
	ErrMissing   = errors.New("ike: required payload missing")
)

// CriticalError reports a payload with the critical bit set that oevpn does
// not implement; the answer is UNSUPPORTED_CRITICAL_PAYLOAD with its type
// (RFC 7296 §2.5). It wraps ErrCritical.
type CriticalError struct{ Type PayloadType }

func (e *CriticalError) Error() string { return fmt.Sprintf("%v %v", ErrCritical, e.Type) }
func (e *CriticalError) Unwrap() error { return ErrCritical }

// Header is the fixed IKE header.
type Header struct {
	SPIi, SPIr  uint64
	NextPayload PayloadType
	Version     uint8
	Exchange    ExchangeType
	Flags       uint8
	MessageID   uint32
	Length      uint32
}

// IsResponse reports whether the R flag is set.
func (h *Header) IsResponse() bool { return h.Flags&FlagResponse != 0 }

// IsInitiator reports whether the I flag is set (sent by the original
// initiator of the IKE SA).
func (h *Header) IsInitiator() bool { return h.Flags&FlagInitiator != 0 }

// ParseHeader reads the IKE header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, fmt.Errorf("%w: %d octets, header needs %d", ErrTruncated, len(b), HeaderLen)
	}
	h.SPIi = binary.BigEndian.Uint64(b[0:])
	h.SPIr = binary.BigEndian.Uint64(b[8:])
	h.NextPayload = PayloadType(b[16])
	h.Version = b[17]
	h.Exchange = ExchangeType(b[18])
	h.Flags = b[19]
	h.MessageID = binary.BigEndian.Uint32(b[20:])
	h.Length = binary.BigEndian.Uint32(b[24:])
	if h.Version>>4 != 2 {
		return h, fmt.Errorf("%w %d.%d", ErrVersion, h.Version>>4, h.Version&0xf)
	}
	if h.Length < HeaderLen || int(h.Length) > len(b) {
		return h, fmt.Errorf("%w: header says %d octets, have %d", ErrTruncated, h.Length, len(b))
	}
	if int(h.Length) < len(b) {
		return h, fmt.Errorf("%w: %d octets after the message", ErrMalformed, len(b)-int(h.Length))
	}
	return h, nil
}

func (h *Header) marshal(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, h.SPIi)
	b = binary.BigEndian.AppendUint64(b, h.SPIr)
	b = append(b, byte(h.NextPayload), Version, byte(h.Exchange), h.Flags)
	b = binary.BigEndian.AppendUint32(b, h.MessageID)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// Payload is one decoded payload.
type Payload interface {
	Type() PayloadType
	// marshal appends the payload's body (without the generic header).
	marshal(b []byte) ([]byte, error)
}

// rawPayload is a payload oevpn does not interpret (kept so that it can
// be skipped, or reported when critical).
type rawPayload struct {
	pt       PayloadType
	critical bool
	body     []byte
}

func (p *rawPayload) Type() PayloadType                { return p.pt }
func (p *rawPayload) marshal(b []byte) ([]byte, error) { return append(b, p.body...), nil }

// Message is an IKE message: the header and its payloads. For an encrypted
// message, Payloads are the ones inside SK once decrypted.
type Message struct {
	Header
	Payloads []Payload

	// sk is the raw SK (or SKF) payload of a received encrypted message:
	// its offset in the message and its next-payload field.
	skOff  int
	skNext PayloadType
	skType PayloadType
	raw    []byte
	// decrypted is set for a message reassembled from fragments.
	decrypted bool
	// firstSum, in a message reassembled from fragments, is the SHA-256
	// of the raw fragment 1, which identifies its retransmissions.
	firstSum [sha256.Size]byte
}

// sum returns the SHA-256 that identifies a received request's
// retransmissions: of the message, or of its first fragment.
func (m *Message) sum() [sha256.Size]byte {
	if m.decrypted && m.skType == PayloadSKF {
		return m.firstSum
	}
	return sha256.Sum256(m.raw)
}

// walk calls fn for each payload of the chain that starts with first in b.
func walk(first PayloadType, b []byte, fn func(pt PayloadType, critical bool, body []byte, off int) error) error {
	pt, off := first, 0
	for pt != PayloadNone {
		if len(b)-off < payloadHeaderLen {
			return fmt.Errorf("%w: payload %v header at %d", ErrTruncated, pt, off)
		}
		next := PayloadType(b[off])
		critical := b[off+1]&criticalBit != 0
		n := int(binary.BigEndian.Uint16(b[off+2:]))
		if n < payloadHeaderLen || n > len(b)-off {
			return fmt.Errorf("%w: payload %v length %d at %d (%d left)", ErrMalformed, pt, n, off, len(b)-off)
		}
		if err := fn(pt, critical, b[off+payloadHeaderLen:off+n], off); err != nil {
			return err
		}
		off += n
		if pt == PayloadSK || pt == PayloadSKF {
			if off != len(b) {
				return ErrSKNotLast
			}
			return nil
		}
		pt = next
	}
	if off != len(b) {
		return fmt.Errorf("%w: %d octets after the last payload", ErrMalformed, len(b)-off)
	}
	return nil
}

// Parse decodes a message. If it is encrypted, Payloads holds the cleartext
// payloads before SK, and Decrypt must be called with the IKE SA's keys.
func Parse(b []byte) (*Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	b = b[:h.Length]
	m := &Message{Header: h, raw: b, skOff: -1}
	err = walk(h.NextPayload, b[HeaderLen:], func(pt PayloadType, critical bool, body []byte, off int) error {
		if pt == PayloadSK || pt == PayloadSKF {
			m.skOff = HeaderLen + off
			m.skType = pt
			m.skNext = PayloadType(b[HeaderLen+off])
			return nil
		}
		p, err := decodePayload(pt, critical, body)
		if err != nil {
			return err
		}
		m.Payloads = append(m.Payloads, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Encrypted reports whether the message carries an SK or SKF payload.
func (m *Message) Encrypted() bool { return m.skOff >= 0 }

// Raw returns the message as received (for AUTH computations).
func (m *Message) Raw() []byte { return m.raw }

func decodePayload(pt PayloadType, critical bool, body []byte) (Payload, error) {
	var p interface {
		Payload
		unmarshal([]byte) error
	}
	switch pt {
	case PayloadSA:
		p = new(SAPayload)
	case PayloadKE:
		p = new(KEPayload)
	case PayloadIDi, PayloadIDr:
		p = &IDPayload{Initiator: pt == PayloadIDi}
	case PayloadCERT, PayloadCERTREQ:
		p = &CertPayload{Request: pt == PayloadCERTREQ}
	case PayloadAUTH:
		p = new(AuthPayload)
	case PayloadNonce:
		p = new(NoncePayload)
	case PayloadNotify:
		p = new(NotifyPayload)
	case PayloadDelete:
		p = new(DeletePayload)
	case PayloadVendor:
		p = new(VendorPayload)
	case PayloadTSi, PayloadTSr:
		p = &TSPayload{Initiator: pt == PayloadTSi}
	case PayloadAutoVPNNonce:
		p = new(AutoVPNNoncePayload)
	case PayloadContactDetails:
		p = new(ContactDetailsPayload)
	default:
		if critical {
			return nil, &CriticalError{Type: pt}
		}
		return &rawPayload{pt: pt, body: append([]byte(nil), body...)}, nil
	}
	if err := p.unmarshal(body); err != nil {
		return nil, fmt.Errorf("%v payload: %w", pt, err)
	}
	return p, nil
}

// marshalChain appends the payloads with their generic headers; the first
// payload's type is returned for the preceding next-payload field.
func marshalChain(b []byte, payloads []Payload) ([]byte, PayloadType, error) {
	first := PayloadNone
	if len(payloads) > 0 {
		first = payloads[0].Type()
	}
	for i, p := range payloads {
		next := PayloadNone
		if i+1 < len(payloads) {
			next = payloads[i+1].Type()
		}
		start := len(b)
		b = append(b, byte(next), 0, 0, 0)
		var err error
		if b, err = p.marshal(b); err != nil {
			return nil, 0, fmt.Errorf("%v payload: %w", p.Type(), err)
		}
		n := len(b) - start
		if n > 0xffff {
			return nil, 0, fmt.Errorf("%v payload: %w: %d octets", p.Type(), ErrMalformed, n)
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	}
	return b, first, nil
}

// Marshal encodes an unencrypted message (IKE_SA_INIT).
func (m *Message) Marshal() ([]byte, error) {
	b := make([]byte, HeaderLen, 512)
	b, first, err := marshalChain(b, m.Payloads)
	if err != nil {
		return nil, err
	}
	m.NextPayload = first
	m.Length = uint32(len(b))
	m.Header.marshal(b[:0])
	return b, nil
}

// Get returns the first payload of type T, or nil.
func Get[T Payload](m *Message) T {
	for _, p := range m.Payloads {
		if t, ok := p.(T); ok {
			return t
		}
	}
	var zero T
	return zero
}

// Notify returns the first notify of the given type, or nil.
func (m *Message) Notify(t NotifyType) *NotifyPayload {
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok && n.NotifyType == t {
			return n
		}
	}
	return nil
}

// ErrorNotify returns the first error notify in the message, or nil.
func (m *Message) ErrorNotify() *NotifyPayload {
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok && n.NotifyType.IsError() {
			return n
		}
	}
	return nil
}

// ID returns IDi or IDr.
func (m *Message) ID(initiator bool) *IDPayload {
	for _, p := range m.Payloads {
		if id, ok := p.(*IDPayload); ok && id.Initiator == initiator {
			return id
		}
	}
	return nil
}

// TS returns TSi or TSr.
func (m *Message) TS(initiator bool) *TSPayload {
	for _, p := range m.Payloads {
		if ts, ok := p.(*TSPayload); ok && ts.Initiator == initiator {
			return ts
		}
	}
	return nil
}
