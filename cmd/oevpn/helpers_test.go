package main

import (
	"net/netip"
	"strings"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func fmtPrefixes(ps []netip.Prefix) string {
	var l []string
	for _, p := range ps {
		l = append(l, p.String())
	}
	return "[" + strings.Join(l, " ") + "]"
}
