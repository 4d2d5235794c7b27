// Package policy decides what happens to traffic and to peers, in one place
// for every path that asks:
//
//   - traffic selectors (RFC 7296 §3.13.1): what an SA covers, and the
//     match of a packet against them on the datapath (selector.go);
//   - connection classes per destination prefix (block, clear,
//     private-or-clear, clear-or-private, private) with port exceptions,
//     and the addresses opportunism must never use (class.go);
//   - the lifespans of opportunistic tunnels (opportunistic.go);
//   - the decision on an authenticated configured peer: which identities
//     it may prove, and whether AUTH_NULL is enough (peers.go);
//   - the AutoVPN trust store of peer gateways' certificates, with its
//     one decision, TrustStore.Accept (truststore.go).
//
// The package keeps no network state and does no I/O except reading and
// writing the trust store file.
package policy
