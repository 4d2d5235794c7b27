package ike

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// unhex decodes a hex string that may contain white space, as the RFC
// vectors are printed, and "#" comments up to the end of a line.
func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	var sb strings.Builder
	for _, line := range strings.Split(s, "\n") {
		line, _, _ = strings.Cut(line, "#")
		sb.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		tb.Fatalf("bad hex in vector: %v", err)
	}
	return b
}

// seq returns n octets counting up from start: recognisable test data.
func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

type messageCase struct {
	name     string
	exchange ExchangeType
	flags    uint8
	payloads []Payload
}

// testMessages returns one message per payload type, plus a few mixed
// ones. Slices that a decoder leaves nil when empty are nil here, so that
// the parsed message compares equal with reflect.DeepEqual.
func testMessages() []messageCase {
	addr := netip.MustParseAddr
	return []messageCase{
		{"empty", INFORMATIONAL, FlagInitiator, nil},
		{"SA one proposal", IKE_SA_INIT, FlagInitiator, []Payload{&SAPayload{Proposals: []Proposal{
			{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{
				{TransformENCR, ENCR_AES_GCM_16, 256}, {TransformPRF, PRF_HMAC_SHA2_256, 0}, {TransformDH, DH_CURVE25519, 0}}},
		}}}},
		{"SA several proposals", IKE_SA_INIT, FlagInitiator, []Payload{&SAPayload{Proposals: []Proposal{
			{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{
				{TransformENCR, ENCR_AES_GCM_16, 256}, {TransformENCR, ENCR_AES_GCM_16, 128},
				{TransformENCR, ENCR_CHACHA20_POLY1305, 0},
				{TransformPRF, PRF_HMAC_SHA2_256, 0}, {TransformPRF, PRF_HMAC_SHA2_512, 0},
				{TransformDH, DH_CURVE25519, 0}, {TransformDH, DH_ECP_256, 0}, {TransformDH, DH_MODP_2048, 0}}},
			{Num: 2, Protocol: ProtoIKE, Transforms: []Transform{
				{TransformENCR, ENCR_AES_CBC, 128}, {TransformENCR, ENCR_AES_CBC, 256},
				{TransformINTEG, AUTH_HMAC_SHA2_256_128, 0}, {TransformINTEG, AUTH_HMAC_SHA2_512_256, 0},
				{TransformPRF, PRF_HMAC_SHA2_384, 0}, {TransformDH, DH_MODP_2048, 0}}},
			{Num: 3, Protocol: ProtoIKE, Transforms: []Transform{{TransformENCR, ENCR_AES_GCM_16, 128}}},
		}}}},
		{"SA ESP with SPI", IKE_AUTH, FlagInitiator, []Payload{&SAPayload{Proposals: []Proposal{
			{Num: 1, Protocol: ProtoESP, SPI: []byte{0xc0, 0xff, 0xee, 0x01}, Transforms: []Transform{
				{TransformENCR, ENCR_AES_GCM_16, 256}, {TransformESN, ESN_YES, 0}, {TransformESN, ESN_NO, 0}}},
			{Num: 2, Protocol: ProtoESP, SPI: []byte{0xc0, 0xff, 0xee, 0x01}, Transforms: []Transform{
				{TransformENCR, ENCR_AES_CBC, 256}, {TransformINTEG, AUTH_HMAC_SHA2_256_128, 0},
				{TransformDH, DH_NONE, 0}, {TransformESN, ESN_NO, 0}}},
		}}}},
		{"SA rekey IKE SPI", CREATE_CHILD_SA, FlagInitiator, []Payload{&SAPayload{Proposals: []Proposal{
			{Num: 1, Protocol: ProtoIKE, SPI: seq(1, 8), Transforms: []Transform{{TransformENCR, ENCR_CHACHA20_POLY1305, 0}}},
		}}}},
		{"KE x25519", IKE_SA_INIT, FlagInitiator, []Payload{&KEPayload{Group: DH_CURVE25519, Data: seq(0x20, 32)}}},
		{"KE modp2048", IKE_SA_INIT, FlagResponse, []Payload{&KEPayload{Group: DH_MODP_2048, Data: seq(0x80, 256)}}},
		{"KE empty", IKE_SA_INIT, FlagInitiator, []Payload{&KEPayload{Group: DH_ECP_256}}},
		{"IDi IPv4", IKE_AUTH, FlagInitiator, []Payload{&IDPayload{Initiator: true, IDType: IDIPv4, Data: []byte{192, 0, 2, 1}}}},
		{"IDr FQDN", IKE_AUTH, FlagResponse, []Payload{&IDPayload{IDType: IDFQDN, Data: []byte("vpn.example.org")}}},
		{"IDi null", IKE_AUTH, FlagInitiator, []Payload{&IDPayload{Initiator: true, IDType: IDNull}}},
		{"IDi and IDr", IKE_AUTH, FlagInitiator, []Payload{
			&IDPayload{Initiator: true, IDType: IDRFC822, Data: []byte("alice@example.org")},
			&IDPayload{IDType: IDIPv6, Data: netip.MustParseAddr("2001:db8::1").AsSlice()}}},
		{"CERT", IKE_AUTH, FlagResponse, []Payload{&CertPayload{Encoding: CertRawPublicKey, Data: seq(0x30, 44)}}},
		{"CERTREQ", IKE_SA_INIT, FlagResponse, []Payload{&CertPayload{Request: true, Encoding: CertX509Signature, Data: seq(0, 40)}}},
		{"CERTREQ empty", IKE_SA_INIT, FlagResponse, []Payload{&CertPayload{Request: true, Encoding: CertX509Signature}}},
		{"AUTH PSK", IKE_AUTH, FlagInitiator, []Payload{&AuthPayload{Method: AuthPSK, Data: seq(0xa0, 32)}}},
		{"AUTH signature", IKE_AUTH, FlagResponse, []Payload{&AuthPayload{Method: AuthDigitalSign,
			Data: append(append([]byte{byte(len(algEd25519))}, algEd25519...), seq(9, 64)...)}}},
		{"Nonce min", IKE_SA_INIT, FlagInitiator, []Payload{&NoncePayload{Data: seq(1, 16)}}},
		{"Nonce max", IKE_SA_INIT, FlagInitiator, []Payload{&NoncePayload{Data: seq(1, 256)}}},
		{"Notify without SPI", IKE_SA_INIT, FlagResponse, []Payload{&NotifyPayload{NotifyType: NAT_DETECTION_SOURCE_IP, Data: seq(0x10, 20)}}},
		{"Notify without data", IKE_SA_INIT, FlagResponse, []Payload{&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}}},
		{"Notify with SPI", CREATE_CHILD_SA, FlagInitiator, []Payload{&NotifyPayload{Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4}, NotifyType: REKEY_SA}}},
		{"Notify with SPI and data", INFORMATIONAL, 0, []Payload{&NotifyPayload{Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4},
			NotifyType: INVALID_SELECTORS, Data: seq(0x45, 40)}}},
		{"Notify private use", IKE_AUTH, FlagInitiator, []Payload{&NotifyPayload{NotifyType: AUTOVPN_SHARED_SECRET, Data: seq(7, 3)}}},
		{"Delete IKE", INFORMATIONAL, FlagInitiator, []Payload{&DeletePayload{Protocol: ProtoIKE}}},
		{"Delete one ESP SPI", INFORMATIONAL, FlagInitiator, []Payload{&DeletePayload{Protocol: ProtoESP, SPIs: [][]byte{{0xc0, 0, 0, 1}}}}},
		{"Delete ESP SPIs", INFORMATIONAL, FlagResponse, []Payload{&DeletePayload{Protocol: ProtoESP,
			SPIs: [][]byte{{0xc0, 0, 0, 1}, {0xc0, 0, 0, 2}, {0xc0, 0, 0, 3}}}}},
		{"Vendor", IKE_SA_INIT, FlagInitiator, []Payload{&VendorPayload{Data: []byte("oevpn test vendor id")}}},
		{"Vendor empty", IKE_SA_INIT, FlagInitiator, []Payload{&VendorPayload{}}},
		{"AutoVPN Nonce", IKE_SA_INIT, FlagInitiator, []Payload{&AutoVPNNoncePayload{Nonce: seq(9, 17)}}},
		{"Contact Details", IKE_AUTH, FlagInitiator, []Payload{&ContactDetailsPayload{Text: "Operated by Example Inc. — call 555-1212"}}},
		{"TSi IPv4", IKE_AUTH, FlagInitiator, []Payload{&TSPayload{Initiator: true, Selectors: []TrafficSelector{
			{Protocol: 0, StartPort: 0, EndPort: 65535, Start: addr("10.0.0.0"), End: addr("10.0.0.255")}}}}},
		{"TSr IPv6", IKE_AUTH, FlagResponse, []Payload{&TSPayload{Selectors: []TrafficSelector{
			{Protocol: 6, StartPort: 443, EndPort: 443, Start: addr("2001:db8::"), End: addr("2001:db8::ffff:ffff")}}}}},
		{"TSi mixed families", IKE_AUTH, FlagInitiator, []Payload{&TSPayload{Initiator: true, Selectors: []TrafficSelector{
			{Protocol: 17, StartPort: 500, EndPort: 4500, Start: addr("192.0.2.1"), End: addr("192.0.2.1")},
			{EndPort: 65535, Start: addr("::"), End: addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")},
			{EndPort: 65535, Start: addr("0.0.0.0"), End: addr("255.255.255.255")}}}}},
		{"IKE_SA_INIT request", IKE_SA_INIT, FlagInitiator, []Payload{
			&SAPayload{Proposals: []Proposal{{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{
				{TransformENCR, ENCR_AES_GCM_16, 256}, {TransformPRF, PRF_HMAC_SHA2_256, 0}, {TransformDH, DH_CURVE25519, 0}}}}},
			&KEPayload{Group: DH_CURVE25519, Data: seq(0x40, 32)},
			&NoncePayload{Data: seq(0x60, 32)},
			&NotifyPayload{NotifyType: NAT_DETECTION_SOURCE_IP, Data: seq(0x10, 20)},
			&NotifyPayload{NotifyType: NAT_DETECTION_DESTINATION_IP, Data: seq(0x30, 20)},
			&NotifyPayload{NotifyType: SIGNATURE_HASH_ALGORITHMS, Data: []byte{0, 2, 0, 3, 0, 4, 0, 5}},
			&VendorPayload{Data: seq(0xf0, 16)},
		}},
		{"IKE_AUTH contents", IKE_AUTH, FlagInitiator, []Payload{
			&IDPayload{Initiator: true, IDType: IDFQDN, Data: []byte("left.example.org")},
			&CertPayload{Encoding: CertRawPublicKey, Data: seq(0x30, 44)},
			&IDPayload{IDType: IDFQDN, Data: []byte("right.example.org")},
			&AuthPayload{Method: AuthPSK, Data: seq(0xa0, 32)},
			&SAPayload{Proposals: []Proposal{{Num: 1, Protocol: ProtoESP, SPI: []byte{0xc0, 0, 0, 9}, Transforms: []Transform{
				{TransformENCR, ENCR_AES_GCM_16, 256}, {TransformESN, ESN_NO, 0}}}}},
			&TSPayload{Initiator: true, Selectors: []TrafficSelector{{EndPort: 65535, Start: addr("10.1.0.0"), End: addr("10.1.255.255")}}},
			&TSPayload{Selectors: []TrafficSelector{{EndPort: 65535, Start: addr("10.2.0.0"), End: addr("10.2.255.255")}}},
			&NotifyPayload{NotifyType: INITIAL_CONTACT},
		}},
	}
}

func (c *messageCase) message() *Message {
	return &Message{
		Header: Header{SPIi: 0x0102030405060708, SPIr: 0x1112131415161718, Version: Version,
			Exchange: c.exchange, Flags: c.flags, MessageID: 7},
		Payloads: c.payloads,
	}
}

func mustMarshal(tb testing.TB, m *Message) []byte {
	tb.Helper()
	b, err := m.Marshal()
	if err != nil {
		tb.Fatalf("Marshal: %v", err)
	}
	return b
}

// TestMessageRoundTrip builds every payload type, marshals, parses and
// compares, then checks that marshalling the parsed message gives the same
// octets.
func TestMessageRoundTrip(t *testing.T) {
	for _, c := range testMessages() {
		t.Run(c.name, func(t *testing.T) {
			m := c.message()
			b := mustMarshal(t, m)
			if len(b) != int(m.Length) {
				t.Fatalf("Marshal returned %d octets, header says %d", len(b), m.Length)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v\n%x", err, b)
			}
			if got.Header != m.Header {
				t.Errorf("header = %+v, want %+v", got.Header, m.Header)
			}
			if got.Encrypted() {
				t.Errorf("Encrypted() = true for a cleartext message")
			}
			if !bytes.Equal(got.Raw(), b) {
				t.Errorf("Raw() differs from the parsed octets")
			}
			if !reflect.DeepEqual(got.Payloads, m.Payloads) {
				t.Errorf("payloads differ after a round trip:\n got %s\nwant %s", dump(got.Payloads), dump(m.Payloads))
			}
			if again := mustMarshal(t, got); !bytes.Equal(again, b) {
				t.Errorf("re-marshalled message differs:\n got %x\nwant %x", again, b)
			}
		})
	}
}

func dump(ps []Payload) string {
	var sb strings.Builder
	for _, p := range ps {
		sb.WriteString(p.Type().String())
		sb.WriteString(":")
		b, _ := p.marshal(nil)
		sb.WriteString(hex.EncodeToString(b))
		sb.WriteString(" ")
	}
	return sb.String()
}

// TestMarshalWire checks the encoder against a message assembled by hand
// from the layouts of RFC 7296 §3.1, §3.2, §3.3 and §3.10, so that the
// round trip cannot hide a mistake shared by encoder and decoder.
func TestMarshalWire(t *testing.T) {
	want := unhex(t, `
		0102030405060708 0000000000000000  # IKE SPIs
		21 20 22 08 00000000 00000048      # next SA, version 2.0, IKE_SA_INIT, I, message ID 0, length 72
		29 00 0020                         # SA: next N, length 32
		  00 00 001c 01 01 00 02           #   last proposal, length 28, #1, IKE, no SPI, 2 transforms
		    03 00 000c 01 00 0014 800e 0100 #   more, length 12, ENCR AES-GCM-16, key length 256
		    00 00 0008 04 00 001f           #   last, length 8, DH 31
		00 00 000c                         # N: last payload, length 12
		  00 00 4004 deadbeef              #   no protocol, no SPI, NAT_DETECTION_SOURCE_IP, data
	`)
	m := &Message{
		Header: Header{SPIi: 0x0102030405060708, Exchange: IKE_SA_INIT, Flags: FlagInitiator},
		Payloads: []Payload{
			&SAPayload{Proposals: []Proposal{{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{
				{TransformENCR, ENCR_AES_GCM_16, 256}, {TransformDH, DH_CURVE25519, 0}}}}},
			&NotifyPayload{NotifyType: NAT_DETECTION_SOURCE_IP, Data: []byte{0xde, 0xad, 0xbe, 0xef}},
		},
	}
	if got := mustMarshal(t, m); !bytes.Equal(got, want) {
		t.Fatalf("Marshal:\n got %x\nwant %x", got, want)
	}
}

// TestParseTruncated checks that no strict prefix of a valid message parses,
// neither as received (the header's length then exceeds the data) nor with
// the header's length rewritten to the prefix's, which makes the payload
// chain itself end early.
func TestParseTruncated(t *testing.T) {
	for _, c := range testMessages() {
		t.Run(c.name, func(t *testing.T) {
			b := mustMarshal(t, c.message())
			for n := 0; n < len(b); n++ {
				if _, err := Parse(b[:n]); !errors.Is(err, ErrTruncated) {
					t.Fatalf("Parse of the %d-octet prefix = %v, want ErrTruncated", n, err)
				}
				if n < HeaderLen {
					continue
				}
				p := append([]byte(nil), b[:n]...)
				binary.BigEndian.PutUint32(p[24:], uint32(n))
				if _, err := Parse(p); err == nil {
					t.Fatalf("Parse of the %d-octet prefix with its length fixed up succeeded", n)
				} else if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse of the %d-octet prefix with its length fixed up = %v, want ErrTruncated or ErrMalformed", n, err)
				}
			}
		})
	}
}

// rawMessage assembles a message from already encoded payloads: each
// element is the payload type, the flags octet and the body. The next
// payload fields are chained in order.
type rawPL struct {
	pt    PayloadType
	flags byte
	body  []byte
}

func rawMessage(pls ...rawPL) []byte {
	b := make([]byte, HeaderLen)
	binary.BigEndian.PutUint64(b[0:], 0x0102030405060708)
	if len(pls) > 0 {
		b[16] = byte(pls[0].pt)
	}
	b[17], b[18], b[19] = Version, byte(IKE_SA_INIT), FlagInitiator
	for i, p := range pls {
		next := PayloadNone
		if i+1 < len(pls) {
			next = pls[i+1].pt
		}
		b = append(b, byte(next), p.flags)
		b = binary.BigEndian.AppendUint16(b, uint16(4+len(p.body)))
		b = append(b, p.body...)
	}
	binary.BigEndian.PutUint32(b[24:], uint32(len(b)))
	return b
}

// TestParseUnknownPayload checks RFC 7296 §3.2: an unknown payload is
// skipped unless its critical bit is set, and then the message is refused.
func TestParseUnknownPayload(t *testing.T) {
	nonce := rawPL{PayloadNonce, 0, seq(1, 16)}
	notify := rawPL{PayloadNotify, 0, []byte{0, 0, 0x40, 0x00}}

	m, err := Parse(rawMessage(nonce, rawPL{150, 0, []byte("skip me")}, notify))
	if err != nil {
		t.Fatalf("unknown non-critical payload: %v", err)
	}
	if Get[*NoncePayload](m) == nil || m.Notify(INITIAL_CONTACT) == nil {
		t.Errorf("payloads around the unknown one were lost: %s", dump(m.Payloads))
	}
	if len(m.Payloads) != 3 || m.Payloads[1].Type() != 150 {
		t.Errorf("payloads = %s, want the unknown one kept uninterpreted in the middle", dump(m.Payloads))
	}

	// CP and EAP are defined by RFC 7296 but not implemented: same rule.
	for _, pt := range []PayloadType{150, PayloadCP, PayloadEAP} {
		_, err := Parse(rawMessage(nonce, rawPL{pt, criticalBit, []byte{1, 2, 3, 4}}, notify))
		if !errors.Is(err, ErrCritical) {
			t.Errorf("critical payload %v: err = %v, want ErrCritical", pt, err)
		}
	}

	// The critical bit of a known payload changes nothing.
	if _, err := Parse(rawMessage(rawPL{PayloadNonce, criticalBit, seq(1, 16)}, notify)); err != nil {
		t.Errorf("known payload with the critical bit: %v", err)
	}
}

// TestParseMalformed feeds damaged messages and checks the error.
func TestParseMalformed(t *testing.T) {
	good := mustMarshal(t, &Message{Header: Header{Exchange: IKE_SA_INIT, Flags: FlagInitiator},
		Payloads: []Payload{&NoncePayload{Data: seq(1, 32)}, &NotifyPayload{NotifyType: INITIAL_CONTACT}}})
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	setLen := func(b []byte, n int) []byte { binary.BigEndian.PutUint32(b[24:], uint32(n)); return b }
	nonce := rawPL{PayloadNonce, 0, seq(1, 16)}
	sa := func(body ...byte) []byte { return rawMessage(rawPL{PayloadSA, 0, body}) }

	tests := []struct {
		name string
		b    []byte
		err  error
	}{
		{"empty", nil, ErrTruncated},
		{"header length below 28", edit(func(b []byte) []byte { return setLen(b, 27) }), ErrTruncated},
		{"header length zero", edit(func(b []byte) []byte { return setLen(b, 0) }), ErrTruncated},
		{"header length beyond the data", edit(func(b []byte) []byte { return setLen(b, len(b)+1) }), ErrTruncated},
		{"header length huge", edit(func(b []byte) []byte { return setLen(b, 1<<31) }), ErrTruncated},
		{"trailing octets inside the header length", edit(func(b []byte) []byte {
			return setLen(append(b, 0, 0, 0, 0), len(b)+4)
		}), ErrMalformed},
		{"trailing octet inside the header length", edit(func(b []byte) []byte {
			return setLen(append(b, 0), len(b)+1)
		}), ErrMalformed},
		{"payload length below 4", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[30:], 3); return b }), ErrMalformed},
		{"payload length beyond the message", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[30:], 0xffff); return b }), ErrMalformed},
		{"payload length one short", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[30:], binary.BigEndian.Uint16(b[30:])-1)
			return b
		}), ErrMalformed},
		{"next payload on the last payload", edit(func(b []byte) []byte { b[HeaderLen+4+32] = byte(PayloadVendor); return b }), ErrTruncated},
		{"first payload but no payload", edit(func(b []byte) []byte { return setLen(b[:HeaderLen], HeaderLen) }), ErrTruncated},
		{"version 1.0", edit(func(b []byte) []byte { b[17] = 0x10; return b }), ErrVersion},
		{"version 3.0", edit(func(b []byte) []byte { b[17] = 0x30; return b }), ErrVersion},
		{"version 0", edit(func(b []byte) []byte { b[17] = 0; return b }), ErrVersion},
		{"SK not last", rawMessage(rawPL{PayloadSK, 0, seq(0, 40)}, nonce), ErrSKNotLast},
		{"SKF not last", rawMessage(rawPL{PayloadSKF, 0, seq(0, 40)}, nonce), ErrSKNotLast},
		{"nonce of 15 octets", rawMessage(rawPL{PayloadNonce, 0, seq(1, 15)}), ErrMalformed},
		{"nonce of 257 octets", rawMessage(rawPL{PayloadNonce, 0, seq(1, 257)}), ErrMalformed},
		{"KE of 3 octets", rawMessage(rawPL{PayloadKE, 0, []byte{0, 31, 0}}), ErrTruncated},
		{"ID of 3 octets", rawMessage(rawPL{PayloadIDi, 0, []byte{1, 0, 0}}), ErrTruncated},
		{"AUTH of 3 octets", rawMessage(rawPL{PayloadAUTH, 0, []byte{2, 0, 0}}), ErrTruncated},
		{"CERT empty", rawMessage(rawPL{PayloadCERT, 0, nil}), ErrTruncated},
		{"notify of 3 octets", rawMessage(rawPL{PayloadNotify, 0, []byte{0, 0, 0x40}}), ErrTruncated},
		{"notify SPI size beyond the payload", rawMessage(rawPL{PayloadNotify, 0, []byte{3, 4, 0x40, 0x09, 1, 2, 3}}), ErrTruncated},
		{"delete of 3 octets", rawMessage(rawPL{PayloadDelete, 0, []byte{3, 4, 0}}), ErrTruncated},
		{"delete SPI count too high", rawMessage(rawPL{PayloadDelete, 0, []byte{3, 4, 0, 2, 1, 2, 3, 4}}), ErrMalformed},
		{"delete SPI count too low", rawMessage(rawPL{PayloadDelete, 0, []byte{3, 4, 0, 1, 1, 2, 3, 4, 5}}), ErrMalformed},
		{"delete IKE with octets", rawMessage(rawPL{PayloadDelete, 0, []byte{1, 0, 0, 0, 9}}), ErrMalformed},
		{"TS of 3 octets", rawMessage(rawPL{PayloadTSi, 0, []byte{1, 0, 0}}), ErrTruncated},
		{"TS count zero", rawMessage(rawPL{PayloadTSi, 0, []byte{0, 0, 0, 0}}), ErrMalformed},
		{"TS count too high", rawMessage(rawPL{PayloadTSi, 0, append([]byte{2, 0, 0, 0},
			7, 0, 0, 16, 0, 0, 0xff, 0xff, 10, 0, 0, 0, 10, 0, 0, 255)}), ErrTruncated},
		{"TS count too low", rawMessage(rawPL{PayloadTSi, 0, append([]byte{1, 0, 0, 0},
			7, 0, 0, 16, 0, 0, 0xff, 0xff, 10, 0, 0, 0, 10, 0, 0, 255, 0)}), ErrMalformed},
		{"TS unknown type", rawMessage(rawPL{PayloadTSi, 0, append([]byte{1, 0, 0, 0},
			9, 0, 0, 16, 0, 0, 0xff, 0xff, 10, 0, 0, 0, 10, 0, 0, 255)}), ErrMalformed},
		{"TS IPv4 with the IPv6 length", rawMessage(rawPL{PayloadTSi, 0, append([]byte{1, 0, 0, 0},
			7, 0, 0, 40, 0, 0, 0xff, 0xff, 10, 0, 0, 0, 10, 0, 0, 255)}), ErrMalformed},
		{"TS IPv6 cut short", rawMessage(rawPL{PayloadTSr, 0, append([]byte{1, 0, 0, 0},
			8, 0, 0, 40, 0, 0, 0xff, 0xff, 1, 2, 3, 4)}), ErrTruncated},
		{"SA empty", sa(), ErrMalformed},
		{"SA proposal header cut", sa(0, 0, 0, 8, 1, 1, 0), ErrTruncated},
		{"SA proposal length below 8", sa(0, 0, 0, 7, 1, 1, 0, 0), ErrMalformed},
		{"SA proposal length beyond the payload", sa(0, 0, 0, 9, 1, 1, 0, 0), ErrMalformed},
		{"SA bad last-substructure", sa(1, 0, 0, 8, 1, 1, 0, 0), ErrMalformed},
		{"SA more proposals announced", sa(2, 0, 0, 8, 1, 1, 0, 0), ErrTruncated},
		{"SA octets after the last proposal", sa(0, 0, 0, 8, 1, 1, 0, 0, 0, 0, 0, 8, 2, 1, 0, 0), ErrMalformed},
		{"SA SPI size beyond the proposal", sa(0, 0, 0, 8, 1, 3, 4, 0), ErrMalformed},
		{"SA transform missing", sa(0, 0, 0, 8, 1, 1, 0, 1), ErrTruncated},
		{"SA transform length below 8", sa(0, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 7, 1, 0, 0, 20), ErrMalformed},
		{"SA transform length beyond the proposal", sa(0, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 12, 1, 0, 0, 20), ErrMalformed},
		{"SA last transform marked more", sa(0, 0, 0, 16, 1, 1, 0, 1, 3, 0, 0, 8, 1, 0, 0, 20), ErrMalformed},
		{"SA transform count too low", sa(0, 0, 0, 24, 1, 1, 0, 1,
			0, 0, 0, 8, 1, 0, 0, 20, 0, 0, 0, 8, 4, 0, 0, 31), ErrMalformed},
		{"SA transform attribute cut", sa(0, 0, 0, 18, 1, 1, 0, 1, 0, 0, 0, 10, 1, 0, 0, 20, 0x80, 0x0e), ErrTruncated},
		{"SA TLV attribute beyond the transform", sa(0, 0, 0, 20, 1, 1, 0, 1,
			0, 0, 0, 12, 1, 0, 0, 20, 0x00, 0x01, 0x00, 0x05), ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.b)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse = %v, %v; want error %v", m, err, tt.err)
			}
		})
	}
}

// TestParseAccepts covers inputs that look odd but are valid.
func TestParseAccepts(t *testing.T) {
	good := mustMarshal(t, &Message{Header: Header{Exchange: IKE_SA_INIT, Flags: FlagInitiator},
		Payloads: []Payload{&NoncePayload{Data: seq(1, 32)}}})

	// RFC 7296 §3.1: the minor version of a received message is ignored.
	b := append([]byte(nil), good...)
	b[17] = 0x2f
	if _, err := Parse(b); err != nil {
		t.Errorf("version 2.15: %v", err)
	}

	// An SK payload as the last payload marks the message as encrypted and
	// hides nothing before it.
	m, err := Parse(rawMessage(rawPL{PayloadNonce, 0, seq(1, 16)}, rawPL{PayloadSK, 0, seq(0, 40)}))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Encrypted() || len(m.Payloads) != 1 {
		t.Errorf("Encrypted() = %v with %d cleartext payloads, want true with 1", m.Encrypted(), len(m.Payloads))
	}

	// TLV attributes are skipped and the key length is read from any TV
	// attribute among them.
	sab := []byte{0, 0, 0, 28, 1, 1, 0, 1,
		0, 0, 0, 20, 1, 0, 0, 20, 0x00, 0x63, 0x00, 0x03, 1, 2, 3, 0x80, 0x0e, 0x00, 0x80}
	sab[3] = byte(len(sab))
	sab[11] = byte(len(sab) - 8)
	m, err = Parse(rawMessage(rawPL{PayloadSA, 0, sab}))
	if err != nil {
		t.Fatal(err)
	}
	want := Transform{TransformENCR, ENCR_AES_GCM_16, 128}
	if got := Get[*SAPayload](m).Proposals[0].Transforms; len(got) != 1 || got[0] != want {
		t.Errorf("transforms = %v, want [%v]", got, want)
	}
}

// TestParseTrailingDatagramBytes: octets after the length the IKE header
// announces are part of no message and should be refused, as crypto/tls
// refuses trailing data.
func TestParseTrailingDatagramBytes(t *testing.T) {
	b := mustMarshal(t, &Message{Header: Header{Exchange: IKE_SA_INIT, Flags: FlagInitiator},
		Payloads: []Payload{&NoncePayload{Data: seq(1, 32)}}})
	if _, err := Parse(append(b, 0xde, 0xad)); err == nil {
		t.Fatal("Parse accepted two octets after the message")
	}
}

// TestMarshalErrors checks what the encoder refuses to build.
func TestMarshalErrors(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
	}{
		{"delete SPIs of different sizes", &DeletePayload{Protocol: ProtoESP, SPIs: [][]byte{{1, 2, 3, 4}, {1, 2, 3}}}},
		{"TS without address", &TSPayload{Selectors: []TrafficSelector{{EndPort: 65535}}}},
		{"TS mixing families", &TSPayload{Selectors: []TrafficSelector{
			{Start: netip.MustParseAddr("10.0.0.1"), End: netip.MustParseAddr("::1")}}}},
		{"notify SPI of 256 octets", &NotifyPayload{SPI: make([]byte, 256)}},
		{"proposal SPI of 256 octets", &SAPayload{Proposals: []Proposal{{Num: 1, Protocol: ProtoIKE, SPI: make([]byte, 256)}}}},
		{"payload over 65535 octets", &VendorPayload{Data: make([]byte, 65532)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Message{Header: Header{Exchange: INFORMATIONAL}, Payloads: []Payload{tt.p}}
			if b, err := m.Marshal(); err == nil {
				t.Fatalf("Marshal succeeded: %d octets", len(b))
			}
		})
	}
	// The largest payload still fits.
	m := &Message{Header: Header{Exchange: INFORMATIONAL}, Payloads: []Payload{&VendorPayload{Data: make([]byte, 65531)}}}
	if _, err := m.Marshal(); err != nil {
		t.Errorf("payload of 65535 octets: %v", err)
	}
}

// TestMessageAccessors covers Get, Notify, ErrorNotify, ID and TS.
func TestMessageAccessors(t *testing.T) {
	var m *Message
	for _, c := range testMessages() {
		if c.name == "IKE_AUTH contents" {
			m = c.message()
		}
	}
	if id := m.ID(true); id == nil || string(id.Data) != "left.example.org" {
		t.Errorf("ID(true) = %v", id)
	}
	if id := m.ID(false); id == nil || id.String() != "right.example.org" {
		t.Errorf("ID(false) = %v", id)
	}
	if ts := m.TS(true); ts == nil || ts.Selectors[0].Start != netip.MustParseAddr("10.1.0.0") {
		t.Errorf("TS(true) = %v", ts)
	}
	if ts := m.TS(false); ts == nil || ts.Selectors[0].Start != netip.MustParseAddr("10.2.0.0") {
		t.Errorf("TS(false) = %v", ts)
	}
	if m.Notify(INITIAL_CONTACT) == nil || m.Notify(COOKIE) != nil {
		t.Errorf("Notify lookup wrong")
	}
	if n := m.ErrorNotify(); n != nil {
		t.Errorf("ErrorNotify = %v, want nil", n.NotifyType)
	}
	if Get[*KEPayload](m) != nil || Get[*AuthPayload](m) == nil {
		t.Errorf("Get wrong")
	}
	m.Payloads = append(m.Payloads, &NotifyPayload{NotifyType: TS_UNACCEPTABLE})
	if n := m.ErrorNotify(); n == nil || n.NotifyType != TS_UNACCEPTABLE {
		t.Errorf("ErrorNotify = %v, want TS_UNACCEPTABLE", n)
	}
	if !errors.Is(error(TS_UNACCEPTABLE), TS_UNACCEPTABLE) || TS_UNACCEPTABLE.Error() != "ike: TS_UNACCEPTABLE" {
		t.Errorf("NotifyType as error: %q", TS_UNACCEPTABLE.Error())
	}
}

// TestIDPayloadString covers the log formatting of identities.
func TestIDPayloadString(t *testing.T) {
	tests := []struct {
		p    IDPayload
		want string
	}{
		{IDPayload{IDType: IDIPv4, Data: []byte{192, 0, 2, 1}}, "192.0.2.1"},
		{IDPayload{IDType: IDIPv6, Data: netip.MustParseAddr("2001:db8::1").AsSlice()}, "2001:db8::1"},
		{IDPayload{IDType: IDFQDN, Data: []byte("vpn.example.org")}, "vpn.example.org"},
		{IDPayload{IDType: IDRFC822, Data: []byte("a@example.org")}, "a@example.org"},
		{IDPayload{IDType: IDNull}, "(null)"},
		{IDPayload{IDType: IDKeyID, Data: []byte{0xab, 0xcd}}, "id-type-11:abcd"},
		{IDPayload{IDType: IDIPv4, Data: []byte{1, 2, 3}}, "id-type-1:010203"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%v %x: String() = %q, want %q", tt.p.IDType, tt.p.Data, got, tt.want)
		}
	}
}
