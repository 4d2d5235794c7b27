// Package dnsoe finds opportunistic IPsec peers in DNS: the IPSECKEY
// (RFC 4025), TXT delegation ("X-IPsec-Server", draft-richardson-ipsec-
// opportunistic §7.2) and KEY records (RFC 2535, protocol IPsec) of a
// destination's reverse zone, and the IP AutoSEC KEY text format
// (draft-kechel-ip-autosec). It also writes those records for publishing.
//
// The record decoders take hostile input: they return errors, never panic,
// and each has a fuzz target.
package dnsoe
