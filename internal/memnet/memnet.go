// Package memnet is an in-memory outer network for oevpn endpoints in one
// process: each Bind is one address and port, whose Send delivers to the
// Bind of the destination. Endpoints can so have their real (inner)
// addresses as outer ones and the standard ports 500 and 4500, which
// loopback sockets cannot give, and nothing leaves the process. A tap sees
// every datagram, as a capture on the wire would.
package memnet

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	conn "github.com/oevpn/oevpn/internal/wgconn"
)

// queueLen bounds the datagrams waiting at one Bind; more are lost, as on
// a network.
const queueLen = 1024

// Tap sees a datagram sent from one address and port to another. It must
// not keep or change pkt.
type Tap func(from, to netip.AddrPort, pkt []byte)

// Network is an in-memory outer network. Its zero value is ready.
type Network struct {
	mu    sync.Mutex
	binds map[netip.AddrPort]*bind
	tap   Tap
}

// SetTap makes f see every datagram sent from now on (nil: none).
func (n *Network) SetTap(f Tap) {
	n.mu.Lock()
	n.tap = f
	n.mu.Unlock()
}

// Bind returns a conn.Bind at addr on the network; its Open takes the
// port (which must be given: there is no ephemeral port).
func (n *Network) Bind(addr netip.Addr) conn.Bind {
	return &bind{net: n, addr: addr.Unmap(), in: make(chan packet, queueLen), closed: make(chan struct{})}
}

type packet struct {
	b    []byte
	from netip.AddrPort
}

type bind struct {
	net    *Network
	addr   netip.Addr
	port   uint16
	in     chan packet
	closed chan struct{}
	once   sync.Once
}

// endpoint is a peer's address; the local address (SrcIP) is the Bind's,
// as the Linux sticky sockets report.
type endpoint struct {
	src netip.Addr
	dst netip.AddrPort
}

func (e *endpoint) ClearSrc()           {}
func (e *endpoint) SrcToString() string { return e.src.String() }
func (e *endpoint) DstToString() string { return e.dst.String() }
func (e *endpoint) DstToBytes() []byte  { b, _ := e.dst.MarshalBinary(); return b }
func (e *endpoint) DstIP() netip.Addr   { return e.dst.Addr() }
func (e *endpoint) SrcIP() netip.Addr   { return e.src }

// Open implements conn.Bind.
func (b *bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.net.mu.Lock()
	defer b.net.mu.Unlock()
	if b.net.binds == nil {
		b.net.binds = map[netip.AddrPort]*bind{}
	}
	ap := netip.AddrPortFrom(b.addr, port)
	if port == 0 {
		return nil, 0, fmt.Errorf("memnet: %v: a port must be given", ap)
	}
	if _, busy := b.net.binds[ap]; busy {
		return nil, 0, fmt.Errorf("memnet: %v in use", ap)
	}
	b.port = port
	b.net.binds[ap] = b
	return []conn.ReceiveFunc{b.receive}, port, nil
}

func (b *bind) receive(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	var p packet
	select {
	case p = <-b.in:
	case <-b.closed:
		return 0, net.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(pkts[n], p.b)
		eps[n] = &endpoint{src: b.addr, dst: p.from}
		n++
		if n == len(pkts) {
			return n, nil
		}
		select {
		case p = <-b.in:
		default:
			return n, nil
		}
	}
}

// Close implements conn.Bind.
func (b *bind) Close() error {
	b.once.Do(func() {
		close(b.closed)
		b.net.mu.Lock()
		if b.net.binds[netip.AddrPortFrom(b.addr, b.port)] == b {
			delete(b.net.binds, netip.AddrPortFrom(b.addr, b.port))
		}
		b.net.mu.Unlock()
	})
	return nil
}

// SetMark implements conn.Bind; there are no marks here.
func (b *bind) SetMark(uint32) error { return nil }

// BatchSize implements conn.Bind.
func (b *bind) BatchSize() int { return 16 }

// ParseEndpoint implements conn.Bind.
func (b *bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &endpoint{src: b.addr, dst: ap}, nil
}

// Send implements conn.Bind: the datagrams are copied to the destination's
// queue, or lost when nobody is there or the queue is full.
func (b *bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	dst, err := netip.ParseAddrPort(ep.DstToString())
	if err != nil {
		return err
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	from := netip.AddrPortFrom(b.addr, b.port)
	b.net.mu.Lock()
	to, tap := b.net.binds[dst], b.net.tap
	b.net.mu.Unlock()
	for _, buf := range bufs {
		if tap != nil {
			tap(from, dst, buf)
		}
		if to == nil {
			continue // nobody there: lost, as on a network
		}
		select {
		case to.in <- packet{b: append([]byte(nil), buf...), from: from}:
		default:
		}
	}
	return nil
}
