package dnsoe

import (
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Records returns the zone-file lines that publish pub for target, an
// address (published in its reverse zone) or a domain name: an IPSECKEY
// record (RFC 4025), a KEY record (protocol IPsec) and, for RSA keys, the
// TXT delegation record of the FreeS/WAN draft. gateway, if set, is the
// security gateway's address or "@FQDN"; otherwise the target is its own
// gateway.
func Records(target string, gateway string, precedence int, pub crypto.PublicKey) ([]string, error) {
	if precedence < 0 || precedence > 255 {
		return nil, fmt.Errorf("precedence %d is outside 0..255", precedence)
	}
	owner := dns.Fqdn(target)
	var self netip.Addr
	if a, err := netip.ParseAddr(target); err == nil {
		self = a.Unmap()
		owner = ReverseName(self)
	} else if _, ok := dns.IsDomainName(target); !ok {
		return nil, fmt.Errorf("%q is neither an address nor a domain name", target)
	}
	gwType, gwField, txtGW := 0, ".", ""
	switch {
	case gateway == "":
		if self.IsValid() {
			txtGW = self.String()
		}
	case strings.HasPrefix(gateway, "@"):
		name := strings.TrimPrefix(gateway, "@")
		if _, ok := dns.IsDomainName(name); !ok {
			return nil, fmt.Errorf("gateway %q is not a domain name", gateway)
		}
		gwType, gwField, txtGW = 3, dns.Fqdn(name), "@"+strings.TrimSuffix(name, ".")
	default:
		a, err := netip.ParseAddr(gateway)
		if err != nil {
			return nil, fmt.Errorf("gateway %q is neither an address nor @FQDN", gateway)
		}
		gwType, gwField, txtGW = 1, a.Unmap().String(), a.Unmap().String()
		if a.Unmap().Is6() {
			gwType = 2
		}
	}
	alg, key, err := IPSECKEYOf(pub)
	if err != nil {
		return nil, err
	}
	b64 := base64.StdEncoding.EncodeToString
	lines := []string{fmt.Sprintf("%s 3600 IN IPSECKEY %d %d %d %s %s", owner, precedence, gwType, alg, gwField, b64(key))}
	kalg, kkey, err := KEYOf(pub)
	if err != nil {
		return nil, err
	}
	lines = append(lines, fmt.Sprintf("%s 3600 IN KEY %d %d %d %s", owner, keyFlagsIPsec, keyProtocolIPsec, kalg, b64(kkey)))
	if rk, ok := pub.(*rsa.PublicKey); ok && txtGW != "" {
		// A TXT character-string holds at most 255 octets: the key goes
		// in strings of its own, which readers join (RFC 7208 §3.3 style).
		key := b64(encodeRFC3110(rk))
		parts := []string{fmt.Sprintf(`"%s%d)=%s "`, txtPrefix, precedence, txtGW)}
		for len(key) > 0 {
			n := min(len(key), 200)
			parts = append(parts, `"`+key[:n]+`"`)
			key = key[n:]
		}
		lines = append(lines, fmt.Sprintf("%s 3600 IN TXT %s", owner, strings.Join(parts, " ")))
	}
	return lines, nil
}
