package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Forwarder limits.
const (
	forwardMaxInFlight = 1024             // TCP handshakes being forwarded at once
	forwardUDPIdle     = 60 * time.Second // a UDP flow without traffic is closed
	forwardDialTimeout = 10 * time.Second
)

// DialFunc opens a host connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// forwarder is the clear path where raw IP sends are not possible
// (netstack mode, Windows, macOS): a gVisor stack terminates the TCP and
// UDP flows of the packets it is given and re-originates each one from a
// host socket (tun2socks style); what the host peer sends back returns to
// the device as IP packets from the original destination. Other protocols
// (ICMP) are dropped.
type forwarder struct {
	stack     *stack.Stack
	ep        *channel.Endpoint
	dial      DialFunc
	writeBack func(pkt []byte)
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu    sync.Mutex
	hosts map[net.Conn]struct{} // open host connections, closed by Close
}

// track registers a host connection; it returns false once closing.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hosts == nil {
		return false
	}
	f.hosts[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.hosts, c)
	f.mu.Unlock()
	c.Close()
}

// newForwarder starts a forwarder that writes its packets with writeBack.
func newForwarder(mtu int, dial DialFunc, writeBack func(pkt []byte)) (*forwarder, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	f := &forwarder{stack: s, ep: channel.New(512, uint32(mtu), ""), dial: dial, writeBack: writeBack, hosts: map[net.Conn]struct{}{}}
	if err := s.CreateNIC(1, f.ep); err != nil {
		return nil, fmt.Errorf("tunnel: forwarder NIC: %v", err)
	}
	// Accept packets for any address and answer from it.
	s.SetPromiscuousMode(1, true)
	s.SetSpoofing(1, true)
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}, {Destination: header.IPv6EmptySubnet, NIC: 1}})
	tf := tcp.NewForwarder(s, 0, forwardMaxInFlight, f.forwardTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s, f.forwardUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Add(1)
	go f.routineOut(ctx)
	return f, nil
}

// Send takes a packet that must leave in the clear.
func (f *forwarder) Send(pkt []byte) error {
	if len(pkt) == 0 {
		return errors.New("tunnel: forwarder: empty packet")
	}
	proto := header.IPv4ProtocolNumber
	switch pkt[0] >> 4 {
	case 4:
	case 6:
		proto = header.IPv6ProtocolNumber
	default:
		return errors.New("tunnel: forwarder: not an IP packet")
	}
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(append([]byte(nil), pkt...))})
	f.ep.InjectInbound(proto, pkb)
	pkb.DecRef()
	return nil
}

// Close stops the forwarder and its flows.
func (f *forwarder) Close() error {
	f.mu.Lock()
	hosts := f.hosts
	f.hosts = nil
	f.mu.Unlock()
	for c := range hosts {
		c.Close()
	}
	f.cancel()
	f.stack.Close()
	f.ep.Close()
	f.stack.Wait()
	f.wg.Wait()
	return nil
}

// routineOut writes the forwarder stack's packets back to the device.
func (f *forwarder) routineOut(ctx context.Context) {
	defer f.wg.Done()
	for {
		pkt := f.ep.ReadContext(ctx)
		if pkt == nil {
			return
		}
		view := pkt.ToView()
		pkt.DecRef()
		f.writeBack(view.AsSlice())
		view.Release()
	}
}

func endpointAddr(a tcpip.Address, port uint16) string {
	addr, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(addr.Unmap(), port).String()
}

func (f *forwarder) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := endpointAddr(id.LocalAddress, id.LocalPort)
	ctx, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	host, err := f.dial(ctx, "tcp", dst)
	cancel()
	if err != nil {
		r.Complete(true) // refused or unreachable: reset
		return
	}
	if !f.track(host) {
		host.Close()
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		f.untrack(host)
		return
	}
	r.Complete(false)
	local := gonet.NewTCPConn(&wq, ep)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer f.untrack(host)
		splice(local, host)
	}()
}

// splice copies both ways until both sides are done.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if c, ok := dst.(interface{ CloseWrite() error }); ok {
			c.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

func (f *forwarder) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	dst := endpointAddr(id.LocalAddress, id.LocalPort)
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		return
	}
	local := gonet.NewUDPConn(&wq, ep)
	ctx, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	host, err := f.dial(ctx, "udp", dst)
	cancel()
	if err != nil || !f.track(host) {
		local.Close()
		if host != nil {
			host.Close()
		}
		return
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer f.untrack(host)
		relayUDP(local, host)
	}()
}

// relayUDP copies datagrams both ways until neither side sent any for
// forwardUDPIdle.
func relayUDP(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 65535)
		for {
			src.SetReadDeadline(time.Now().Add(forwardUDPIdle))
			n, err := src.Read(buf)
			if err != nil {
				a.Close()
				b.Close()
				return
			}
			dst.Write(buf[:n])
		}
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
}
