package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Netstack device parameters.
const (
	// netstackBatch is how many packets the engine reads from the
	// netstack device at once: what the stack queued since the last read,
	// sealed and sent as one sendmmsg/UDP-GSO batch.
	netstackBatch = 128
	// netstackQueue bounds the packets the stack may queue for the
	// engine; beyond it the link drops, as a full NIC queue does. It
	// holds the largest window of one TCP stream (tcpBufferMax in
	// segments of a 1280-octet MTU): one stream alone never loses
	// packets to it, which cost it a retransmission timeout.
	netstackQueue = 4096
	// netstackQueueBytes bounds the octets in the queue too (a packet
	// may be 64 KiB): two streams' largest windows.
	netstackQueueBytes = 2 * tcpBufferMax
	// tcpBufferMax is the most a TCP socket's send or receive buffer
	// grows to (receive buffers by auto-tuning, RFC 7323 windows):
	// gVisor's default, the bandwidth-delay product of 1 Gbit/s at 33 ms.
	tcpBufferMax = 4 << 20
)

// nicID is the netstack's one NIC.
const nicID = 1

// NewNetstack creates a userspace packet device: a gVisor TCP/IP stack that
// owns the given inner addresses. Programs in this process reach the tunnel
// through the returned Netstack (Dial, Listen, ping); nothing touches the
// host's network configuration, so no privileges are needed.
//
// The device hands the engine what the stack sent in batches, TCP's
// packets of up to 64 KiB cut into segments (GSO), and takes batches of
// packets that it coalesces per TCP flow (GRO) before the stack sees them.
// TCP runs with SACK, RACK and receive-buffer auto-tuning.
func NewNetstack(addrs []netip.Addr, mtu int) (tun.Device, *Netstack, error) {
	if len(addrs) == 0 {
		return nil, nil, errors.New("tunnel: netstack device needs at least one address")
	}
	if mtu < header.IPv6MinimumMTU || mtu > maxPacket {
		return nil, nil, fmt.Errorf("tunnel: netstack MTU %d out of range [%d, %d]", mtu, header.IPv6MinimumMTU, maxPacket)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	d := &netstackDevice{
		stack:  s,
		mtu:    mtu,
		events: make(chan tun.Event, 1),
		ready:  make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	d.link.d = d
	d.gro.Init(true)
	fail := func(what string, err tcpip.Error) (tun.Device, *Netstack, error) {
		s.Close()
		return nil, nil, fmt.Errorf("tunnel: netstack device: %s: %v", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcpBufferMax}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcpBufferMax}
	rack := tcpip.TCPRACKLossDetection
	for _, o := range []tcpip.SettableTransportProtocolOption{&sack, &moderate, &snd, &rcv, &rack} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fail(fmt.Sprintf("TCP option %T", o), err)
		}
	}
	if err := s.CreateNICWithOptions(nicID, &d.link, stack.NICOptions{QDisc: &d.link}); err != nil {
		return fail("creating the NIC", err)
	}
	var has4, has6 bool
	for _, a := range addrs {
		a = a.Unmap()
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fail(fmt.Sprintf("adding address %v", a), err)
		}
		has4, has6 = has4 || a.Is4(), has6 || a.Is6()
	}
	if has4 {
		s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if has6 {
		s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	d.events <- tun.EventUp
	return d, &Netstack{stack: s}, nil
}

// netstackDevice is the tun.Device of a gVisor stack: the engine reads what
// the stack sends and writes what the stack receives.
type netstackDevice struct {
	stack  *stack.Stack
	link   netstackLink
	mtu    int
	events chan tun.Event

	// Outbound: packets the stack sent, a ring that the engine drains.
	mu     sync.Mutex
	queue  [netstackQueue]*stack.PacketBuffer
	head   int           // index of the oldest packet
	queued int           // packets in the ring
	octets int           // their sizes, at most netstackQueueBytes
	closed bool          // guarded by mu and by inMu
	ready  chan struct{} // signalled when the ring becomes non-empty
	done   chan struct{} // closed by Close

	// Inbound: writers take turns, the GRO table is theirs.
	inMu sync.Mutex
	gro  gro.GRO
}

// Name implements tun.Device.
func (d *netstackDevice) Name() (string, error) { return "netstack", nil }

// File implements tun.Device: there is no file.
func (d *netstackDevice) File() *os.File { return nil }

// Events implements tun.Device.
func (d *netstackDevice) Events() <-chan tun.Event { return d.events }

// MTU implements tun.Device.
func (d *netstackDevice) MTU() (int, error) { return d.mtu, nil }

// BatchSize implements tun.Device.
func (d *netstackDevice) BatchSize() int { return netstackBatch }

// Read implements tun.Device: it waits for the stack to send a packet and
// copies it and every other queued one that fits, each to its buffer at
// offset; a TCP packet of more than one segment (GSO) takes a buffer per
// segment. A packet larger than its buffers is dropped.
func (d *netstackDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var pkts [netstackBatch]*stack.PacketBuffer
	var n int
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return 0, os.ErrClosed
		}
		for slots := min(len(bufs), len(pkts)); n < d.queued && n < slots; n++ {
			j := (d.head + n) % netstackQueue
			need := segments(d.queue[j])
			if need > slots-n && n > 0 {
				break // for the next read
			}
			slots -= need - 1
			d.octets -= d.queue[j].Size()
			pkts[n], d.queue[j] = d.queue[j], nil
		}
		d.head = (d.head + n) % netstackQueue
		d.queued -= n
		d.mu.Unlock()
		if n > 0 {
			break
		}
		select {
		case <-d.ready:
		case <-d.done:
		}
	}
	out := 0
	for _, pkt := range pkts[:n] {
		if pkt.GSOOptions.NeedsCsum {
			out += segmentTCP(bufs[out:], sizes[out:], offset, pkt)
		} else if size := copyPacket(bufs[out][offset:], pkt, 0); size > 0 {
			sizes[out] = size
			out++
		}
		pkt.DecRef()
	}
	return out, nil
}

// copyPacket copies the octets of pkt from off on into b, as many as fit,
// and returns how many it copied, or 0 if the packet does not fit whole.
func copyPacket(b []byte, pkt *stack.PacketBuffer, off int) int {
	if off == 0 && pkt.Size() > len(b) {
		return 0
	}
	views, skip := pkt.AsViewList()
	skip += off
	n := 0
	for v := views.Front(); v != nil && n < len(b); v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		n += copy(b[n:], s[skip:])
		skip = 0
	}
	return n
}

// Write implements tun.Device: it hands the packets to the stack, TCP
// segments of one flow coalesced (GRO).
func (d *netstackDevice) Write(bufs [][]byte, offset int) (int, error) {
	d.inMu.Lock()
	defer d.inMu.Unlock()
	if d.closed {
		return 0, os.ErrClosed
	}
	for i, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch pkt[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			d.gro.Flush()
			return i, fmt.Errorf("tunnel: netstack device: IP version %d", pkt[0]>>4)
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		pb.NetworkProtocolNumber = proto
		pb.RXChecksumValidated = true // see Capabilities
		d.gro.Enqueue(pb)
		pb.DecRef()
	}
	d.gro.Flush()
	return len(bufs), nil
}

// Close implements tun.Device: it closes the stack and every socket on it.
func (d *netstackDevice) Close() error {
	d.inMu.Lock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.inMu.Unlock()
		return nil
	}
	d.closed = true
	close(d.done)
	d.mu.Unlock()
	d.inMu.Unlock()
	d.stack.RemoveNIC(nicID)
	d.stack.Close()
	d.mu.Lock()
	for d.queued > 0 {
		d.octets -= d.queue[d.head].Size()
		d.queue[d.head].DecRef()
		d.queue[d.head] = nil
		d.head = (d.head + 1) % netstackQueue
		d.queued--
	}
	d.mu.Unlock()
	close(d.events)
	return nil
}

// enqueue queues pkt for Read, or drops it when the queue is full (in
// packets or octets) or the device closed.
func (d *netstackDevice) enqueue(pkt *stack.PacketBuffer) tcpip.Error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return &tcpip.ErrClosedForSend{}
	}
	size := pkt.Size()
	if d.queued == netstackQueue || d.octets+size > netstackQueueBytes {
		d.mu.Unlock()
		return &tcpip.ErrNoBufferSpace{}
	}
	d.queue[(d.head+d.queued)%netstackQueue] = pkt.IncRef()
	d.queued++
	d.octets += size
	wake := d.queued == 1
	d.mu.Unlock()
	if wake {
		select {
		case d.ready <- struct{}{}:
		default:
		}
	}
	return nil
}

// netstackLink is the device's side of the stack: a link without headers
// or addresses, that queues what the stack sends for the device's Read.
type netstackLink struct {
	d *netstackDevice
}

var (
	_ stack.LinkEndpoint       = (*netstackLink)(nil)
	_ stack.GSOEndpoint        = (*netstackLink)(nil)
	_ stack.QueueingDiscipline = (*netstackLink)(nil)
)

// WritePacket implements stack.QueueingDiscipline: the link is also its
// NIC's queue, the device's ring (without it, the NIC allocates a list for
// each packet to call WritePackets).
func (l *netstackLink) WritePacket(pkt *stack.PacketBuffer) tcpip.Error { return l.d.enqueue(pkt) }

// WritePackets implements stack.LinkWriter. The NIC writes through
// WritePacket; nothing else writes here.
func (l *netstackLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for i, pkt := range pkts.AsSlice() {
		if err := l.d.enqueue(pkt); err != nil {
			return i, err
		}
	}
	return pkts.Len(), nil
}

// MTU implements stack.NetworkLinkEndpoint.
func (l *netstackLink) MTU() uint32 { return uint32(l.d.mtu) }

// SetMTU implements stack.NetworkLinkEndpoint; the MTU is fixed.
func (l *netstackLink) SetMTU(uint32) {}

// MaxHeaderLength implements stack.NetworkLinkEndpoint: no link header.
func (l *netstackLink) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint: no link address.
func (l *netstackLink) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.NetworkLinkEndpoint.
func (l *netstackLink) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint. The stack does not
// verify the checksums of what the device writes: it is what ESP
// authenticated, whose integrity check is stronger, or what oevpn's own
// forwarder made (as WireGuard marks decrypted packets
// CHECKSUM_UNNECESSARY). It computes those of what it sends: the peer may
// be an OS TUN.
func (l *netstackLink) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// Attach implements stack.NetworkLinkEndpoint. It is called when the NIC
// is created, before any packet, and with nil when it is removed, after
// the device stopped writing.
func (l *netstackLink) Attach(dispatcher stack.NetworkDispatcher) {
	l.d.inMu.Lock()
	defer l.d.inMu.Unlock()
	l.d.gro.Dispatcher = dispatcher
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (l *netstackLink) IsAttached() bool {
	l.d.inMu.Lock()
	defer l.d.inMu.Unlock()
	return l.d.gro.Dispatcher != nil
}

// Wait implements stack.NetworkLinkEndpoint: there is no goroutine.
func (l *netstackLink) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (l *netstackLink) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint: no link header.
func (l *netstackLink) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint: no link header.
func (l *netstackLink) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint and
// stack.QueueingDiscipline; the device closes the queue.
func (l *netstackLink) Close() {}

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (l *netstackLink) SetOnCloseAction(func()) {}

// GSOMaxSize implements stack.GSOEndpoint: TCP hands over up to 64 KiB
// at once.
func (l *netstackLink) GSOMaxSize() uint32 {
	return uint32(min(superPacketSize(l.d.mtu), stack.GVisorGSOMaxSize))
}

// SupportedGSO implements stack.GSOEndpoint: "host" GSO, that is, the
// device's Read cuts TCP packets into segments (segmentTCP) and computes
// their checksums.
func (l *netstackLink) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// Netstack is the socket API of a netstack device's stack: connections
// from and to the node's inner addresses, through the tunnel.
type Netstack struct {
	stack *stack.Stack
}

// fullAddr converts ap to gVisor's form.
func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	var addr tcpip.Address
	if a.IsValid() {
		addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return tcpip.FullAddress{NIC: nicID, Addr: addr, Port: ap.Port()}, proto
}

// DialContextTCPAddrPort connects to addr over TCP.
func (n *Netstack) DialContextTCPAddrPort(ctx context.Context, addr netip.AddrPort) (*gonet.TCPConn, error) {
	fa, proto := fullAddr(addr)
	return gonet.DialContextTCP(ctx, n.stack, fa, proto)
}

// DialTCPAddrPort connects to addr over TCP.
func (n *Netstack) DialTCPAddrPort(addr netip.AddrPort) (*gonet.TCPConn, error) {
	return n.DialContextTCPAddrPort(context.Background(), addr)
}

// ListenTCPAddrPort listens for TCP connections on addr (its address
// unspecified: on all of the stack's addresses of its family).
func (n *Netstack) ListenTCPAddrPort(addr netip.AddrPort) (*gonet.TCPListener, error) {
	fa, proto := fullAddr(addr)
	return gonet.ListenTCP(n.stack, fa, proto)
}

// DialUDPAddrPort opens a UDP socket bound to laddr (if valid or with a
// port) and connected to raddr (likewise).
func (n *Netstack) DialUDPAddrPort(laddr, raddr netip.AddrPort) (*gonet.UDPConn, error) {
	var lfa, rfa *tcpip.FullAddress
	var proto tcpip.NetworkProtocolNumber
	if laddr.IsValid() || laddr.Port() > 0 {
		a, p := fullAddr(laddr)
		lfa, proto = &a, p
	}
	if raddr.IsValid() || raddr.Port() > 0 {
		a, p := fullAddr(raddr)
		rfa, proto = &a, p
	}
	return gonet.DialUDP(n.stack, lfa, rfa, proto)
}

// ListenUDPAddrPort opens a UDP socket bound to laddr.
func (n *Netstack) ListenUDPAddrPort(laddr netip.AddrPort) (*gonet.UDPConn, error) {
	return n.DialUDPAddrPort(laddr, netip.AddrPort{})
}
