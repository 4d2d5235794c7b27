package tunnel

import (
	"encoding/binary"
	"net/netip"
)

// The byte layouts of macOS's address ioctls, built here without build
// tags so that they are tested on every platform (ostun_darwin.go uses
// them). macOS runs little-endian (arm64, amd64), 64-bit.

// XNU's address families (sys/socket.h): AF_INET6 is 30 there.
const (
	darwinAFInet  = 2
	darwinAFInet6 = 30
)

// Sizes of XNU's structs for 64-bit processes (netinet/in_var.h,
// netinet6/in6_var.h).
const (
	sizeofInAliasreq  = 64  // name[16], addr, dstaddr, mask: sockaddr_in[16] each
	sizeofIn6Aliasreq = 128 // name[16], addr, dstaddr, prefixmask: sockaddr_in6[28] each, flags, lifetime[24]
	sizeofIn6Ifreq    = 288 // name[16], a union whose largest member is struct icmp6_ifstat[272]
)

// iow is the BSD _IOW(group, num, size) ioctl request number.
func iow(group byte, num uint8, size uintptr) uintptr {
	const iocIn = 0x80000000
	return iocIn | (size&0x1fff)<<16 | uintptr(group)<<8 | uintptr(num)
}

// The address ioctls (sys/sockio.h, netinet6/in6_var.h).
var (
	darwinSIOCAIFADDR    = iow('i', 26, sizeofInAliasreq)
	darwinSIOCDIFADDR    = iow('i', 25, 32) // struct ifreq
	darwinSIOCAIFADDRIn6 = iow('i', 26, sizeofIn6Aliasreq)
	darwinSIOCDIFADDRIn6 = iow('i', 25, sizeofIn6Ifreq)
)

// darwinND6InfiniteLife is ND6_INFINITE_LIFETIME.
const darwinND6InfiniteLife = 0xffffffff

// putSockaddrIn writes a sockaddr_in for a (IPv4) at b[:16].
func putSockaddrIn(b []byte, a netip.Addr) {
	b[0], b[1] = 16, darwinAFInet
	a4 := a.As4()
	copy(b[4:8], a4[:])
}

// putSockaddrIn6 writes a sockaddr_in6 for a (IPv6) at b[:28].
func putSockaddrIn6(b []byte, a netip.Addr) {
	b[0], b[1] = 28, darwinAFInet6
	a16 := a.As16()
	copy(b[8:24], a16[:])
}

// prefixMask returns the netmask of p as an address of p's family.
func prefixMask(p netip.Prefix) netip.Addr {
	var m [16]byte
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	if p.Addr().Is4() {
		return netip.AddrFrom4([4]byte(m[:4]))
	}
	return netip.AddrFrom16(m)
}

// inAliasreq returns the struct in_aliasreq that SIOCAIFADDR takes to
// give device name the IPv4 address p, point-to-point with itself as the
// destination, as wg-quick does (ifconfig utunN inet A/n A alias).
func inAliasreq(name string, p netip.Prefix) [sizeofInAliasreq]byte {
	var b [sizeofInAliasreq]byte
	copy(b[:15], name)
	putSockaddrIn(b[16:], p.Addr())
	putSockaddrIn(b[32:], p.Addr())
	putSockaddrIn(b[48:], prefixMask(p))
	return b
}

// in6Aliasreq returns the struct in6_aliasreq that SIOCAIFADDR_IN6 takes
// to give device name the IPv6 address p, with infinite lifetimes as
// ifconfig gives them.
func in6Aliasreq(name string, p netip.Prefix) [sizeofIn6Aliasreq]byte {
	var b [sizeofIn6Aliasreq]byte
	copy(b[:15], name)
	putSockaddrIn6(b[16:], p.Addr())
	// ifra_dstaddr (44) stays empty, ifra_flags (100) 0,
	// ifra_lifetime.ia6t_expire (104) and ia6t_preferred (112) 0.
	putSockaddrIn6(b[72:], prefixMask(p))
	binary.LittleEndian.PutUint32(b[120:], darwinND6InfiniteLife) // ia6t_vltime
	binary.LittleEndian.PutUint32(b[124:], darwinND6InfiniteLife) // ia6t_pltime
	return b
}

// ifreqAddr returns the struct ifreq (IPv4) or in6_ifreq (IPv6) naming
// address a of device name, for SIOCDIFADDR and SIOCDIFADDR_IN6.
func ifreqAddr(name string, a netip.Addr) []byte {
	if a.Is4() {
		b := make([]byte, 32)
		copy(b[:15], name)
		putSockaddrIn(b[16:], a)
		return b
	}
	b := make([]byte, sizeofIn6Ifreq)
	copy(b[:15], name)
	putSockaddrIn6(b[16:], a)
	return b
}
