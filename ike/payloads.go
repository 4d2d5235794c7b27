package ike

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"net/netip"
	"unicode/utf8"
)

// Transform is one transform of a proposal (§3.3.2), with its key length
// attribute (0 when absent).
type Transform struct {
	Type   TransformType
	ID     uint16
	KeyLen uint16
}

// Proposal is one proposal of an SA payload (§3.3.1).
type Proposal struct {
	Num        uint8
	Protocol   ProtocolID
	SPI        []byte
	Transforms []Transform
}

// SAPayload is the Security Association payload (§3.3).
type SAPayload struct{ Proposals []Proposal }

// Type implements Payload.
func (*SAPayload) Type() PayloadType { return PayloadSA }

func (p *SAPayload) marshal(b []byte) ([]byte, error) {
	for i, prop := range p.Proposals {
		start := len(b)
		last := byte(2)
		if i == len(p.Proposals)-1 {
			last = 0
		}
		if len(prop.SPI) > 255 || len(prop.Transforms) > 255 {
			return nil, fmt.Errorf("%w: proposal too large", ErrMalformed)
		}
		b = append(b, last, 0, 0, 0, prop.Num, byte(prop.Protocol), byte(len(prop.SPI)), byte(len(prop.Transforms)))
		b = append(b, prop.SPI...)
		for j, t := range prop.Transforms {
			lastT := byte(3)
			if j == len(prop.Transforms)-1 {
				lastT = 0
			}
			n := 8
			if t.KeyLen != 0 {
				n += 4
			}
			b = append(b, lastT, 0)
			b = binary.BigEndian.AppendUint16(b, uint16(n))
			b = append(b, byte(t.Type), 0)
			b = binary.BigEndian.AppendUint16(b, t.ID)
			if t.KeyLen != 0 {
				b = binary.BigEndian.AppendUint16(b, 0x8000|attrKeyLength)
				b = binary.BigEndian.AppendUint16(b, t.KeyLen)
			}
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b, nil
}

func (p *SAPayload) unmarshal(b []byte) error {
	for len(b) > 0 {
		if len(b) < 8 {
			return fmt.Errorf("%w: proposal header", ErrTruncated)
		}
		last := b[0]
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < 8 || n > len(b) || (last != 0 && last != 2) {
			return fmt.Errorf("%w: proposal length %d", ErrMalformed, n)
		}
		body := b[:n]
		prop := Proposal{Num: body[4], Protocol: ProtocolID(body[5])}
		spiLen, nt := int(body[6]), int(body[7])
		if 8+spiLen > n {
			return fmt.Errorf("%w: SPI size %d", ErrMalformed, spiLen)
		}
		prop.SPI = append([]byte(nil), body[8:8+spiLen]...)
		tb := body[8+spiLen:]
		for i := 0; i < nt; i++ {
			if len(tb) < 8 {
				return fmt.Errorf("%w: transform", ErrTruncated)
			}
			tl := int(binary.BigEndian.Uint16(tb[2:]))
			if tl < 8 || tl > len(tb) || (tb[0] != 0 && tb[0] != 3) || (i == nt-1) != (tb[0] == 0) {
				return fmt.Errorf("%w: transform length %d", ErrMalformed, tl)
			}
			t := Transform{Type: TransformType(tb[4]), ID: binary.BigEndian.Uint16(tb[6:])}
			for ab := tb[8:tl]; len(ab) > 0; {
				if len(ab) < 4 {
					return fmt.Errorf("%w: transform attribute", ErrTruncated)
				}
				at := binary.BigEndian.Uint16(ab)
				if at&0x8000 != 0 { // TV
					if at&0x7fff == attrKeyLength {
						t.KeyLen = binary.BigEndian.Uint16(ab[2:])
					}
					ab = ab[4:]
					continue
				}
				al := int(binary.BigEndian.Uint16(ab[2:])) // TLV: skip
				if 4+al > len(ab) {
					return fmt.Errorf("%w: transform attribute", ErrTruncated)
				}
				ab = ab[4+al:]
			}
			prop.Transforms = append(prop.Transforms, t)
			tb = tb[tl:]
		}
		if len(tb) != 0 {
			return fmt.Errorf("%w: %d octets after the transforms", ErrMalformed, len(tb))
		}
		p.Proposals = append(p.Proposals, prop)
		b = b[n:]
		if last == 0 && len(b) != 0 {
			return fmt.Errorf("%w: octets after the last proposal", ErrMalformed)
		}
		if last == 2 && len(b) == 0 {
			return fmt.Errorf("%w: proposal list ends early", ErrTruncated)
		}
	}
	if len(p.Proposals) == 0 {
		return fmt.Errorf("%w: no proposal", ErrMalformed)
	}
	return nil
}

// KEPayload is the Key Exchange payload (§3.4).
type KEPayload struct {
	Group uint16
	Data  []byte
}

// Type implements Payload.
func (*KEPayload) Type() PayloadType { return PayloadKE }

func (p *KEPayload) marshal(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, p.Group)
	return append(append(b, 0, 0), p.Data...), nil
}

func (p *KEPayload) unmarshal(b []byte) error {
	if len(b) < 4 {
		return ErrTruncated
	}
	p.Group = binary.BigEndian.Uint16(b)
	p.Data = append([]byte(nil), b[4:]...)
	return nil
}

// IDPayload is IDi or IDr (§3.5).
type IDPayload struct {
	Initiator bool
	IDType    IDType
	Data      []byte
}

// Type implements Payload.
func (p *IDPayload) Type() PayloadType {
	if p.Initiator {
		return PayloadIDi
	}
	return PayloadIDr
}

func (p *IDPayload) marshal(b []byte) ([]byte, error) {
	return append(append(b, byte(p.IDType), 0, 0, 0), p.Data...), nil
}

func (p *IDPayload) unmarshal(b []byte) error {
	if len(b) < 4 {
		return ErrTruncated
	}
	p.IDType = IDType(b[0])
	p.Data = append([]byte(nil), b[4:]...)
	return nil
}

// body returns RestOfIDPayload (§2.15): the payload without its generic header.
func (p *IDPayload) body() []byte {
	b, _ := p.marshal(nil)
	return b
}

// String formats the identity for logs and status.
func (p *IDPayload) String() string {
	switch p.IDType {
	case IDIPv4, IDIPv6:
		if a, ok := netip.AddrFromSlice(p.Data); ok {
			return a.String()
		}
	case IDFQDN, IDRFC822:
		return string(p.Data)
	case IDNull:
		return "(null)"
	case IDDERASN1D:
		var rdn pkix.RDNSequence
		if rest, err := asn1.Unmarshal(p.Data, &rdn); err == nil && len(rest) == 0 {
			var n pkix.Name
			n.FillFromRDNSequence(&rdn)
			return n.String()
		}
	}
	return fmt.Sprintf("id-type-%d:%x", p.IDType, p.Data)
}

// CertPayload is CERT or CERTREQ (§3.6, §3.7).
type CertPayload struct {
	Request  bool
	Encoding uint8
	Data     []byte
}

// Type implements Payload.
func (p *CertPayload) Type() PayloadType {
	if p.Request {
		return PayloadCERTREQ
	}
	return PayloadCERT
}

func (p *CertPayload) marshal(b []byte) ([]byte, error) {
	return append(append(b, p.Encoding), p.Data...), nil
}

func (p *CertPayload) unmarshal(b []byte) error {
	if len(b) < 1 {
		return ErrTruncated
	}
	p.Encoding = b[0]
	p.Data = append([]byte(nil), b[1:]...)
	return nil
}

// AuthPayload is the Authentication payload (§3.8).
type AuthPayload struct {
	Method AuthMethod
	Data   []byte
}

// Type implements Payload.
func (*AuthPayload) Type() PayloadType { return PayloadAUTH }

func (p *AuthPayload) marshal(b []byte) ([]byte, error) {
	return append(append(b, byte(p.Method), 0, 0, 0), p.Data...), nil
}

func (p *AuthPayload) unmarshal(b []byte) error {
	if len(b) < 4 {
		return ErrTruncated
	}
	p.Method = AuthMethod(b[0])
	p.Data = append([]byte(nil), b[4:]...)
	return nil
}

// NoncePayload is the Nonce payload (§3.9): 16 to 256 octets.
type NoncePayload struct{ Data []byte }

// Type implements Payload.
func (*NoncePayload) Type() PayloadType { return PayloadNonce }

func (p *NoncePayload) marshal(b []byte) ([]byte, error) { return append(b, p.Data...), nil }

func (p *NoncePayload) unmarshal(b []byte) error {
	if len(b) < 16 || len(b) > 256 {
		return fmt.Errorf("%w: nonce of %d octets", ErrMalformed, len(b))
	}
	p.Data = append([]byte(nil), b...)
	return nil
}

// NotifyPayload is the Notify payload (§3.10).
type NotifyPayload struct {
	Protocol   ProtocolID
	SPI        []byte
	NotifyType NotifyType
	Data       []byte
}

// Type implements Payload.
func (*NotifyPayload) Type() PayloadType { return PayloadNotify }

// Error makes a notify an error, for the steps of an exchange that refuse
// with one: the caller sends it.
func (p *NotifyPayload) Error() string { return p.NotifyType.Error() }

func (p *NotifyPayload) marshal(b []byte) ([]byte, error) {
	if len(p.SPI) > 255 {
		return nil, ErrMalformed
	}
	b = append(b, byte(p.Protocol), byte(len(p.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(p.NotifyType))
	return append(append(b, p.SPI...), p.Data...), nil
}

func (p *NotifyPayload) unmarshal(b []byte) error {
	if len(b) < 4 || len(b) < 4+int(b[1]) {
		return ErrTruncated
	}
	p.Protocol = ProtocolID(b[0])
	p.NotifyType = NotifyType(binary.BigEndian.Uint16(b[2:]))
	p.SPI = append([]byte(nil), b[4:4+int(b[1])]...)
	p.Data = append([]byte(nil), b[4+int(b[1]):]...)
	return nil
}

// DeletePayload is the Delete payload (§3.11).
type DeletePayload struct {
	Protocol ProtocolID
	SPIs     [][]byte // empty for the IKE SA
}

// Type implements Payload.
func (*DeletePayload) Type() PayloadType { return PayloadDelete }

func (p *DeletePayload) marshal(b []byte) ([]byte, error) {
	size := 0
	if len(p.SPIs) > 0 {
		size = len(p.SPIs[0])
	}
	b = append(b, byte(p.Protocol), byte(size))
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.SPIs)))
	for _, s := range p.SPIs {
		if len(s) != size {
			return nil, fmt.Errorf("%w: SPIs of different sizes", ErrMalformed)
		}
		b = append(b, s...)
	}
	return b, nil
}

func (p *DeletePayload) unmarshal(b []byte) error {
	if len(b) < 4 {
		return ErrTruncated
	}
	p.Protocol = ProtocolID(b[0])
	size, n := int(b[1]), int(binary.BigEndian.Uint16(b[2:]))
	if len(b) != 4+size*n {
		return fmt.Errorf("%w: %d SPIs of %d octets in %d", ErrMalformed, n, size, len(b)-4)
	}
	for i := 0; i < n && size > 0; i++ {
		p.SPIs = append(p.SPIs, append([]byte(nil), b[4+i*size:4+(i+1)*size]...))
	}
	return nil
}

// VendorPayload is a Vendor ID payload (§3.12).
type VendorPayload struct{ Data []byte }

// Type implements Payload.
func (*VendorPayload) Type() PayloadType { return PayloadVendor }

func (p *VendorPayload) marshal(b []byte) ([]byte, error) { return append(b, p.Data...), nil }

func (p *VendorPayload) unmarshal(b []byte) error {
	p.Data = append([]byte(nil), b...)
	return nil
}

// AutoVPNNoncePayload carries the Nonce-R of a completed AutoVPN probe in
// the first IKE_SA_INIT message (draft-sheffer-autovpn §8.1.1).
type AutoVPNNoncePayload struct{ Nonce []byte }

// Type implements Payload.
func (*AutoVPNNoncePayload) Type() PayloadType { return PayloadAutoVPNNonce }

func (p *AutoVPNNoncePayload) marshal(b []byte) ([]byte, error) { return append(b, p.Nonce...), nil }

func (p *AutoVPNNoncePayload) unmarshal(b []byte) error {
	if len(b) < 8 || len(b) > 64 {
		return fmt.Errorf("%w: AutoVPN nonce of %d octets", ErrMalformed, len(b))
	}
	p.Nonce = append([]byte(nil), b...)
	return nil
}

// ContactDetailsPayload is the human-readable UTF-8 text a gateway sends
// in IKE_AUTH to help the other side's administrator verify it (§8.1.2).
// It is shown as plain text only.
type ContactDetailsPayload struct{ Text string }

// Type implements Payload.
func (*ContactDetailsPayload) Type() PayloadType { return PayloadContactDetails }

func (p *ContactDetailsPayload) marshal(b []byte) ([]byte, error) { return append(b, p.Text...), nil }

func (p *ContactDetailsPayload) unmarshal(b []byte) error {
	if len(b) > maxContactDetails || !utf8.Valid(b) {
		return fmt.Errorf("%w: Contact Details of %d octets, or not UTF-8", ErrMalformed, len(b))
	}
	p.Text = string(b)
	return nil
}

// TrafficSelector is one traffic selector on the wire (§3.13.1).
type TrafficSelector struct {
	Protocol           uint8
	StartPort, EndPort uint16
	Start, End         netip.Addr
}

// TSPayload is TSi or TSr (§3.13).
type TSPayload struct {
	Initiator bool
	Selectors []TrafficSelector
}

// Type implements Payload.
func (p *TSPayload) Type() PayloadType {
	if p.Initiator {
		return PayloadTSi
	}
	return PayloadTSr
}

func (p *TSPayload) marshal(b []byte) ([]byte, error) {
	if len(p.Selectors) > 255 {
		return nil, ErrMalformed
	}
	b = append(b, byte(len(p.Selectors)), 0, 0, 0)
	for _, ts := range p.Selectors {
		if !ts.Start.IsValid() || ts.Start.Is4() != ts.End.Is4() {
			return nil, fmt.Errorf("%w: traffic selector %v-%v", ErrMalformed, ts.Start, ts.End)
		}
		typ, n := byte(TSIPv4Range), 16
		if ts.Start.Is6() {
			typ, n = TSIPv6Range, 40
		}
		b = append(b, typ, ts.Protocol)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		b = binary.BigEndian.AppendUint16(b, ts.StartPort)
		b = binary.BigEndian.AppendUint16(b, ts.EndPort)
		b = append(b, ts.Start.AsSlice()...)
		b = append(b, ts.End.AsSlice()...)
	}
	return b, nil
}

func (p *TSPayload) unmarshal(b []byte) error {
	if len(b) < 4 {
		return ErrTruncated
	}
	n := int(b[0])
	b = b[4:]
	for i := 0; i < n; i++ {
		if len(b) < 8 {
			return fmt.Errorf("%w: traffic selector", ErrTruncated)
		}
		typ, l := b[0], int(binary.BigEndian.Uint16(b[2:]))
		alen := 0
		switch {
		case typ == TSIPv4Range && l == 16:
			alen = 4
		case typ == TSIPv6Range && l == 40:
			alen = 16
		default:
			return fmt.Errorf("%w: traffic selector type %d length %d", ErrMalformed, typ, l)
		}
		if len(b) < l {
			return fmt.Errorf("%w: traffic selector", ErrTruncated)
		}
		ts := TrafficSelector{Protocol: b[1], StartPort: binary.BigEndian.Uint16(b[4:]), EndPort: binary.BigEndian.Uint16(b[6:])}
		ts.Start, _ = netip.AddrFromSlice(b[8 : 8+alen])
		ts.End, _ = netip.AddrFromSlice(b[8+alen : 8+2*alen])
		p.Selectors = append(p.Selectors, ts)
		b = b[l:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: octets after the traffic selectors", ErrMalformed)
	}
	if n == 0 {
		return fmt.Errorf("%w: no traffic selector", ErrMalformed)
	}
	return nil
}

// maxContactDetails bounds the Contact Details text.
const maxContactDetails = 1024
