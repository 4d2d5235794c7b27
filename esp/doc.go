// Package esp implements the ESP datapath of oevpn: RFC 4303 tunnel-mode
// security associations with in-place encryption and decryption, the RFC 6479
// anti-replay window with 64-bit extended sequence numbers, lifetimes, the
// inbound SPI table, and the RFC 3948 UDP-encapsulation demultiplexer for
// port 4500.
//
// The package knows nothing about IKE, discovery or devices; the tunnel
// package installs SAs created here and calls Seal and Open once per packet.
// Neither allocates, and neither takes a lock that the control plane holds.
package esp
