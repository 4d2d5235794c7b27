package ike

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"
)

// Distinguished names as identities (ID_DER_ASN1_DN, RFC 7296 §3.5),
// written as in strongSwan: "C=CH, O=Example, CN=gw.example.org".

var dnAttrs = map[string]asn1.ObjectIdentifier{
	"C": {2, 5, 4, 6}, "ST": {2, 5, 4, 8}, "L": {2, 5, 4, 7}, "O": {2, 5, 4, 10}, "OU": {2, 5, 4, 11},
	"CN": {2, 5, 4, 3}, "SN": {2, 5, 4, 4}, "SERIALNUMBER": {2, 5, 4, 5}, "DC": {0, 9, 2342, 19200300, 100, 1, 25},
	"E": {1, 2, 840, 113549, 1, 9, 1}, "EMAILADDRESS": {1, 2, 840, 113549, 1, 9, 1},
}

// looksLikeDN reports whether s is written as a distinguished name.
func looksLikeDN(s string) bool {
	k, _, ok := strings.Cut(s, "=")
	_, known := dnAttrs[strings.ToUpper(strings.TrimSpace(k))]
	return ok && known
}

// parseDN encodes "K=V, K=V, …" as the DER of an RDNSequence, one attribute
// per RDN, in the order written. Commas inside values are not supported.
func parseDN(s string) ([]byte, error) {
	var rdns pkix.RDNSequence
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		oid, known := dnAttrs[strings.ToUpper(strings.TrimSpace(k))]
		if !ok || !known || strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("bad distinguished name part %q (want e.g. \"C=CH, O=Example, CN=gw\")", strings.TrimSpace(part))
		}
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: strings.TrimSpace(v)}})
	}
	return asn1.Marshal(rdns)
}

// sameDN compares two DER distinguished names by attribute types and values,
// not by encoding (a PrintableString equals the UTF8String of the same text).
func sameDN(a, b []byte) bool {
	var ra, rb pkix.RDNSequence
	if rest, err := asn1.Unmarshal(a, &ra); err != nil || len(rest) > 0 {
		return false
	}
	if rest, err := asn1.Unmarshal(b, &rb); err != nil || len(rest) > 0 {
		return false
	}
	if len(ra) != len(rb) {
		return false
	}
	for i := range ra {
		if len(ra[i]) != len(rb[i]) {
			return false
		}
		for j := range ra[i] {
			if !ra[i][j].Type.Equal(rb[i][j].Type) || fmt.Sprint(ra[i][j].Value) != fmt.Sprint(rb[i][j].Value) {
				return false
			}
		}
	}
	return true
}
