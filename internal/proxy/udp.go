package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// UDP ASSOCIATE (RFC 1928 section 7).
//
// The client gets a host UDP socket on the address its TCP connection
// reached; the server accepts datagrams there only from the client's IP
// (and, once the first datagram has come or if the request named it, only
// from that port). Each datagram starts with RSV(2) FRAG(1) ATYP DST.ADDR
// DST.PORT. Fragments (FRAG != 0) are dropped; so are datagrams the
// Dialer's socket refuses. Datagrams back to the association's socket are
// relayed to the client, with the source in the header, only from an
// address and port the client has sent to (address- and port-dependent
// filtering, RFC 4787 section 5), so that nobody who merely learns the
// socket's port can inject datagrams. The association ends when the TCP
// control connection does.

const (
	// maxAssociations bounds concurrent UDP associations per server; each
	// holds two buffers of udpBufSize.
	maxAssociations = 256
	// udpHeaderMax is the longest header the server writes: IPv6.
	udpHeaderMax = 3 + 1 + 16 + 2
	// udpBufSize holds the largest UDP payload and a header.
	udpBufSize = udpHeaderMax + 65535
	// maxPeers is how many destinations an association remembers for
	// filtering answers; past that the oldest is forgotten.
	maxPeers = 64
)

// peerSet is the bounded set of destinations a client has sent to.
type peerSet struct {
	mu   sync.Mutex
	m    map[netip.AddrPort]struct{}
	ring [maxPeers]netip.AddrPort
	next int
}

func (p *peerSet) add(ap netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[ap]; ok {
		return
	}
	if len(p.m) == maxPeers {
		delete(p.m, p.ring[p.next])
	}
	p.ring[p.next] = ap
	p.m[ap] = struct{}{}
	p.next = (p.next + 1) % maxPeers
}

func (p *peerSet) has(ap netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.m[ap]
	return ok
}

var udpBufs = sync.Pool{New: func() any { return new([udpBufSize]byte) }}

// parseUDPHeader parses a client datagram's header and returns the
// destination and the payload, a slice of p.
func parseUDPHeader(p []byte) (socksAddr, []byte, error) {
	if len(p) < 4 {
		return socksAddr{}, nil, errShort
	}
	if p[0] != 0 || p[1] != 0 {
		return socksAddr{}, nil, errRSV
	}
	if p[2] != 0 {
		return socksAddr{}, nil, errFragment
	}
	atyp, rest := p[3], p[4:]
	if atyp == atypDomain {
		if len(rest) < 1 {
			return socksAddr{}, nil, errShort
		}
		n := int(rest[0])
		if n == 0 {
			return socksAddr{}, nil, errEmptyStr
		}
		if len(rest) < 1+n+2 {
			return socksAddr{}, nil, errShort
		}
		a, _, err := decodeAddr(atyp, rest[1:1+n+2])
		return a, rest[1+n+2:], err
	}
	return decodeAddr(atyp, rest)
}

// appendUDPHeader appends a datagram header for source from.
func appendUDPHeader(b []byte, from netip.AddrPort) []byte {
	return appendAddr(append(b, 0, 0, 0), from)
}

type udpAddrPortReader interface {
	ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
}

type udpAddrPortWriter interface {
	WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
}

type association struct {
	s        *SOCKS5Server
	ctx      context.Context
	log      *slog.Logger
	cl       *net.UDPConn   // the client's side, on the host
	up       net.PacketConn // the Dialer's side
	clientIP netip.Addr
	client   atomic.Pointer[netip.AddrPort] // set by the first datagram
	peers    peerSet
}

func (s *SOCKS5Server) associate(c net.Conn, req socksAddr, b *[handshakeBufSize]byte, log *slog.Logger) {
	fail := func(rep Reply, msg string, err error) {
		log.Debug("socks5: udp associate failed", "client", c.RemoteAddr(), "reason", msg, "reply", rep, "err", err)
		c.Write(appendReply(b[:0], rep, netip.AddrPort{}))
	}
	pl, ok := s.Dialer.(PacketListener)
	if !ok {
		fail(ReplyCommandNotSupported, "dialer carries no UDP", nil)
		return
	}
	if s.assocs.Add(1) > maxAssociations {
		s.assocs.Add(-1)
		fail(ReplyGeneralFailure, "too many associations", nil)
		return
	}
	defer s.assocs.Add(-1)
	local, remote := addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
	if !local.IsValid() || !remote.IsValid() {
		fail(ReplyGeneralFailure, "control connection is not TCP/IP", nil)
		return
	}
	cl, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), 0)))
	if err != nil {
		fail(ReplyGeneralFailure, "client socket", err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(s.t.ctx)
	defer cancel()
	up, err := pl.ListenPacket(ctx, "udp")
	if err != nil {
		fail(ReplyFor(err), "dialer socket", err)
		return
	}
	defer up.Close()
	a := &association{s: s, ctx: ctx, log: log, cl: cl, up: up, clientIP: remote.Addr().Unmap()}
	a.peers.m = make(map[netip.AddrPort]struct{}, maxPeers)
	if req.port != 0 {
		// The client said where it will send from (RFC 1928 section 7);
		// its IP must still be the control connection's.
		ap := netip.AddrPortFrom(a.clientIP, req.port)
		a.client.Store(&ap)
	}
	if _, err := c.Write(appendReply(b[:0], ReplySucceeded, addrPort(cl.LocalAddr()))); err != nil {
		return
	}
	log.Debug("socks5: udp associate", "client", c.RemoteAddr(), "relay", cl.LocalAddr())
	var wg sync.WaitGroup
	wg.Go(a.fromClient)
	wg.Go(a.toClient)
	// The association lives as long as the control connection; anything
	// the client sends on it is ignored.
	for {
		if _, err := c.Read(b[:]); err != nil {
			break
		}
	}
	cancel()
	cl.Close()
	up.Close()
	wg.Wait()
}

// fromClient relays the client's datagrams to their destinations.
func (a *association) fromClient() {
	buf := udpBufs.Get().(*[udpBufSize]byte)
	defer udpBufs.Put(buf)
	w, fast := a.up.(udpAddrPortWriter)
	for {
		n, src, err := a.cl.ReadFromUDPAddrPort(buf[:])
		if err != nil {
			return
		}
		if src.Addr().Unmap() != a.clientIP {
			continue
		}
		if p := a.client.Load(); p == nil {
			first := src
			a.client.Store(&first)
		} else if *p != src {
			continue
		}
		dst, payload, err := parseUDPHeader(buf[:n])
		if err != nil {
			a.log.Debug("socks5: udp datagram dropped", "err", err)
			continue
		}
		ip := dst.ip
		if dst.name != "" {
			ctx, cancel := context.WithTimeout(a.ctx, a.s.dialTimeout())
			ips, err := resolve(ctx, a.s.Resolver, dst.name)
			cancel()
			if err != nil {
				a.log.Debug("socks5: udp datagram dropped", "dst", dst, "err", err)
				continue
			}
			ip = ips[0]
		}
		to := netip.AddrPortFrom(ip, dst.port)
		a.peers.add(to)
		if fast {
			_, err = w.WriteToUDPAddrPort(payload, to)
		} else {
			_, err = a.up.WriteTo(payload, net.UDPAddrFromAddrPort(to))
		}
		if err != nil {
			a.log.Debug("socks5: udp datagram dropped", "dst", to, "err", err)
			if a.ctx.Err() != nil {
				return
			}
		}
	}
}

// toClient relays datagrams arriving on the Dialer's socket to the client,
// each behind a header naming its source.
func (a *association) toClient() {
	buf := udpBufs.Get().(*[udpBufSize]byte)
	defer udpBufs.Put(buf)
	r, fast := a.up.(udpAddrPortReader)
	for {
		var n int
		var from netip.AddrPort
		var err error
		if fast {
			n, from, err = r.ReadFromUDPAddrPort(buf[udpHeaderMax:])
		} else {
			var addr net.Addr
			n, addr, err = a.up.ReadFrom(buf[udpHeaderMax:])
			from = addrPort(addr)
		}
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		client := a.client.Load()
		if client == nil || !a.peers.has(from) {
			continue
		}
		hl := 4 + 2 + 4
		if !from.Addr().Is4() {
			hl = 4 + 2 + 16
		}
		start := udpHeaderMax - hl
		appendUDPHeader(buf[start:start], from)
		if _, err := a.cl.WriteToUDPAddrPort(buf[start:udpHeaderMax+n], *client); err != nil && a.ctx.Err() != nil {
			return
		}
	}
}
