// Package proxy lets applications that cannot use a TUN reach the tunnel:
// a SOCKS5 server (RFC 1928, with RFC 1929 username/password), an HTTP
// CONNECT and forward proxy, and TCP port forwarders.
//
// The proxies make no routing decision of their own. Every connection and
// every UDP datagram goes through a [Dialer], which decides whether the
// destination is reached through the netstack and ESP, in the clear from the
// host, or refused; a refusal is reported as [ErrRefused] and becomes SOCKS5
// reply 0x02 or HTTP 403. Domain names are resolved with a [Resolver] (never
// the system resolver), so that a name asked through the proxy triggers the
// same DNS discovery as a name asked by an application on the TUN.
//
// Wire input is hostile. Each server bounds its connections (Limits.MaxConns:
// over the limit a new connection is closed at once), gives each client a
// fixed deadline to finish its handshake however slowly it sends
// (Limits.HandshakeTimeout), reads handshakes into a fixed buffer of a few
// hundred bytes, and relays with pooled buffers.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Dialer opens connections for the proxies; it owns the routing decision.
// *net.Dialer is a Dialer that sends everything in the clear from the host.
//
// The address is always a literal IP address and port ("192.0.2.1:80",
// "[2001:db8::1]:443"): the proxies resolve names with their Resolver
// first. A destination that policy forbids must fail with an error that
// wraps ErrRefused; ErrNetworkUnreachable, ErrHostUnreachable and
// ErrConnectionRefused, syscall errors and timeouts are mapped as
// [ReplyFor] and [HTTPStatusFor] say.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// PacketListener is implemented by Dialers that can carry UDP for SOCKS5
// UDP ASSOCIATE. ListenPacket returns an unconnected socket whose WriteTo
// routes each datagram by its destination (and fails with an error that
// wraps ErrRefused for a destination that policy forbids); ReadFrom returns
// datagrams from any source. A socket that also has *net.UDPConn's
// WriteToUDPAddrPort and ReadFromUDPAddrPort is used through them, which
// allocate nothing per datagram. A SOCKS5 server whose Dialer is not a
// PacketListener refuses UDP ASSOCIATE with reply 0x07.
type PacketListener interface {
	ListenPacket(ctx context.Context, network string) (net.PacketConn, error)
}

// Resolver resolves domain names for the proxies. Its method has the
// signature of (*net.Resolver).LookupNetIP, so a net.Resolver whose Dial
// goes to oevpn's DNS stub is a Resolver; network is always "ip". An error
// that wraps ErrRefused (a name policy forbids) becomes reply 0x02 or 403;
// any other error, or no address, becomes "host unreachable".
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Errors a Dialer or Resolver wraps to choose the reply the client gets.
var (
	// ErrRefused: policy forbids the destination (SOCKS5 0x02, HTTP 403).
	ErrRefused = errors.New("destination refused by policy")
	// ErrNetworkUnreachable: no route (SOCKS5 0x03, HTTP 502).
	ErrNetworkUnreachable = errors.New("network unreachable")
	// ErrHostUnreachable: the host does not answer or the name does not
	// resolve (SOCKS5 0x04, HTTP 502).
	ErrHostUnreachable = errors.New("host unreachable")
	// ErrConnectionRefused: the host refused the connection (SOCKS5 0x05,
	// HTTP 502).
	ErrConnectionRefused = errors.New("connection refused")
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Reply is a SOCKS5 reply code (RFC 1928 section 6).
type Reply byte

// Reply codes, RFC 1928 section 6.
const (
	ReplySucceeded               Reply = 0x00
	ReplyGeneralFailure          Reply = 0x01
	ReplyNotAllowed              Reply = 0x02 // connection not allowed by ruleset
	ReplyNetworkUnreachable      Reply = 0x03
	ReplyHostUnreachable         Reply = 0x04
	ReplyConnectionRefused       Reply = 0x05
	ReplyTTLExpired              Reply = 0x06 // used for timeouts
	ReplyCommandNotSupported     Reply = 0x07
	ReplyAddressTypeNotSupported Reply = 0x08
)

// ReplyFor returns the SOCKS5 reply for an error from a Dialer or Resolver:
// nil is success, ErrRefused is 0x02, a timeout is 0x06 (TTL expired),
// unreachable and refused errors (the sentinels or the syscall errors) are
// 0x03, 0x04 and 0x05, a name that does not resolve is 0x04, and anything
// else is 0x01.
func ReplyFor(err error) Reply {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return ReplySucceeded
	case errors.Is(err, ErrRefused):
		return ReplyNotAllowed
	case errors.Is(err, ErrNetworkUnreachable), errors.Is(err, syscall.ENETUNREACH):
		return ReplyNetworkUnreachable
	case errors.Is(err, ErrHostUnreachable), errors.Is(err, syscall.EHOSTUNREACH):
		return ReplyHostUnreachable
	case errors.Is(err, ErrConnectionRefused), errors.Is(err, syscall.ECONNREFUSED):
		return ReplyConnectionRefused
	case isTimeout(err):
		return ReplyTTLExpired
	case errors.As(err, &dnsErr):
		return ReplyHostUnreachable
	}
	return ReplyGeneralFailure
}

// HTTPStatusFor returns the HTTP status for an error from a Dialer or
// Resolver: 403 for ErrRefused, 504 for a timeout, 502 otherwise (200 for
// nil).
func HTTPStatusFor(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrRefused):
		return http.StatusForbidden
	case isTimeout(err):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

// Limits bound what a server spends on clients. Zero fields take the
// defaults.
type Limits struct {
	// MaxConns is the most client connections open at once (including
	// those relaying); a connection over the limit is closed as soon as it
	// is accepted. Default 1024.
	MaxConns int
	// HandshakeTimeout is the time a client has, from accept, to complete
	// its SOCKS5 handshake or send its HTTP request headers. Default 10 s.
	HandshakeTimeout time.Duration
	// DialTimeout bounds name resolution plus connecting. Default 30 s.
	DialTimeout time.Duration
}

// Defaults for Limits.
const (
	DefaultMaxConns         = 1024
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDialTimeout      = 30 * time.Second
)

func (l Limits) maxConns() int {
	if l.MaxConns > 0 {
		return l.MaxConns
	}
	return DefaultMaxConns
}

func (l Limits) handshakeTimeout() time.Duration {
	if l.HandshakeTimeout > 0 {
		return l.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

func (l Limits) dialTimeout() time.Duration {
	if l.DialTimeout > 0 {
		return l.DialTimeout
	}
	return DefaultDialTimeout
}

func logger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// resolve returns the addresses of host, an IP literal or a name asked of
// r. Addresses come back unmapped (::ffff:192.0.2.1 is 192.0.2.1).
func resolve(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return nil, &net.AddrError{Err: "zoned address not allowed", Addr: host}
		}
		return []netip.Addr{ip.Unmap()}, nil
	}
	if !validName(host) {
		return nil, &net.DNSError{Err: "invalid name", Name: strconv.Quote(host), IsNotFound: true}
	}
	if r == nil {
		return nil, &net.DNSError{Err: "no resolver for names", Name: host, IsNotFound: true}
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// dial resolves host and connects to each of its addresses in turn through
// d; it returns the first address's error if none connects.
func dial(ctx context.Context, d Dialer, r Resolver, network, host string, port uint16) (net.Conn, error) {
	ips, err := resolve(ctx, r, host)
	if err != nil {
		return nil, err
	}
	var first error
	for _, ip := range ips {
		c, err := d.DialContext(ctx, network, netip.AddrPortFrom(ip, port).String())
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// splitHostPort splits "host:port" and checks the port is a number in
// 1..65535.
func splitHostPort(hostport string) (string, uint16, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, &net.AddrError{Err: "bad host or port", Addr: hostport}
	}
	return host, uint16(port), nil
}

// tracker counts and remembers a server's listeners and connections so
// that it can enforce MaxConns and close everything.
type tracker struct {
	mu     sync.Mutex
	lns    map[net.Listener]struct{}
	conns  map[*trackedConn]struct{}
	closed bool
	ctx    context.Context // canceled by close
	cancel context.CancelFunc
}

func (t *tracker) init() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx == nil {
		t.ctx, t.cancel = context.WithCancel(context.Background())
		t.lns = map[net.Listener]struct{}{}
		t.conns = map[*trackedConn]struct{}{}
	}
}

// listen wraps ln; the wrapper's Accept closes connections over max.
func (t *tracker) listen(ln net.Listener, max int, log *slog.Logger) (net.Listener, error) {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrServerClosed
	}
	t.lns[ln] = struct{}{}
	return &limitListener{Listener: ln, t: t, max: max, log: log}, nil
}

func (t *tracker) close() error {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.cancel()
	var err error
	for ln := range t.lns {
		if e := ln.Close(); e != nil && err == nil {
			err = e
		}
	}
	for c := range t.conns {
		c.Conn.Close()
	}
	return err
}

// serve accepts on ln until it fails or the server closes, and runs handle
// on each connection on its own goroutine; handle's connection is closed
// when it returns.
func (t *tracker) serve(ln net.Listener, lim Limits, log *slog.Logger, handle func(net.Conn)) error {
	wl, err := t.listen(ln, lim.maxConns(), log)
	if err != nil {
		return err
	}
	defer wl.Close()
	for {
		c, err := wl.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

type limitListener struct {
	net.Listener
	t   *tracker
	max int
	log *slog.Logger
}

func (l *limitListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.t.mu.Lock()
			closed := l.t.closed
			l.t.mu.Unlock()
			if closed {
				return nil, ErrServerClosed
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				// EMFILE and the like: wait, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				l.log.Warn("proxy: accept", "err", err, "retry", delay)
				time.Sleep(delay)
				continue
			}
			return nil, err
		}
		delay = 0
		l.t.mu.Lock()
		if l.t.closed || len(l.t.conns) >= l.max {
			closed := l.t.closed
			l.t.mu.Unlock()
			c.Close()
			if closed {
				return nil, ErrServerClosed
			}
			l.log.Debug("proxy: connection limit reached, closing new connection", "limit", l.max)
			continue
		}
		tc := &trackedConn{Conn: c, t: l.t}
		l.t.conns[tc] = struct{}{}
		l.t.mu.Unlock()
		return tc, nil
	}
}

func (l *limitListener) Close() error {
	l.t.mu.Lock()
	delete(l.t.lns, l.Listener)
	l.t.mu.Unlock()
	return l.Listener.Close()
}

// trackedConn leaves the tracker when closed.
type trackedConn struct {
	net.Conn
	t    *tracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return err
}

// CloseWrite half-closes the connection if the underlying one can.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// NetConn returns the underlying connection.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }
