package ike

import (
	"fmt"
	"strconv"
	"strings"
)

// Suite is a negotiated set of IKE SA algorithms.
type Suite struct {
	Encr  Transform // ENCR with key length
	PRF   uint16
	Integ uint16 // AUTH_NONE with AEAD
	DH    uint16
}

// ChildSuite is a negotiated set of Child SA (ESP) algorithms.
type ChildSuite struct {
	Encr  Transform
	Integ uint16
	ESN   bool
	DH    uint16 // PFS group, DH_NONE without
}

// The keywords are strongSwan's (proposal_keywords_static.txt) for the
// algorithms oevpn implements, aliases included.
var encrNames = map[string]Transform{
	"aes128gcm16": {TransformENCR, ENCR_AES_GCM_16, 128}, "aes256gcm16": {TransformENCR, ENCR_AES_GCM_16, 256},
	"aes128gcm128": {TransformENCR, ENCR_AES_GCM_16, 128}, "aes256gcm128": {TransformENCR, ENCR_AES_GCM_16, 256},
	"aes128gcm": {TransformENCR, ENCR_AES_GCM_16, 128}, "aes256gcm": {TransformENCR, ENCR_AES_GCM_16, 256},
	"chacha20poly1305": {TransformENCR, ENCR_CHACHA20_POLY1305, 0},
	"aes":              {TransformENCR, ENCR_AES_CBC, 128}, "aes128": {TransformENCR, ENCR_AES_CBC, 128}, "aes256": {TransformENCR, ENCR_AES_CBC, 256},
}
var prfNames = map[string]uint16{"prfsha256": PRF_HMAC_SHA2_256, "prfsha384": PRF_HMAC_SHA2_384, "prfsha512": PRF_HMAC_SHA2_512}
var integNames = map[string]uint16{"sha256": AUTH_HMAC_SHA2_256_128, "sha384": AUTH_HMAC_SHA2_384_192, "sha512": AUTH_HMAC_SHA2_512_256,
	"sha2_256": AUTH_HMAC_SHA2_256_128, "sha2_384": AUTH_HMAC_SHA2_384_192, "sha2_512": AUTH_HMAC_SHA2_512_256}
var dhNames = map[string]uint16{"x25519": DH_CURVE25519, "curve25519": DH_CURVE25519, "ecp256": DH_ECP_256, "modp2048": DH_MODP_2048}

// prfOfInteg is the PRF strongSwan derives from an integrity algorithm
// when an IKE proposal names no PRF.
var prfOfInteg = map[uint16]uint16{AUTH_HMAC_SHA2_256_128: PRF_HMAC_SHA2_256, AUTH_HMAC_SHA2_384_192: PRF_HMAC_SHA2_384,
	AUTH_HMAC_SHA2_512_256: PRF_HMAC_SHA2_512}

// Proposal lists in strongSwan's syntax, e.g. "aes256gcm16-prfsha256-x25519".
// Each dash-separated list is one proposal; several proposals are separated
// by commas. In ESP proposals "esn" and "noesn" select sequence numbers and a
// DH group asks for PFS. The rules are strongSwan's (proposal.c): an IKE
// proposal without a PRF gets the PRFs of its integrity algorithms
// (aes128-sha384-ecp256 means PRF_HMAC_SHA2_384); an AEAD proposal drops
// integrity algorithms; a PRF in an ESP proposal is ignored; AEAD and
// classic ciphers do not mix. Where strongSwan would refuse, oevpn differs
// on purpose in two ways: an AEAD IKE proposal without a PRF gets
// PRF_HMAC_SHA2_256, and ESP with AES-CBC needs an integrity algorithm
// (strongSwan allows ESP without one).

// DefaultIKEProposals is what oevpn offers and accepts for IKE SAs when the
// configuration says nothing.
const DefaultIKEProposals = "aes256gcm16-aes128gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512-x25519-ecp256-modp2048," +
	"aes256-aes128-sha256-sha384-sha512-prfsha256-prfsha384-prfsha512-x25519-ecp256-modp2048"

// DefaultESPProposals is the default for Child SAs.
const DefaultESPProposals = "aes256gcm16-aes128gcm16-chacha20poly1305-esn-noesn,aes256-aes128-sha256-esn-noesn"

// ParseProposals parses a proposal list for protocol p (ProtoIKE or ProtoESP).
func ParseProposals(s string, p ProtocolID) ([]Proposal, error) {
	var props []Proposal
	for i, one := range strings.Split(s, ",") {
		prop := Proposal{Num: uint8(i + 1), Protocol: p}
		var hasEncr, hasPRF, hasDH, hasESN, hasInteg, aead bool
		for _, w := range strings.Split(strings.TrimSpace(one), "-") {
			w = strings.ToLower(w)
			switch {
			case encrNames[w].ID != 0:
				t := encrNames[w]
				if hasEncr && (t.ID == ENCR_AES_CBC) == aead {
					return nil, fmt.Errorf("proposal %q mixes AEAD and non-AEAD ciphers: make them separate proposals", one)
				}
				aead = t.ID != ENCR_AES_CBC
				hasEncr = true
				prop.Transforms = append(prop.Transforms, t)
			case prfNames[w] != 0:
				if p == ProtoIKE {
					hasPRF = true
					prop.Transforms = append(prop.Transforms, Transform{Type: TransformPRF, ID: prfNames[w]})
				}
			case integNames[w] != 0:
				hasInteg = true
				prop.Transforms = append(prop.Transforms, Transform{Type: TransformINTEG, ID: integNames[w]})
			case dhNames[w] != 0:
				hasDH = true
				prop.Transforms = append(prop.Transforms, Transform{Type: TransformDH, ID: dhNames[w]})
			case (w == "esn" || w == "noesn") && p == ProtoESP:
				hasESN = true
				id := uint16(ESN_NO)
				if w == "esn" {
					id = ESN_YES
				}
				prop.Transforms = append(prop.Transforms, Transform{Type: TransformESN, ID: id})
			default:
				return nil, fmt.Errorf("unknown algorithm %q in proposal %q", w, one)
			}
		}
		if !hasEncr {
			return nil, fmt.Errorf("proposal %q has no cipher", one)
		}
		if !aead && !hasInteg {
			return nil, fmt.Errorf("proposal %q: AES-CBC needs an integrity algorithm (e.g. sha256)", one)
		}
		if aead && hasInteg {
			prop.Transforms = withoutType(prop.Transforms, TransformINTEG)
		}
		if p == ProtoESP && !aead {
			for _, t := range prop.Transforms {
				if t.Type == TransformINTEG && t.ID != AUTH_HMAC_SHA2_256_128 {
					return nil, fmt.Errorf("proposal %q: ESP with AES-CBC supports only sha256 (HMAC-SHA2-256-128)", one)
				}
			}
		}
		if p == ProtoIKE {
			if !hasDH {
				return nil, fmt.Errorf("proposal %q has no DH group", one)
			}
			if !hasPRF && aead {
				prop.Transforms = append(prop.Transforms, Transform{Type: TransformPRF, ID: PRF_HMAC_SHA2_256})
			}
			if !hasPRF && !aead {
				for _, t := range prop.Transforms {
					if t.Type == TransformINTEG {
						prf := Transform{Type: TransformPRF, ID: prfOfInteg[t.ID]}
						if !offers(&prop, prf) {
							prop.Transforms = append(prop.Transforms, prf)
						}
					}
				}
			}
		}
		if p == ProtoESP && !hasESN {
			prop.Transforms = append(prop.Transforms, Transform{Type: TransformESN, ID: ESN_NO})
		}
		props = append(props, prop)
	}
	return props, nil
}

// withoutType returns ts without the transforms of type typ.
func withoutType(ts []Transform, typ TransformType) []Transform {
	var out []Transform
	for _, t := range ts {
		if t.Type != typ {
			out = append(out, t)
		}
	}
	return out
}

// proposalsString formats proposals in strongSwan's notation, e.g.
// "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519, AES_CBC-128/...", for logs.
func proposalsString(props []Proposal) string {
	const most = 8 // the peer's proposals may be many
	var out []string
	for i, p := range props {
		if i == most {
			out = append(out, fmt.Sprintf("and %d more", len(props)-most))
			break
		}
		var parts []string
		for j, t := range p.Transforms {
			if j == 2*most {
				parts = append(parts, "...")
				break
			}
			name := ""
			switch t.Type {
			case TransformENCR:
				name = encrString(t)
			case TransformPRF:
				name = prfWire[t.ID]
			case TransformINTEG:
				name = integWire[t.ID]
			case TransformDH:
				name = dhWire[t.ID]
			case TransformESN:
				name = "NO_EXT_SEQ"
				if t.ID == ESN_YES {
					name = "ESN"
				}
			}
			if name == "" || name == "-"+strconv.Itoa(int(t.KeyLen)) {
				name = fmt.Sprintf("%d#%d", t.Type, t.ID) // not one we know
			}
			parts = append(parts, name)
		}
		out = append(out, strings.Join(parts, "/"))
	}
	return strings.Join(out, ", ")
}

// contains reports whether prop offers t.
func offers(prop *Proposal, t Transform) bool {
	for _, o := range prop.Transforms {
		if o == t {
			return true
		}
	}
	return false
}

// choose picks, for a responder, the first of the peer's proposals that ours
// accept, keeping in each transform type the peer's first acceptable choice.
// The result has one transform per type. For ESP, a DH group we propose is
// required (PFS) unless the exchange is IKE_AUTH, which has no KE (§1.2):
// choose with pfs false there.
func choose(theirs, ours []Proposal, proto ProtocolID) (*Proposal, error) {
	return chooseDH(theirs, ours, proto, true)
}

func chooseDH(theirs, ours []Proposal, proto ProtocolID, pfs bool) (*Proposal, error) {
	for _, tp := range theirs {
		if tp.Protocol != proto {
			continue
		}
		for _, op := range ours {
			if !pfs {
				op.Transforms = withoutDH(op.Transforms)
			}
			if got, ok := intersect(&tp, &op); ok {
				got.Num, got.SPI = tp.Num, tp.SPI
				return got, nil
			}
		}
	}
	return nil, NO_PROPOSAL_CHOSEN
}

func intersect(theirs, ours *Proposal) (*Proposal, bool) {
	out := &Proposal{Protocol: theirs.Protocol}
	seen := map[TransformType]bool{}
	for _, t := range theirs.Transforms {
		if seen[t.Type] || !offers(ours, t) {
			continue
		}
		seen[t.Type] = true
		out.Transforms = append(out.Transforms, t)
	}
	// Every type the peer proposed must be chosen, and every type we need
	// must be there.
	for _, t := range theirs.Transforms {
		if !seen[t.Type] {
			if t.Type == TransformDH && t.ID == DH_NONE {
				continue
			}
			return nil, false
		}
	}
	for _, t := range ours.Transforms {
		if !seen[t.Type] {
			return nil, false
		}
	}
	return out, true
}

// suiteOf reads a chosen IKE proposal.
func suiteOf(p *Proposal) (Suite, error) {
	var s Suite
	for _, t := range p.Transforms {
		switch t.Type {
		case TransformENCR:
			s.Encr = t
		case TransformPRF:
			s.PRF = t.ID
		case TransformINTEG:
			s.Integ = t.ID
		case TransformDH:
			s.DH = t.ID
		}
	}
	if s.Encr.ID == 0 || s.PRF == 0 || s.DH == 0 {
		return s, fmt.Errorf("%w: incomplete IKE proposal", ErrMalformed)
	}
	return s, nil
}

// childSuiteOf reads a chosen ESP proposal.
func childSuiteOf(p *Proposal) (ChildSuite, error) {
	var s ChildSuite
	for _, t := range p.Transforms {
		switch t.Type {
		case TransformENCR:
			s.Encr = t
		case TransformINTEG:
			s.Integ = t.ID
		case TransformESN:
			s.ESN = t.ID == ESN_YES
		case TransformDH:
			s.DH = t.ID
		}
	}
	if s.Encr.ID == 0 {
		return s, fmt.Errorf("%w: ESP proposal without a cipher", ErrMalformed)
	}
	return s, nil
}

// dhGroups lists the DH groups of proposals in order of preference.
func dhGroups(props []Proposal) []uint16 {
	var l []uint16
	seen := map[uint16]bool{}
	for _, p := range props {
		for _, t := range p.Transforms {
			if t.Type == TransformDH && t.ID != DH_NONE && !seen[t.ID] {
				seen[t.ID] = true
				l = append(l, t.ID)
			}
		}
	}
	return l
}

var encrWire = map[uint16]string{ENCR_AES_GCM_16: "AES_GCM_16", ENCR_CHACHA20_POLY1305: "CHACHA20_POLY1305", ENCR_AES_CBC: "AES_CBC"}
var prfWire = map[uint16]string{PRF_HMAC_SHA2_256: "PRF_HMAC_SHA2_256", PRF_HMAC_SHA2_384: "PRF_HMAC_SHA2_384", PRF_HMAC_SHA2_512: "PRF_HMAC_SHA2_512"}
var integWire = map[uint16]string{AUTH_HMAC_SHA2_256_128: "HMAC_SHA2_256_128", AUTH_HMAC_SHA2_384_192: "HMAC_SHA2_384_192", AUTH_HMAC_SHA2_512_256: "HMAC_SHA2_512_256"}
var dhWire = map[uint16]string{DH_CURVE25519: "CURVE_25519", DH_ECP_256: "ECP_256", DH_MODP_2048: "MODP_2048"}

func encrString(t Transform) string {
	s := encrWire[t.ID]
	if t.KeyLen != 0 {
		s += "-" + strconv.Itoa(int(t.KeyLen))
	}
	return s
}

// String names the algorithms as strongSwan does, e.g.
// "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519".
func (s Suite) String() string {
	parts := []string{encrString(s.Encr)}
	if s.Integ != 0 {
		parts = append(parts, integWire[s.Integ])
	}
	return strings.Join(append(parts, prfWire[s.PRF], dhWire[s.DH]), "/")
}

// String names the ESP algorithms, e.g. "AES_GCM_16-256/ESN".
func (s ChildSuite) String() string {
	parts := []string{encrString(s.Encr)}
	if s.Integ != 0 {
		parts = append(parts, integWire[s.Integ])
	}
	if s.DH != 0 {
		parts = append(parts, dhWire[s.DH])
	}
	if s.ESN {
		parts = append(parts, "ESN")
	}
	return strings.Join(parts, "/")
}
