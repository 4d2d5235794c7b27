package esp

import (
	"encoding/binary"
	"errors"
)

// Wire layout of the ESP header (RFC 4303 §2).
const (
	spiOffset = 0
	seqOffset = 4
	headerLen = 8

	// MinSPI is the lowest SPI an SA may use: 1–255 are reserved by IANA
	// (RFC 4303 §2.1) and 0 is never sent.
	MinSPI = 256
)

// Header is a view of an ESP header at the start of a packet.
type Header []byte

// SPI returns the Security Parameters Index (RFC 4303 §2.1).
func (h Header) SPI() uint32 { return binary.BigEndian.Uint32(h[spiOffset:]) }

// Seq returns the low 32 bits of the sequence number (RFC 4303 §2.2).
func (h Header) Seq() uint32 { return binary.BigEndian.Uint32(h[seqOffset:]) }

// IsValid reports whether h is long enough to hold an ESP header.
func (h Header) IsValid() bool { return len(h) >= headerLen }

// Encode writes spi and the low 32 bits of seq.
func (h Header) Encode(spi, seq uint32) {
	binary.BigEndian.PutUint32(h[spiOffset:], spi)
	binary.BigEndian.PutUint32(h[seqOffset:], seq)
}

// Kind is what a datagram received on the NAT-T port (4500) carries.
type Kind uint8

// The kinds of datagram on UDP/4500 (RFC 3948 §2).
const (
	KindESP       Kind = iota + 1 // an ESP packet, found by SPI
	KindIKE                       // an IKE message behind the 4-octet non-ESP marker
	KindKeepalive                 // a NAT-keepalive (one octet 0xFF), to be dropped
)

var kindNames = [...]string{KindESP: "esp", KindIKE: "ike", KindKeepalive: "keepalive"}

// String names the kind.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// NonESPMarkerLen is the length of the non-ESP marker (four zero octets)
// that precedes IKE messages on port 4500 (RFC 3948 §2.2).
const NonESPMarkerLen = 4

// Errors returned by Classify.
var (
	ErrShortDatagram = errors.New("esp: datagram too short")
	ErrReservedSPI   = errors.New("esp: reserved SPI")
)

// Classify tells what a UDP/4500 payload carries (RFC 3948 §2): an IKE
// message behind the non-ESP marker, a NAT-keepalive, or ESP. It checks only
// the framing; an ESP packet is then looked up by SPI. The payload of an IKE
// datagram starts at b[NonESPMarkerLen:]. A datagram whose first four
// octets are an SPI from the reserved range 1–255 is ErrReservedSPI: it is
// not ESP, and a caller that frames its own messages there (AutoVPN probes,
// see package probe) recognises them itself.
func Classify(b []byte) (Kind, error) {
	switch {
	case len(b) == 1 && b[0] == 0xFF:
		return KindKeepalive, nil
	case len(b) < headerLen:
		return 0, ErrShortDatagram
	}
	spi := Header(b).SPI()
	switch {
	case spi == 0:
		return KindIKE, nil
	case spi >= MinSPI:
		return KindESP, nil
	}
	return 0, ErrReservedSPI
}
