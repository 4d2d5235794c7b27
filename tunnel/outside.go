package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	conn "github.com/oevpn/oevpn/internal/wgconn"
)

// Outside says how oevpn's own packets leave the host without entering the
// TUN device: its IKE and ESP datagrams, its DNS queries and the clear
// path. On Linux the mark does it (policy routing sends marked packets by
// the main table); on macOS and Windows, where there are no marks, the
// sockets are bound to the outside interface (IP_BOUND_IF, IP_UNICAST_IF).
type Outside struct {
	// Mark is the Linux SO_MARK of our sockets; 0 sets none.
	Mark uint32
	// Interface, if set, is the interface our sockets are bound to
	// (SO_BINDTODEVICE on Linux).
	Interface string
}

// ErrNoOutside is returned when no interface outside the TUN device carries
// a default route.
var ErrNoOutside = errors.New("tunnel: no default route outside the TUN device")

// Dialer returns a dialer whose sockets leave by o.
func (o Outside) Dialer() *net.Dialer {
	if o == (Outside{}) {
		return &net.Dialer{}
	}
	return &net.Dialer{Control: o.control}
}

// control applies o to a socket before it connects to address; network
// is the dialer's ("udp4", "tcp6", ...). The host's own addresses never
// enter the TUN: sockets to them are left unbound (a resolver on 127.0.0.1
// or on a bridge of this host stays reachable).
func (o Outside) control(network, address string, c syscall.RawConn) error {
	if o.Interface != "" {
		if ap, err := netip.ParseAddrPort(address); err == nil {
			if a := ap.Addr().Unmap(); a.IsLoopback() || host.get().local[a] != "" {
				o.Interface = ""
			}
		}
	}
	var serr error
	err := c.Control(func(fd uintptr) { serr = o.apply(network, fd) })
	if err != nil {
		return err
	}
	return serr
}

// apply applies o to an open socket of network ("udp4", "udp6", ...).
func (o Outside) apply(network string, fd uintptr) error {
	if o.Interface == "" {
		return o.setMark(fd)
	}
	ifi := host.get().byName[o.Interface]
	if ifi == nil {
		// Perhaps new since the last look.
		var err error
		if ifi, err = net.InterfaceByName(o.Interface); err != nil {
			return fmt.Errorf("tunnel: outside interface %q: %w", o.Interface, err)
		}
	}
	if err := o.setMark(fd); err != nil {
		return err
	}
	v6 := len(network) > 0 && network[len(network)-1] == '6'
	if err := bindToInterface(fd, ifi, v6); err != nil {
		return fmt.Errorf("tunnel: binding a socket to %q: %w", o.Interface, err)
	}
	return nil
}

// host is a snapshot of the host's interfaces and addresses, taken again
// when older than hostViewTTL: sockets are bound per flow and per DNS
// query, and listing interfaces is not cheap (on Windows especially).
var host hostView

const hostViewTTL = 2 * time.Second

type hostView struct {
	mu   sync.Mutex
	at   time.Time
	snap hostSnapshot
}

type hostSnapshot struct {
	byName map[string]*net.Interface
	local  map[netip.Addr]string // the host's addresses, and whose they are
}

func (h *hostView) get() hostSnapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.at) >= hostViewTTL || h.snap.byName == nil {
		h.snap, h.at = readHost(), time.Now()
	}
	return h.snap
}

// readHost lists the host's interfaces and addresses now.
func readHost() hostSnapshot {
	s := hostSnapshot{byName: map[string]*net.Interface{}, local: map[netip.Addr]string{}}
	ifs, _ := net.Interfaces()
	for i := range ifs {
		s.byName[ifs[i].Name] = &ifs[i]
		addrs, _ := ifs[i].Addrs()
		for _, ad := range addrs {
			if p, err := netip.ParsePrefix(ad.String()); err == nil {
				s.local[p.Addr().Unmap()] = ifs[i].Name
			}
		}
	}
	return s
}

// SourceFor returns the source address the host's own routes (those o's
// sockets follow, not the TUN) pick for dst, or an invalid address. It
// sends nothing: a UDP connect only looks the route up.
func (o Outside) SourceFor(dst netip.Addr) netip.Addr {
	c, err := o.Dialer().DialContext(context.Background(), "udp", netip.AddrPortFrom(dst, 9).String())
	if err != nil {
		return netip.Addr{}
	}
	defer c.Close()
	ap, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return ap.Addr().Unmap()
}

// DetectOutside returns the interface of the host's default route, IPv4
// first, other than the device named exclude. Call it before routing into
// the TUN device. Only route lookups are made; nothing is sent.
func DetectOutside(exclude string) (string, error) {
	local := readHost().local
	// Documentation addresses (RFC 5737, RFC 3849) stand for "anywhere".
	for _, dst := range []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")} {
		if name := local[(Outside{}).SourceFor(dst)]; name != "" && name != exclude {
			return name, nil
		}
	}
	return "", ErrNoOutside
}

// applyBinds applies o to the open sockets of binds, which must be able
// to take socket options (conn.StdNetBind) unless o is the zero value.
func (o Outside) applyBinds(binds ...conn.Bind) error {
	if o == (Outside{}) {
		return nil
	}
	for _, b := range binds {
		cb, ok := b.(interface {
			Control(func(network string, fd uintptr) error) error
		})
		if !ok {
			return fmt.Errorf("tunnel: %T cannot take socket options", b)
		}
		if err := cb.Control(o.apply); err != nil {
			return err
		}
	}
	return nil
}
