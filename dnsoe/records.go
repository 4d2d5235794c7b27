package dnsoe

import (
	"crypto"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// Gateway is a security gateway that DNS names for a destination: the peer
// to run IKE with, and how to know it.
type Gateway struct {
	// Precedence orders gateways: lower is preferred (RFC 4025 §2.2,
	// draft §7.2).
	Precedence int
	// Addr is the gateway's address. For an IPSECKEY record with no
	// gateway it is the destination itself; invalid when the gateway is
	// known only by name.
	Addr netip.Addr
	// Name is the gateway's FQDN identity, when the record gives one.
	Name string
	// Key is the gateway's public key; nil when it must be looked up (a
	// KEY or IPSECKEY record of Addr or Name).
	Key crypto.PublicKey
	// Source is the kind of record: "IPSECKEY", "TXT", "KEY" or "AutoSEC".
	Source string
	// Proposals, for AutoSEC, are the IKE proposals in the peer's order of
	// preference (ike.ParseProposals syntax); empty means our defaults.
	Proposals string
}

// FromIPSECKEY reads an IPSECKEY record (RFC 4025) published for dest.
func FromIPSECKEY(rr *dns.IPSECKEY, dest netip.Addr) (Gateway, error) {
	g := Gateway{Precedence: int(rr.Precedence), Source: "IPSECKEY"}
	switch rr.GatewayType {
	case 0:
		g.Addr = dest
	case 1, 2:
		a, ok := netip.AddrFromSlice(rr.GatewayAddr)
		if !ok || (rr.GatewayType == 1) != a.Unmap().Is4() {
			return g, fmt.Errorf("%w: IPSECKEY gateway address %v for gateway type %d", ErrRecord, rr.GatewayAddr, rr.GatewayType)
		}
		g.Addr = a.Unmap()
	case 3:
		if _, ok := dns.IsDomainName(rr.GatewayHost); !ok || rr.GatewayHost == "." {
			return g, fmt.Errorf("%w: IPSECKEY gateway name %q", ErrRecord, rr.GatewayHost)
		}
		g.Name = strings.TrimSuffix(rr.GatewayHost, ".")
	default:
		return g, fmt.Errorf("%w: IPSECKEY gateway type %d", ErrRecord, rr.GatewayType)
	}
	if rr.Algorithm == IPSECKEYNone {
		return g, nil
	}
	key, err := decodeB64(rr.PublicKey)
	if err != nil {
		return g, err
	}
	if g.Key, err = KeyFromIPSECKEY(rr.Algorithm, key); err != nil {
		return g, err
	}
	return g, nil
}

// txtPrefix starts a TXT delegation record (draft §7.2).
const txtPrefix = "X-IPsec-Server("

// FromTXT reads a TXT delegation record, "X-IPsec-Server(P)=A.B.C.D KEY" or
// "X-IPsec-Server(P)=@FQDN KEY", whose KEY (an RSA key in the format of
// RFC 3110, base64) may be absent.
func FromTXT(txt string) (Gateway, error) {
	g := Gateway{Source: "TXT"}
	rest, ok := strings.CutPrefix(strings.TrimSpace(txt), txtPrefix)
	if !ok {
		return g, fmt.Errorf("%w: not an X-IPsec-Server record", ErrRecord)
	}
	prec, rest, ok := strings.Cut(rest, ")=")
	p, err := strconv.Atoi(prec)
	if !ok || err != nil || p < 0 || p > 255 {
		return g, fmt.Errorf("%w: X-IPsec-Server precedence %q", ErrRecord, prec)
	}
	g.Precedence = p
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return g, fmt.Errorf("%w: X-IPsec-Server without a gateway", ErrRecord)
	}
	if name, isName := strings.CutPrefix(fields[0], "@"); isName {
		g.Name = strings.TrimSuffix(name, ".")
		if _, ok := dns.IsDomainName(name); !ok || g.Name == "" {
			return g, fmt.Errorf("%w: X-IPsec-Server gateway name %q", ErrRecord, name)
		}
	} else {
		a, err := netip.ParseAddr(fields[0])
		if err != nil {
			return g, fmt.Errorf("%w: X-IPsec-Server gateway %q", ErrRecord, fields[0])
		}
		g.Addr = a.Unmap()
	}
	if len(fields) > 1 {
		key, err := decodeB64(strings.Join(fields[1:], ""))
		if err != nil {
			return g, err
		}
		if g.Key, err = decodeRFC3110(key); err != nil {
			return g, err
		}
	}
	return g, nil
}

// FromKEY reads a KEY record (RFC 2535 §3) of a gateway.
func FromKEY(rr *dns.KEY) (crypto.PublicKey, error) {
	key, err := decodeB64(rr.PublicKey)
	if err != nil {
		return nil, err
	}
	return KeyFromKEY(rr.Protocol, rr.Algorithm, key)
}

// FromKEYRecord reads a KEY record published for dest itself: the IP
// AutoSEC text (draft-kechel-ip-autosec §2.1, the record's whole RDATA as
// text, since a KEY RR has no text field: publish it as "KEY \\# LEN HEX"),
// or a plain KEY record with protocol IPsec (draft-richardson §7.3).
func FromKEYRecord(rr *dns.KEY, dest netip.Addr) (Gateway, error) {
	key, err := decodeB64(rr.PublicKey)
	if err != nil {
		return Gateway{}, err
	}
	raw := append([]byte{byte(rr.Flags >> 8), byte(rr.Flags), rr.Protocol, rr.Algorithm}, key...)
	if a, err := ParseAutoSEC(string(raw)); err == nil {
		return Gateway{Precedence: 10, Addr: dest, Key: a.Key, Source: "AutoSEC", Proposals: a.Proposals}, nil
	}
	k, err := KeyFromKEY(rr.Protocol, rr.Algorithm, key)
	if err != nil {
		return Gateway{}, err
	}
	return Gateway{Precedence: 10, Addr: dest, Key: k, Source: "KEY"}, nil
}

// Order sorts gateways by precedence, lowest first; gateways of equal
// precedence are shuffled, so that multihomed destinations spread over
// their gateways and a failed one is followed by the others (draft §10).
func Order(gws []Gateway, r *rand.Rand) []Gateway {
	out := slices.Clone(gws)
	if r == nil {
		r = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, b Gateway) int { return a.Precedence - b.Precedence })
	return out
}

// ReverseName returns the reverse-zone name of an address
// (in-addr.arpa. or ip6.arpa.).
func ReverseName(a netip.Addr) string {
	name, _ := dns.ReverseAddr(a.Unmap().String())
	return name
}
