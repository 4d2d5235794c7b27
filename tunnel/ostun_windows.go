package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// winNet configures a Wintun device through the IP Helper API, as
// wireguard-windows does (winipcfg): unicast address entries, and on-link
// routes (no next hop) on the device's LUID.
type winNet struct {
	luid winipcfg.LUID
}

func newHostNet(dev tun.Device, _ string) (hostNet, error) {
	nt, ok := dev.(*tun.NativeTun)
	if !ok {
		return nil, fmt.Errorf("%T is not a Wintun device", dev)
	}
	return &winNet{luid: winipcfg.LUID(nt.LUID())}, nil
}

// mapErr maps the IP Helper API's codes to errExists and errNotFound.
func mapErr(err error) error {
	switch {
	case errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS):
		return fmt.Errorf("%v: %w", err, errExists)
	case errors.Is(err, windows.ERROR_NOT_FOUND), errors.Is(err, windows.ERROR_FILE_NOT_FOUND):
		return fmt.Errorf("%v: %w", err, errNotFound)
	}
	return err
}

// up does nothing: Wintun adapters are up from their creation.
func (n *winNet) up() error { return nil }

func (n *winNet) addAddress(p netip.Prefix) error { return mapErr(n.luid.AddIPAddress(p)) }

func (n *winNet) delAddress(p netip.Prefix) error { return mapErr(n.luid.DeleteIPAddress(p)) }

// onLink is the next hop of a route into the device: none.
func onLink(p netip.Prefix) netip.Addr {
	if p.Addr().Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

// addRoute adds an on-link route with metric 0. Windows has no preferred
// source per route: the source is the device's address of the family
// (hostRouting passes src only when it is one).
func (n *winNet) addRoute(p netip.Prefix, _ netip.Addr) error {
	return mapErr(n.luid.AddRoute(p, onLink(p), 0))
}

func (n *winNet) delRoute(p netip.Prefix) error {
	return mapErr(n.luid.DeleteRoute(p, onLink(p)))
}

var procGetBestRoute2 = windows.NewLazySystemDLL("iphlpapi.dll").NewProc("GetBestRoute2")

// lookup asks for the route Windows would take to dst (GetBestRoute2,
// which weighs prefix length and route plus interface metric).
func (n *winNet) lookup(dst netip.Addr) (bool, string, error) {
	var to, src winipcfg.RawSockaddrInet
	if err := to.SetAddr(dst); err != nil {
		return false, "", err
	}
	var row winipcfg.MibIPforwardRow2
	r, _, _ := procGetBestRoute2.Call(0, 0, 0, uintptr(unsafe.Pointer(&to)), 0,
		uintptr(unsafe.Pointer(&row)), uintptr(unsafe.Pointer(&src)))
	if r != 0 {
		return false, "", windows.Errno(r)
	}
	if row.InterfaceLUID == n.luid {
		return true, "", nil
	}
	if ifi, err := net.InterfaceByIndex(int(row.InterfaceIndex)); err == nil {
		return false, ifi.Name, nil
	}
	return false, fmt.Sprintf("interface %d", row.InterfaceIndex), nil
}
