package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/policy"
)

// Errors of the node's network API.
var (
	// ErrNotNetstack: the node runs on an OS TUN, whose network is the
	// host's: use the host's sockets.
	ErrNotNetstack = errors.New("tunnel: the node has no userspace network stack (TUN mode)")
	// ErrBlocked: policy drops traffic to the destination (its class, or
	// opportunism failed where it must not fall back to the clear).
	ErrBlocked = errors.New("tunnel: destination blocked by policy")
)

// Verdicts of Check.
const (
	CheckEncrypted       = "encrypted-and-authenticated"
	CheckUnauthenticated = "encrypted-unauthenticated"
	CheckPending         = "pending" // an SA is negotiated when traffic comes
	CheckBlocked         = "blocked"
	CheckClear           = "clear"
)

// Check is what happens to traffic to one address, and why.
type Check struct {
	Addr    string `json:"addr"`
	Verdict string `json:"verdict"` // one of the Check* verdicts
	Peer    string `json:"peer,omitempty"`
	Reason  string `json:"reason"`
}

// Check answers what the node does now with a packet to a that reaches it:
// the one place the datapath's decision is explained (the SA that covers
// a, the peer whose trap holds it, or its policy class and opportunistic
// verdict).
func (n *Node) Check(a netip.Addr) Check {
	a = a.Unmap()
	c := Check{Addr: a.String()}
	if p := n.eng.PairFor(a); p != nil {
		c.Peer = p.Peer.String()
		c.Verdict, c.Reason = CheckEncrypted, "static SA with pre-shared keys"
		if p.Auth != "" {
			c.Reason = "IKE SA authenticated by " + p.Auth
			if p.Auth == "null" {
				c.Verdict, c.Reason = CheckUnauthenticated, "IKE SA with AUTH_NULL (RFC 7619)"
			}
		}
		return c
	}
	if name, ok := n.eng.TrapFor(a); ok {
		c.Verdict, c.Peer, c.Reason = CheckPending, name, "an SA is negotiated with the peer when traffic comes"
		return c
	}
	if cl := n.eng.Classes(); cl != nil {
		class := cl.ClassOf(a)
		if v, until, ok := n.eng.VerdictFor(a); ok && class != policy.ClassBlock {
			switch v {
			case VerdictPending:
				c.Verdict, c.Reason = CheckPending, "policy: "+class.String()+"; discovery and IKE under way"
			case VerdictClear:
				c.Verdict, c.Reason = CheckClear, fmt.Sprintf("policy: %v; opportunism failed, clear until %s%s", class, until.Format(time.RFC3339), n.oeWhy(a))
			default:
				c.Verdict, c.Reason = CheckBlocked, fmt.Sprintf("policy: %v; opportunism failed, dropped until %s%s", class, until.Format(time.RFC3339), n.oeWhy(a))
			}
			return c
		}
		switch class {
		case policy.ClassBlock:
			c.Verdict, c.Reason = CheckBlocked, "policy: block"
			return c
		case policy.ClassPrivate, policy.ClassPrivateOrClear:
			c.Verdict, c.Reason = CheckPending, "policy: "+class.String()+"; the first packet starts discovery (DNS) and IKE"
			return c
		case policy.ClassClearOrPrivate:
			c.Verdict, c.Reason = CheckClear, "policy: clear-or-private; encrypted only if the peer initiates"
			return c
		}
	}
	c.Verdict, c.Reason = CheckClear, "no SA and no peer covers this address: oevpn does not route it"
	return c
}

// triggerWait bounds how long DialContext and LookupNetIP wait for an
// opportunistic tunnel before they go on (the datapath then holds the
// first packets until the negotiation ends).
const triggerWait = 3 * time.Second

// LookupNetIP resolves host to addresses, as the DNS-triggered mode does
// for applications: through NodeConfig.DNS if set, else the opportunistic
// resolver when opportunism is on, else the system's. With opportunism it
// starts negotiating with every address at once and leaves out those whose
// traffic would be dropped, failing with ErrBlocked when none is left.
// network is "ip", "ip4" or "ip6".
func (n *Node) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r := net.DefaultResolver
	if dns := n.cfg.DNS; dns.IsValid() && n.net != nil {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return n.DialContext(ctx, network, dns.String())
		}}
	} else if o := n.cfg.Opportunism; n.oe != nil && o.Resolver != nil && o.Resolver.Server != "" {
		d := &net.Dialer{}
		if !n.cfg.Netstack {
			d = n.outside.Dialer()
		}
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, o.Resolver.Server)
		}}
	}
	addrs, err := r.LookupNetIP(ctx, network, host)
	if err != nil || n.oe == nil {
		return addrs, err
	}
	ctx, cancel := context.WithTimeout(ctx, triggerWait)
	defer cancel()
	kept := addrs[:0]
	for i, v := range dnsoe.TriggerAll(ctx, addrs, n.oe.Trigger) {
		if v == dnsoe.Proceed {
			kept = append(kept, addrs[i])
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("%w: every address of %s", ErrBlocked, host)
	}
	return kept, nil
}

// DialContext connects to address ("host:port"; host a name or an address)
// from the node's userspace network stack: traffic to a peer's selectors
// goes through ESP, the rest as policy says (in the clear from the host's
// sockets, or not at all). network is "tcp", "tcp4", "tcp6", "udp", "udp4"
// or "udp6". A destination that policy drops fails at once with
// ErrBlocked instead of timing out.
func (n *Node) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if n.net == nil {
		return nil, ErrNotNetstack
	}
	var tcp bool
	switch network {
	case "tcp", "tcp4", "tcp6":
		tcp = true
	case "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("tunnel: dial %s: %w", network, net.UnknownNetworkError(network))
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("tunnel: dial %s: %w", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("tunnel: dial %s: bad port %q", address, portStr)
	}
	addrs, err := n.dialAddrs(ctx, network, host)
	if err != nil {
		return nil, fmt.Errorf("tunnel: dial %s: %w", address, err)
	}
	var first error
	for _, a := range addrs {
		if c := n.Check(a); c.Verdict == CheckBlocked {
			err = fmt.Errorf("%w: %v: %s", ErrBlocked, a, c.Reason)
		} else if tcp {
			var conn net.Conn
			if conn, err = n.net.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(a, uint16(port))); err == nil {
				return conn, nil
			}
			err = stackError(err)
		} else {
			var conn net.Conn
			if conn, err = n.net.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(a, uint16(port))); err == nil {
				return conn, nil
			}
		}
		if first == nil {
			first = err
		}
	}
	return nil, fmt.Errorf("tunnel: dial %s: %w", address, first)
}

// stackErrors are the errnos of the userspace stack's errors, which gonet
// passes on as text only.
var stackErrors = map[string]syscall.Errno{
	(&tcpip.ErrConnectionRefused{}).String():  syscall.ECONNREFUSED,
	(&tcpip.ErrHostUnreachable{}).String():    syscall.EHOSTUNREACH,
	(&tcpip.ErrNetworkUnreachable{}).String(): syscall.ENETUNREACH,
	(&tcpip.ErrTimeout{}).String():            syscall.ETIMEDOUT,
	(&tcpip.ErrConnectionReset{}).String():    syscall.ECONNRESET,
}

// stackError gives an error of the userspace stack the errno a host
// socket would report, so that callers can tell a refusal from a timeout
// with errors.Is, as with the host's sockets.
func stackError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		if errno, ok := stackErrors[op.Err.Error()]; ok {
			op2 := *op
			op2.Err = os.NewSyscallError(op.Op, errno)
			return &op2
		}
	}
	return err
}

// dialAddrs returns the addresses to try for host, of network's family.
func (n *Node) dialAddrs(ctx context.Context, network, host string) ([]netip.Addr, error) {
	family := "ip" + network[3:]
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if (family == "ip4" && !a.Is4()) || (family == "ip6" && a.Is4()) {
			return nil, fmt.Errorf("%v is not an %s address", a, family)
		}
		if n.oe != nil {
			// As for a name: start opportunism before the first packet.
			ctx, cancel := context.WithTimeout(ctx, triggerWait)
			defer cancel()
			if n.oe.Trigger(ctx, a) == dnsoe.Withhold {
				return nil, fmt.Errorf("%w: %v: %s", ErrBlocked, a, n.Check(a).Reason)
			}
		}
		return []netip.Addr{a}, nil
	}
	return n.LookupNetIP(ctx, family, host)
}

// Listen listens for TCP connections on the node's userspace network stack
// (network "tcp", "tcp4" or "tcp6"; address "[ip]:port", the ip optional).
func (n *Node) Listen(network, address string) (net.Listener, error) {
	ap, err := n.listenAddr(network, "tcp", address)
	if err != nil {
		return nil, err
	}
	return n.net.ListenTCPAddrPort(ap)
}

// ListenPacket opens a UDP socket on the node's userspace network stack
// (network "udp", "udp4" or "udp6"; address "[ip]:port"). Its WriteTo
// sends to any destination, which policy routes as it does every packet.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	ap, err := n.listenAddr(network, "udp", address)
	if err != nil {
		return nil, err
	}
	return n.net.ListenUDPAddrPort(ap)
}

// listenAddr checks a listen request and parses its address.
func (n *Node) listenAddr(network, proto, address string) (netip.AddrPort, error) {
	if n.net == nil {
		return netip.AddrPort{}, ErrNotNetstack
	}
	if network != proto && network != proto+"4" && network != proto+"6" {
		return netip.AddrPort{}, fmt.Errorf("tunnel: listen %s: %w", network, net.UnknownNetworkError(network))
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("tunnel: listen %s: %w", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("tunnel: listen %s: bad port %q", address, portStr)
	}
	var a netip.Addr
	if host != "" {
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("tunnel: listen %s: %w", address, err)
		}
	} else if port == 0 {
		// The stack binds "any address" only with a port; an ephemeral
		// socket takes the node's own address of the family asked (IPv4
		// first for "udp" and "tcp").
		a = n.ownAddr(network[len(network)-1])
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// ownAddr returns the node's first address of the family that a network
// name's last character gives ('4', '6', or either, IPv4 first).
func (n *Node) ownAddr(family byte) netip.Addr {
	var v4, v6 netip.Addr
	for _, p := range n.cfg.Addresses {
		switch a := p.Addr().Unmap(); {
		case a.Is4() && !v4.IsValid():
			v4 = a
		case a.Is6() && !v6.IsValid():
			v6 = a
		}
	}
	if family == '6' || (family != '4' && !v4.IsValid()) {
		return v6
	}
	return v4
}
