package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/route"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// The address family in hostroutes_layout.go must be the kernel's (the
// ioctl numbers are checked by TestDarwinLayouts).
var (
	_ [unix.AF_INET6 - darwinAFInet6]struct{}
	_ [darwinAFInet6 - unix.AF_INET6]struct{}
)

// darwinNet configures a utun device: addresses by ioctl on an inet
// socket (what ifconfig does), routes by messages on a route socket (what
// route does), routes into the device as route's -interface makes them.
type darwinNet struct {
	name  string
	index int
	seq   atomic.Int32
}

func newHostNet(_ tun.Device, name string) (hostNet, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	return &darwinNet{name: name, index: ifi.Index}, nil
}

// ioctl makes request req with arg on a datagram socket of a's family.
func (n *darwinNet) ioctl(a netip.Addr, req uintptr, arg []byte) error {
	fam := unix.AF_INET
	if a.Is6() {
		fam = unix.AF_INET6
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&arg[0]))); e != 0 {
		return e
	}
	return nil
}

// up sets IFF_UP on the device, as ifconfig utunN up does: utun devices
// are created down.
func (n *darwinNet) up() error {
	ifr := make([]byte, 32) // struct ifreq: name[16], ifru_flags (short) at 16
	copy(ifr[:15], n.name)
	any4 := netip.IPv4Unspecified()
	if err := n.ioctl(any4, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(ifr[16:], binary.LittleEndian.Uint16(ifr[16:])|unix.IFF_UP)
	return n.ioctl(any4, unix.SIOCSIFFLAGS, ifr)
}

func (n *darwinNet) addAddress(p netip.Prefix) error {
	if p.Addr().Is4() {
		req := inAliasreq(n.name, p)
		return n.ioctl(p.Addr(), darwinSIOCAIFADDR, req[:])
	}
	req := in6Aliasreq(n.name, p)
	return n.ioctl(p.Addr(), darwinSIOCAIFADDRIn6, req[:])
}

func (n *darwinNet) delAddress(p netip.Prefix) error {
	req := darwinSIOCDIFADDR
	if p.Addr().Is6() {
		req = darwinSIOCDIFADDRIn6
	}
	err := n.ioctl(p.Addr(), req, ifreqAddr(n.name, p.Addr()))
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("%v: %w", err, errNotFound)
	}
	return err
}

// sockaddr returns a as a route message address.
func sockaddr(a netip.Addr) route.Addr {
	if a.Is4() {
		return &route.Inet4Addr{IP: a.As4()}
	}
	return &route.Inet6Addr{IP: a.As16()}
}

// routeMessage returns the message of type typ for p into the device.
func (n *darwinNet) routeMessage(typ int, p netip.Prefix, src netip.Addr) *route.RouteMessage {
	addrs := make([]route.Addr, unix.RTAX_IFA+1)
	addrs[unix.RTAX_DST] = sockaddr(p.Addr())
	addrs[unix.RTAX_GATEWAY] = &route.LinkAddr{Index: n.index, Name: n.name}
	flags := unix.RTF_UP | unix.RTF_STATIC
	if p.IsSingleIP() {
		flags |= unix.RTF_HOST
	} else {
		addrs[unix.RTAX_NETMASK] = sockaddr(prefixMask(p))
	}
	if src.IsValid() {
		addrs[unix.RTAX_IFA] = sockaddr(src)
	}
	return &route.RouteMessage{Version: unix.RTM_VERSION, Type: typ, Flags: flags,
		ID: uintptr(os.Getpid()), Seq: int(n.seq.Add(1)), Addrs: addrs}
}

// write sends m on a new route socket; the kernel answers a failed
// request with the write's error.
func (n *darwinNet) write(m *route.RouteMessage) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_ROUTE, unix.SOCK_RAW, unix.AF_UNSPEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, b)
	return err
}

func (n *darwinNet) addRoute(p netip.Prefix, src netip.Addr) error {
	err := n.write(n.routeMessage(unix.RTM_ADD, p, src))
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%v: %w", err, errExists)
	}
	return err
}

func (n *darwinNet) delRoute(p netip.Prefix) error {
	err := n.write(n.routeMessage(unix.RTM_DELETE, p, netip.Addr{}))
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%v: %w", err, errNotFound)
	}
	return err
}

// lookup asks the kernel for its route to dst (RTM_GET, as route get
// does) and reads the interface from the answer.
func (n *darwinNet) lookup(dst netip.Addr) (bool, string, error) {
	addrs := make([]route.Addr, unix.RTAX_IFP+1)
	addrs[unix.RTAX_DST] = sockaddr(dst)
	addrs[unix.RTAX_IFP] = &route.LinkAddr{}
	seq := int(n.seq.Add(1))
	req := &route.RouteMessage{Version: unix.RTM_VERSION, Type: unix.RTM_GET,
		Flags: unix.RTF_UP | unix.RTF_HOST, ID: uintptr(os.Getpid()), Seq: seq, Addrs: addrs}
	b, err := req.Marshal()
	if err != nil {
		return false, "", err
	}
	fd, err := unix.Socket(unix.AF_ROUTE, unix.SOCK_RAW, unix.AF_UNSPEC)
	if err != nil {
		return false, "", err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return false, "", err
	}
	if _, err := unix.Write(fd, b); err != nil {
		return false, "", err // ESRCH: no route
	}
	buf := make([]byte, 2048)
	for {
		k, err := unix.Read(fd, buf)
		if err != nil {
			return false, "", fmt.Errorf("reading the route socket: %w", err)
		}
		msgs, err := route.ParseRIB(route.RIBTypeRoute, buf[:k])
		if err != nil {
			continue // another process's message we cannot parse
		}
		for _, m := range msgs {
			rm, ok := m.(*route.RouteMessage)
			if !ok || rm.Type != unix.RTM_GET || rm.Seq != seq || rm.ID != uintptr(os.Getpid()) {
				continue
			}
			if rm.Err != nil {
				return false, "", rm.Err
			}
			if rm.Flags&(unix.RTF_REJECT|unix.RTF_BLACKHOLE) != 0 {
				return false, "a reject route", nil
			}
			index := rm.Index
			if la, ok := rm.Addrs[unix.RTAX_IFP].(*route.LinkAddr); ok && index == 0 {
				index = la.Index
			}
			if index == n.index {
				return true, n.name, nil
			}
			if ifi, err := net.InterfaceByIndex(index); err == nil {
				return false, ifi.Name, nil
			}
			return false, fmt.Sprintf("interface %d", index), nil
		}
	}
}
