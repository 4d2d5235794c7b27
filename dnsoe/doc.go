// Package dnsoe finds opportunistic IPsec peers in DNS: the IPSECKEY
// (RFC 4025), TXT delegation ("X-IPsec-Server", draft-richardson-ipsec-
// opportunistic §7.2) and KEY records (RFC 2535, protocol IPsec) of a
// destination's reverse zone, and the IP AutoSEC KEY text format
// (draft-kechel-ip-autosec). It also writes those records for publishing.
//
// Its Resolver trusts a validating resolver's AD bit, or validates DNSSEC
// itself from trust anchors: records, and denials of existence with NSEC
// or NSEC3, each in the zone it finds by walking down from an anchor. An
// answer that fails validation in a signed zone is ErrBogus, never "no
// record".
//
// The record decoders take hostile input: they return errors, never panic,
// and each has a fuzz target.
package dnsoe
