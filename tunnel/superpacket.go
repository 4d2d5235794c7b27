package tunnel

import "github.com/oevpn/oevpn/esp"

// superPacketSize returns the largest TCP super-packet (TSO/GSO) a device
// of mtu should take from its stack: one whose segments, each sealed with
// an AEAD transform (the defaults), still fit in one UDP GSO datagram. At
// the stack's 64 KiB a super-packet at MTU 1400 is 46 or more segments,
// more than a datagram holds, and it left as a full datagram and a lone
// segment behind it: a second datagram through the kernel at both ends,
// and often a second device write at the peer.
//
// It is cut for Linux's TCP, which keeps at least 256 octets of the size
// for headers (MAX_TCP_HEADER) and sends whole MSS: the segments fit for
// every MSS down to IPv6's with timestamps. Where 64 KiB already fits
// (large MTUs) it stays. A stack that cuts otherwise only loses the gain:
// a super-packet that does not fit leaves as two datagrams, as before.
func superPacketSize(mtu int) int {
	const (
		maxUDP   = 1<<16 - 1 - 20 - 8 // UDP payload of an IPv4 datagram
		maxSegs  = 64                 // segments per UDP GSO send (the kernel's limit)
		minHdr   = 40 + 20 + 12       // IPv6, TCP and its timestamps: the smallest MSS
		reserved = 256                // of the size, kept by Linux's TCP for headers
		stackMax = maxPacket + 1      // the stacks' default (Linux, gVisor)
	)
	overhead := esp.AESGCM256.Overhead() // as ChaCha20-Poly1305's and AES-GCM-128's
	if mtu <= minHdr || mtu+overhead > maxUDP {
		return stackMax
	}
	n := min(maxSegs, maxUDP/(mtu+overhead))
	return min(stackMax, (n+1)*(mtu-minHdr)+reserved)
}
