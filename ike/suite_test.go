package ike

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Transforms by name, for the tables below.
var (
	tGCM128   = Transform{TransformENCR, ENCR_AES_GCM_16, 128}
	tGCM256   = Transform{TransformENCR, ENCR_AES_GCM_16, 256}
	tChaCha   = Transform{TransformENCR, ENCR_CHACHA20_POLY1305, 0}
	tCBC128   = Transform{TransformENCR, ENCR_AES_CBC, 128}
	tCBC256   = Transform{TransformENCR, ENCR_AES_CBC, 256}
	tPRF256   = Transform{TransformPRF, PRF_HMAC_SHA2_256, 0}
	tPRF384   = Transform{TransformPRF, PRF_HMAC_SHA2_384, 0}
	tPRF512   = Transform{TransformPRF, PRF_HMAC_SHA2_512, 0}
	tSHA256   = Transform{TransformINTEG, AUTH_HMAC_SHA2_256_128, 0}
	tSHA384   = Transform{TransformINTEG, AUTH_HMAC_SHA2_384_192, 0}
	tSHA512   = Transform{TransformINTEG, AUTH_HMAC_SHA2_512_256, 0}
	tX25519   = Transform{TransformDH, DH_CURVE25519, 0}
	tECP256   = Transform{TransformDH, DH_ECP_256, 0}
	tMODP2048 = Transform{TransformDH, DH_MODP_2048, 0}
	tDHNone   = Transform{TransformDH, DH_NONE, 0}
	tESN      = Transform{TransformESN, ESN_YES, 0}
	tNoESN    = Transform{TransformESN, ESN_NO, 0}
)

func ikeProp(num uint8, ts ...Transform) Proposal {
	return Proposal{Num: num, Protocol: ProtoIKE, Transforms: ts}
}

func espProp(num uint8, ts ...Transform) Proposal {
	return Proposal{Num: num, Protocol: ProtoESP, Transforms: ts}
}

func TestParseProposals(t *testing.T) {
	tests := []struct {
		in      string
		proto   ProtocolID
		want    []Proposal
		wantErr string // substring of the error
	}{
		{"aes256gcm16-prfsha256-x25519", ProtoIKE, []Proposal{ikeProp(1, tGCM256, tPRF256, tX25519)}, ""},
		{"aes128gcm-prfsha384-ecp256", ProtoIKE, []Proposal{ikeProp(1, tGCM128, tPRF384, tECP256)}, ""},
		{"chacha20poly1305-prfsha512-curve25519", ProtoIKE, []Proposal{ikeProp(1, tChaCha, tPRF512, tX25519)}, ""},
		// Without a PRF, PRF_HMAC_SHA2_256 is added.
		{"aes256gcm16-x25519", ProtoIKE, []Proposal{ikeProp(1, tGCM256, tX25519, tPRF256)}, ""},
		{"aes128-sha256-modp2048", ProtoIKE, []Proposal{ikeProp(1, tCBC128, tSHA256, tMODP2048, tPRF256)}, ""},
		{"aes256-aes128-sha512-sha384-prfsha512-ecp256-x25519", ProtoIKE, []Proposal{
			ikeProp(1, tCBC256, tCBC128, tSHA512, tSHA384, tPRF512, tECP256, tX25519)}, ""},
		{"aes256gcm16-aes128gcm16-chacha20poly1305-prfsha256-x25519", ProtoIKE, []Proposal{
			ikeProp(1, tGCM256, tGCM128, tChaCha, tPRF256, tX25519)}, ""},
		{"AES256GCM16-PrfSha384-X25519", ProtoIKE, []Proposal{ikeProp(1, tGCM256, tPRF384, tX25519)}, ""},
		{" aes256gcm16-x25519 , aes256-sha384-prfsha384-modp2048 ", ProtoIKE, []Proposal{
			ikeProp(1, tGCM256, tX25519, tPRF256), ikeProp(2, tCBC256, tSHA384, tPRF384, tMODP2048)}, ""},

		// strongSwan's rules (issue 11 item 12): without a PRF, an IKE
		// proposal takes the PRFs of its integrity algorithms.
		{"aes128-sha384-ecp256", ProtoIKE, []Proposal{ikeProp(1, tCBC128, tSHA384, tECP256, tPRF384)}, ""},
		{"aes256-sha512-sha256-x25519", ProtoIKE, []Proposal{ikeProp(1, tCBC256, tSHA512, tSHA256, tX25519, tPRF512, tPRF256)}, ""},
		{"aes-sha2_256-x25519", ProtoIKE, []Proposal{ikeProp(1, tCBC128, tSHA256, tX25519, tPRF256)}, ""},
		{"aes256-sha384-prfsha256-ecp256", ProtoIKE, []Proposal{ikeProp(1, tCBC256, tSHA384, tPRF256, tECP256)}, ""},
		{"aes256gcm128-x25519", ProtoIKE, []Proposal{ikeProp(1, tGCM256, tX25519, tPRF256)}, ""},
		// AEAD drops integrity algorithms; ESP ignores PRFs.
		{"aes256gcm16-sha256-x25519", ProtoIKE, []Proposal{ikeProp(1, tGCM256, tX25519, tPRF256)}, ""},
		{"aes256gcm16-sha256", ProtoESP, []Proposal{espProp(1, tGCM256, tNoESN)}, ""},
		{"aes256gcm16-prfsha256", ProtoESP, []Proposal{espProp(1, tGCM256, tNoESN)}, ""},
		{"aes128-sha256-prfsha384", ProtoESP, []Proposal{espProp(1, tCBC128, tSHA256, tNoESN)}, ""},
		{"aes256gcm16", ProtoESP, []Proposal{espProp(1, tGCM256, tNoESN)}, ""},
		{"aes256gcm16-esn", ProtoESP, []Proposal{espProp(1, tGCM256, tESN)}, ""},
		{"aes128gcm16-esn-noesn", ProtoESP, []Proposal{espProp(1, tGCM128, tESN, tNoESN)}, ""},
		{"aes128-sha256-x25519-noesn", ProtoESP, []Proposal{espProp(1, tCBC128, tSHA256, tX25519, tNoESN)}, ""},
		{"chacha20poly1305,aes256-sha256", ProtoESP, []Proposal{
			espProp(1, tChaCha, tNoESN), espProp(2, tCBC256, tSHA256, tNoESN)}, ""},

		{"aes256gcm16-aes256-sha256-x25519", ProtoIKE, nil, "mixes AEAD and non-AEAD"},
		{"aes256-aes256gcm16-sha256-x25519", ProtoIKE, nil, "mixes AEAD and non-AEAD"},
		{"aes128-chacha20poly1305-sha256", ProtoESP, nil, "mixes AEAD and non-AEAD"},
		{"aes256-x25519", ProtoIKE, nil, "needs an integrity algorithm"},
		{"aes256-prfsha256-x25519", ProtoIKE, nil, "needs an integrity algorithm"},
		{"aes256", ProtoESP, nil, "needs an integrity algorithm"},
		{"aes256gcm16-prfsha256", ProtoIKE, nil, "has no DH group"},
		{"aes256-sha256", ProtoIKE, nil, "has no DH group"},
		{"prfsha256-x25519", ProtoIKE, nil, "has no cipher"},
		{"sha256-noesn", ProtoESP, nil, "has no cipher"},
		{"aes256gcm16-x25519,sha256-x25519", ProtoIKE, nil, "has no cipher"},
		{"aes256gcm16-prfsha256-x448", ProtoIKE, nil, `unknown algorithm "x448"`},
		{"3des-sha1-modp1024", ProtoIKE, nil, `unknown algorithm "3des"`},
		{"aes192gcm16-x25519", ProtoIKE, nil, "unknown algorithm"},
		{"aes256gcm16--x25519", ProtoIKE, nil, `unknown algorithm ""`},
		{"aes256gcm16-x25519,", ProtoIKE, nil, `unknown algorithm ""`},
		{"", ProtoIKE, nil, `unknown algorithm ""`},
		{"aes256gcm16-x25519-esn", ProtoIKE, nil, `unknown algorithm "esn"`},
		{"aes256gcm16 x25519", ProtoIKE, nil, "unknown algorithm"},
	}
	for _, tt := range tests {
		got, err := ParseProposals(tt.in, tt.proto)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseProposals(%q, %d) = %v, %v; want error containing %q", tt.in, tt.proto, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseProposals(%q, %d): %v", tt.in, tt.proto, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseProposals(%q, %d):\n got %+v\nwant %+v", tt.in, tt.proto, got, tt.want)
		}
	}
}

// TestDefaultProposals checks that the built-in defaults parse and accept
// each other: two oevpn peers with no configuration agree.
func TestDefaultProposals(t *testing.T) {
	ike, err := ParseProposals(DefaultIKEProposals, ProtoIKE)
	if err != nil || len(ike) != 2 {
		t.Fatalf("DefaultIKEProposals: %d proposals, %v", len(ike), err)
	}
	esp, err := ParseProposals(DefaultESPProposals, ProtoESP)
	if err != nil || len(esp) != 2 {
		t.Fatalf("DefaultESPProposals: %d proposals, %v", len(esp), err)
	}
	got, err := choose(ike, ike, ProtoIKE)
	if err != nil {
		t.Fatal(err)
	}
	if want := ikeProp(1, tGCM256, tPRF256, tX25519); !reflect.DeepEqual(*got, want) {
		t.Errorf("IKE defaults choose %+v, want %+v", *got, want)
	}
	if s, err := suiteOf(got); err != nil || s != (Suite{Encr: tGCM256, PRF: PRF_HMAC_SHA2_256, DH: DH_CURVE25519}) {
		t.Errorf("suiteOf = %+v, %v", s, err)
	}
	got, err = choose(esp, esp, ProtoESP)
	if err != nil {
		t.Fatal(err)
	}
	if want := espProp(1, tGCM256, tESN); !reflect.DeepEqual(*got, want) {
		t.Errorf("ESP defaults choose %+v, want %+v", *got, want)
	}
	if got := dhGroups(ike); !reflect.DeepEqual(got, []uint16{DH_CURVE25519, DH_ECP_256, DH_MODP_2048}) {
		t.Errorf("dhGroups = %v", got)
	}
}

func mustProposals(t *testing.T, s string, p ProtocolID) []Proposal {
	t.Helper()
	props, err := ParseProposals(s, p)
	if err != nil {
		t.Fatal(err)
	}
	return props
}

// TestChoose checks the responder's selection (RFC 7296 §2.7): the first
// of the peer's proposals that one of ours accepts, and within it, for each
// transform type, the peer's first transform we accept.
func TestChoose(t *testing.T) {
	tests := []struct {
		name   string
		theirs string // parsed, or literal below
		ours   string
		lit    []Proposal // when not nil, used instead of theirs
		proto  ProtocolID
		tproto ProtocolID // to parse theirs with, when not proto
		noPFS  bool       // IKE_AUTH: no KE, so no DH required
		want   *Proposal
	}{
		{name: "identical", theirs: "aes256gcm16-prfsha256-x25519", ours: "aes256gcm16-prfsha256-x25519",
			proto: ProtoIKE, want: &Proposal{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{tGCM256, tPRF256, tX25519}}},
		{name: "peer's first proposal wins over our preference",
			theirs: "aes128-sha256-ecp256,aes256gcm16-x25519", ours: "aes256gcm16-x25519,aes128-sha256-ecp256",
			proto: ProtoIKE, want: &Proposal{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{tCBC128, tSHA256, tECP256, tPRF256}}},
		{name: "peer's first proposal unacceptable",
			theirs: "chacha20poly1305-x25519,aes128gcm16-prfsha384-ecp256", ours: "aes128gcm16-prfsha384-ecp256-x25519",
			proto: ProtoIKE, want: &Proposal{Num: 2, Protocol: ProtoIKE, Transforms: []Transform{tGCM128, tPRF384, tECP256}}},
		{name: "peer's first transform of each type",
			theirs: "aes256gcm16-aes128gcm16-prfsha512-prfsha256-modp2048-x25519",
			ours:   "aes128gcm16-aes256gcm16-prfsha256-prfsha512-x25519-modp2048",
			proto:  ProtoIKE, want: &Proposal{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{tGCM256, tPRF512, tMODP2048}}},
		{name: "peer's first acceptable transform of each type",
			theirs: "chacha20poly1305-aes128gcm16-aes256gcm16-prfsha384-prfsha256-prfsha512-ecp256-x25519",
			ours:   "aes256gcm16-aes128gcm16-prfsha512-prfsha256-x25519",
			proto:  ProtoIKE, want: &Proposal{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{tGCM128, tPRF256, tX25519}}},
		{name: "second of our proposals",
			theirs: "aes256-sha384-prfsha384-modp2048", ours: "aes256gcm16-x25519,aes128-aes256-sha256-sha384-prfsha384-modp2048",
			proto: ProtoIKE, want: &Proposal{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{tCBC256, tSHA384, tPRF384, tMODP2048}}},
		{name: "ESP keeps the peer's SPI", ours: "aes256gcm16-aes128gcm16-esn-noesn", proto: ProtoESP,
			lit:  []Proposal{{Num: 3, Protocol: ProtoESP, SPI: []byte{0xc1, 0, 0, 7}, Transforms: []Transform{tGCM128, tNoESN}}},
			want: &Proposal{Num: 3, Protocol: ProtoESP, SPI: []byte{0xc1, 0, 0, 7}, Transforms: []Transform{tGCM128, tNoESN}}},
		{name: "ESP without PFS when ours has a group (IKE_AUTH carries no KE)", theirs: "aes256gcm16-noesn", ours: "aes256gcm16-x25519-noesn",
			proto: ProtoESP, noPFS: true, want: &Proposal{Num: 1, Protocol: ProtoESP, Transforms: []Transform{tGCM256, tNoESN}}},
		{name: "ESP without PFS refused when ours requires it (CREATE_CHILD_SA)", theirs: "aes256gcm16-noesn", ours: "aes256gcm16-x25519-noesn",
			proto: ProtoESP},
		{name: "ESP with PFS", theirs: "aes256gcm16-ecp256-x25519-noesn", ours: "aes256gcm16-x25519-noesn",
			proto: ProtoESP, want: &Proposal{Num: 1, Protocol: ProtoESP, Transforms: []Transform{tGCM256, tX25519, tNoESN}}},
		{name: "ESP with DH NONE", ours: "aes256gcm16-noesn", proto: ProtoESP,
			lit:  []Proposal{espProp(1, tGCM256, tDHNone, tNoESN)},
			want: &Proposal{Num: 1, Protocol: ProtoESP, Transforms: []Transform{tGCM256, tNoESN}}},
		{name: "ESP proposals skipped for IKE", ours: "aes256gcm16-x25519", proto: ProtoIKE,
			lit:  []Proposal{espProp(1, tGCM256, tX25519, tPRF256), ikeProp(2, tGCM256, tPRF256, tX25519)},
			want: &Proposal{Num: 2, Protocol: ProtoIKE, Transforms: []Transform{tGCM256, tPRF256, tX25519}}},

		{name: "no common cipher", theirs: "chacha20poly1305-x25519", ours: "aes256gcm16-x25519", proto: ProtoIKE},
		{name: "key length differs", theirs: "aes128gcm16-x25519", ours: "aes256gcm16-x25519", proto: ProtoIKE},
		{name: "no common group", theirs: "aes256gcm16-modp2048", ours: "aes256gcm16-x25519-ecp256", proto: ProtoIKE},
		{name: "no common PRF", theirs: "aes256gcm16-prfsha512-x25519", ours: "aes256gcm16-prfsha256-x25519", proto: ProtoIKE},
		{name: "no common integrity", theirs: "aes256-sha512-x25519", ours: "aes256-sha256-x25519", proto: ProtoIKE},
		{name: "peer omits a type we need", ours: "aes256gcm16-prfsha256-x25519", proto: ProtoIKE,
			lit: []Proposal{ikeProp(1, tGCM256, tX25519)}},
		{name: "peer proposes a type we lack", ours: "aes256gcm16-prfsha256-x25519", proto: ProtoIKE,
			lit: []Proposal{ikeProp(1, tGCM256, tPRF256, tX25519, tSHA256)}},
		{name: "wrong protocol", theirs: "aes256gcm16-noesn", ours: "aes256gcm16-x25519", proto: ProtoIKE, tproto: ProtoESP},
		{name: "ESP group we do not offer", theirs: "aes256gcm16-modp2048-noesn", ours: "aes256gcm16-x25519-noesn", proto: ProtoESP},
		{name: "ESP without ESN transform", ours: "aes256gcm16-noesn", proto: ProtoESP,
			lit: []Proposal{espProp(1, tGCM256)}},
		{name: "ESN mismatch", theirs: "aes256gcm16-esn", ours: "aes256gcm16-noesn", proto: ProtoESP},
		{name: "no proposals", ours: "aes256gcm16-x25519", proto: ProtoIKE, lit: []Proposal{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			theirs := tt.lit
			if theirs == nil {
				p := tt.proto
				if tt.tproto != 0 {
					p = tt.tproto
				}
				theirs = mustProposals(t, tt.theirs, p)
			}
			ours := mustProposals(t, tt.ours, tt.proto)
			got, err := chooseDH(theirs, ours, tt.proto, !tt.noPFS)
			if tt.want == nil {
				if !errors.Is(err, NO_PROPOSAL_CHOSEN) {
					t.Fatalf("choose = %+v, %v; want NO_PROPOSAL_CHOSEN", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("choose: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("choose:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSuiteOf(t *testing.T) {
	s, err := suiteOf(&Proposal{Transforms: []Transform{tCBC256, tSHA384, tPRF384, tMODP2048}})
	if want := (Suite{Encr: tCBC256, Integ: AUTH_HMAC_SHA2_384_192, PRF: PRF_HMAC_SHA2_384, DH: DH_MODP_2048}); err != nil || s != want {
		t.Errorf("suiteOf = %+v, %v; want %+v", s, err, want)
	}
	for _, ts := range [][]Transform{{tPRF256, tX25519}, {tGCM256, tX25519}, {tGCM256, tPRF256}} {
		if _, err := suiteOf(&Proposal{Transforms: ts}); !errors.Is(err, ErrMalformed) {
			t.Errorf("suiteOf(%v) = %v, want ErrMalformed", ts, err)
		}
	}
	cs, err := childSuiteOf(&Proposal{Transforms: []Transform{tCBC128, tSHA256, tESN, tECP256}})
	if want := (ChildSuite{Encr: tCBC128, Integ: AUTH_HMAC_SHA2_256_128, ESN: true, DH: DH_ECP_256}); err != nil || cs != want {
		t.Errorf("childSuiteOf = %+v, %v; want %+v", cs, err, want)
	}
	if _, err := childSuiteOf(&Proposal{Transforms: []Transform{tNoESN}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("childSuiteOf without cipher = %v, want ErrMalformed", err)
	}
}

// TestProposalsString: what a refusal logs of the proposals offered and
// configured, bounded however many the peer sends.
func TestProposalsString(t *testing.T) {
	many := make([]Proposal, 20)
	for i := range many {
		many[i] = ikeProp(uint8(i+1), tGCM256, tPRF256, tX25519)
	}
	long := ikeProp(1)
	for i := 0; i < 100; i++ {
		long.Transforms = append(long.Transforms, Transform{Type: 9, ID: uint16(i)})
	}
	tests := []struct {
		in   []Proposal
		want string
	}{
		{[]Proposal{ikeProp(1, tGCM256, tPRF256, tX25519)}, "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519"},
		{[]Proposal{ikeProp(1, tCBC128, tSHA384, tPRF384, tECP256), espProp(2, tGCM128, tESN, tNoESN)},
			"AES_CBC-128/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_256, AES_GCM_16-128/ESN/NO_EXT_SEQ"},
		{many, strings.Repeat("AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519, ", 8) + "and 12 more"},
		{[]Proposal{ikeProp(1, Transform{TransformENCR, 99, 128}, Transform{TransformDH, 77, 0}), ikeProp(2)}, "1#99/4#77, "},
		{[]Proposal{long}, "9#0/9#1/9#2/9#3/9#4/9#5/9#6/9#7/9#8/9#9/9#10/9#11/9#12/9#13/9#14/9#15/..."},
	}
	for _, tt := range tests {
		if got := proposalsString(tt.in); got != tt.want {
			t.Errorf("proposalsString = %q, want %q", got, tt.want)
		}
	}
}
