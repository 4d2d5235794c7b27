package ike

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// IKE fragmentation (RFC 7383): encrypted messages larger than the path can
// carry are split into SKF payloads, each encrypted and authenticated on its
// own, and reassembled by the receiver.

// Implementation constants.
const (
	// DefaultFragmentSize is the largest IKE message we send unfragmented
	// when the peer supports fragmentation: what fits in an IPv6 minimum
	// MTU of 1280 with the IP and UDP headers and the non-ESP marker.
	DefaultFragmentSize = 1280 - 40 - 8 - 4
	minFragmentSize     = 128
	maxFragments        = 64
	maxReassembled      = 64 << 10
	fragmentTimeout     = 30 * time.Second
	skfExtraLen         = 4 // Fragment Number and Total Fragments
)

func (p *PeerConfig) fragmentSize() int {
	if p.FragmentSize >= minFragmentSize {
		return p.FragmentSize
	}
	return DefaultFragmentSize
}

// encryptFrags builds an encrypted message, as fragments when it would be
// too large and the peer supports fragmentation.
func (sa *ikeSA) encryptFrags(exch ExchangeType, msgID uint32, response bool, payloads []Payload) ([][]byte, error) {
	b, err := sa.encrypt(exch, msgID, response, payloads)
	if err != nil || !sa.fragOK || len(b) <= sa.peer.fragmentSize() {
		return [][]byte{b}, err
	}
	inner, first, err := marshalChain(nil, payloads)
	if err != nil {
		return nil, err
	}
	overhead := HeaderLen + payloadHeaderLen + skfExtraLen + sa.out.ivLen() + sa.out.icvLen + 1
	chunk := sa.peer.fragmentSize() - overhead
	if sa.out.aead == nil {
		chunk = chunk &^ 15 // whole blocks, the pad length octet included
		chunk--
	}
	if chunk < 16 {
		return nil, fmt.Errorf("%w: fragment size %d too small", ErrMalformed, sa.peer.fragmentSize())
	}
	total := (len(inner) + chunk - 1) / chunk
	if total > maxFragments {
		return nil, fmt.Errorf("%w: message needs %d fragments", ErrMalformed, total)
	}
	var out [][]byte
	for i := 0; i < total; i++ {
		part := inner[i*chunk : min((i+1)*chunk, len(inner))]
		next := PayloadNone
		if i == 0 {
			next = first
		}
		ptLen := len(part) + 1
		if sa.out.aead == nil {
			ptLen += (16 - ptLen%16) % 16
		}
		skLen := payloadHeaderLen + skfExtraLen + sa.out.ivLen() + ptLen + sa.out.icvLen
		h := Header{SPIi: sa.spiI, SPIr: sa.spiR, NextPayload: PayloadSKF, Exchange: exch, MessageID: msgID,
			Length: uint32(HeaderLen + skLen)}
		if sa.initiator {
			h.Flags |= FlagInitiator
		}
		if response {
			h.Flags |= FlagResponse
		}
		fb := h.marshal(make([]byte, 0, h.Length))
		fb = append(fb, byte(next), 0)
		fb = binary.BigEndian.AppendUint16(fb, uint16(skLen))
		fb = binary.BigEndian.AppendUint16(fb, uint16(i+1))
		fb = binary.BigEndian.AppendUint16(fb, uint16(total))
		if fb, err = sa.out.seal(fb, part); err != nil {
			return nil, err
		}
		out = append(out, fb)
	}
	return out, nil
}

// reassembly collects the fragments of one message.
type reassembly struct {
	id      uint32
	resp    bool
	total   int
	first   PayloadType
	parts   [][]byte
	have    int
	size    int
	started time.Time
	// firstSum is the SHA-256 of the raw fragment 1 (Message.firstSum).
	firstSum [sha256.Size]byte
}

// reassemble verifies and stores one SKF fragment. When the message is
// complete it returns it, with the inner payloads decoded; otherwise nil.
func (sa *ikeSA) reassemble(m *Message) (*Message, error) {
	raw := m.raw
	body := m.skOff + payloadHeaderLen
	if len(raw) < body+skfExtraLen {
		return nil, fmt.Errorf("%w: SKF payload", ErrTruncated)
	}
	num := int(binary.BigEndian.Uint16(raw[body:]))
	total := int(binary.BigEndian.Uint16(raw[body+2:]))
	if num < 1 || num > total || total > maxFragments {
		return nil, fmt.Errorf("%w: fragment %d of %d", ErrMalformed, num, total)
	}
	pt, err := sa.in.open(raw, body+skfExtraLen)
	if err != nil {
		return nil, err
	}
	r := sa.frags
	if r == nil || r.id != m.MessageID || r.resp != m.IsResponse() || time.Since(r.started) > fragmentTimeout {
		r = &reassembly{id: m.MessageID, resp: m.IsResponse(), total: total, parts: make([][]byte, total), started: time.Now()}
		sa.frags = r
	}
	if total != r.total {
		// RFC 7383 §2.6.2: a different total means the sender refragmented.
		if total < r.total {
			return nil, nil
		}
		*r = reassembly{id: m.MessageID, resp: m.IsResponse(), total: total, parts: make([][]byte, total), started: time.Now()}
	}
	if r.parts[num-1] != nil {
		return nil, nil // duplicate
	}
	limit := maxReassembled
	if sa.halfKey != nil {
		limit = MaxHalfOpenReassembly // IKE_AUTH of a peer that proved nothing yet
	}
	if r.size+len(pt) > limit {
		sa.frags = nil
		return nil, fmt.Errorf("%w: reassembled message over %d octets", ErrMalformed, limit)
	}
	if num == 1 {
		r.first = m.skNext
		r.firstSum = sha256.Sum256(raw)
	}
	r.parts[num-1] = pt
	r.have++
	r.size += len(pt)
	if r.have < r.total {
		return nil, nil
	}
	sa.frags = nil
	inner := make([]byte, 0, r.size)
	for _, p := range r.parts {
		inner = append(inner, p...)
	}
	full := &Message{Header: m.Header, Payloads: m.Payloads, skOff: m.skOff, skType: PayloadSKF, raw: m.raw}
	err = walk(r.first, inner, func(pt PayloadType, critical bool, body []byte, _ int) error {
		if pt == PayloadSK || pt == PayloadSKF {
			return fmt.Errorf("%w: nested SK payload", ErrMalformed)
		}
		p, err := decodePayload(pt, critical, body)
		if err != nil {
			return err
		}
		full.Payloads = append(full.Payloads, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	full.decrypted = true
	full.firstSum = r.firstSum
	return full, nil
}
