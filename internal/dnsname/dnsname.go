// Package dnsname holds what the DNSSEC validator and the signed test and
// demo zones must agree on about names: their canonical order (RFC 4034
// §6.1), by which NSEC records chain and denials are proven.
package dnsname

import (
	"bytes"

	"github.com/miekg/dns"
)

// Compare orders names as RFC 4034 §6.1 does: by their labels from the
// right, as lower-case octet strings. It returns a negative number when a
// sorts before b, 0 when they are the same name, and a positive number
// otherwise.
func Compare(a, b string) int {
	la, lb := wireLabels(a), wireLabels(b)
	for i, j := len(la)-1, len(lb)-1; i >= 0 && j >= 0; i, j = i-1, j-1 {
		if c := bytes.Compare(la[i], lb[j]); c != 0 {
			return c
		}
	}
	return len(la) - len(lb)
}

// wireLabels returns the labels of name as on the wire, in lower case.
func wireLabels(name string) [][]byte {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return nil
	}
	var labels [][]byte
	for i := 0; i < n && buf[i] != 0; i += int(buf[i]) + 1 {
		if i+1+int(buf[i]) > n {
			return nil
		}
		labels = append(labels, bytes.ToLower(buf[i+1:i+1+int(buf[i])]))
	}
	return labels
}
