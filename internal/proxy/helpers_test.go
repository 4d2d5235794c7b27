package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// testDialer is a net.Dialer that reaches loopback only and refuses the
// addresses in refuse, as policy would. hang makes it wait for the
// context instead (to exercise timeouts).
type testDialer struct {
	mu     sync.Mutex
	refuse map[netip.AddrPort]bool
	hang   bool
}

func (d *testDialer) check(ap netip.AddrPort) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !ap.Addr().IsLoopback() || d.refuse[ap] {
		return fmt.Errorf("test dialer: %v: %w", ap, ErrRefused)
	}
	return nil
}

func (d *testDialer) Refuse(ap netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refuse == nil {
		d.refuse = map[netip.AddrPort]bool{}
	}
	d.refuse[ap] = true
}

func (d *testDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("test dialer: address %q is not literal: %v", address, err)
	}
	if err := d.check(ap); err != nil {
		return nil, err
	}
	if d.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, address)
}

func (d *testDialer) ListenPacket(ctx context.Context, network string) (net.PacketConn, error) {
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	return &testPacketConn{UDPConn: c, d: d}, nil
}

// testPacketConn refuses to send where the dialer would refuse to dial.
type testPacketConn struct {
	*net.UDPConn
	d *testDialer
}

func (c *testPacketConn) WriteToUDPAddrPort(p []byte, ap netip.AddrPort) (int, error) {
	if err := c.d.check(ap); err != nil {
		return 0, err
	}
	return c.UDPConn.WriteToUDPAddrPort(p, ap)
}

func (c *testPacketConn) WriteTo(p []byte, a net.Addr) (int, error) {
	return c.WriteToUDPAddrPort(p, addrPort(a))
}

// testResolver answers from a map; other names do not exist.
type testResolver map[string][]netip.Addr

func (r testResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ips, ok := r[strings.TrimSuffix(host, ".")]; ok {
		return append([]netip.Addr(nil), ips...), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

var loopback4 = netip.MustParseAddr("127.0.0.1")

func newResolver() testResolver {
	return testResolver{"web.test": {loopback4}, "dns.test": {loopback4}}
}

// webServer is a real HTTP server on loopback that answers with the
// request's Host and the headers it got.
func webServer(t testing.TB) (*httptest.Server, netip.AddrPort) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		r.Header.Write(&b)
		fmt.Fprintf(w, "hello %s %s\n%s", r.Host, r.URL.Path, b.String())
	}))
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String())
}

// closedPort returns a loopback port that nobody listens on.
func closedPort(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return ap
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serve runs srv on a loopback listener until the test ends and returns
// its address.
func serve(t testing.TB, srv interface {
	Serve(net.Listener) error
	Close() error
}) string {
	t.Helper()
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

// logBuffer collects Debug logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// socksConn is a raw SOCKS5 client.
type socksConn struct {
	t testing.TB
	net.Conn
}

func dialSOCKS(t testing.TB, addr string) *socksConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &socksConn{t, c}
}

func (c *socksConn) send(p ...byte) {
	c.t.Helper()
	if _, err := c.Write(p); err != nil {
		c.t.Fatal(err)
	}
}

func (c *socksConn) expect(want ...byte) {
	c.t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		c.t.Fatalf("reading %x: %v", want, err)
	}
	if !bytes.Equal(got, want) {
		c.t.Fatalf("got %x, want %x", got, want)
	}
}

// expectClosed checks the server closed the connection without sending.
func (c *socksConn) expectClosed() {
	c.t.Helper()
	var b [1]byte
	if n, err := c.Read(b[:]); err == nil || isTimeout(err) {
		c.t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
}

// reply reads a reply and returns its code and bound address.
func (c *socksConn) reply() (Reply, netip.AddrPort) {
	c.t.Helper()
	var b [22]byte
	if _, err := io.ReadFull(c, b[:4]); err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	if b[0] != 5 || b[2] != 0 {
		c.t.Fatalf("reply header %x", b[:4])
	}
	n := 4
	if b[3] == atypIPv6 {
		n = 16
	}
	if _, err := io.ReadFull(c, b[4:4+n+2]); err != nil {
		c.t.Fatalf("reading reply address: %v", err)
	}
	a, _, err := decodeAddr(b[3], b[4:4+n+2])
	if err != nil {
		c.t.Fatal(err)
	}
	return Reply(b[1]), netip.AddrPortFrom(a.ip, a.port)
}

// request builds a request with an address of ATYP 1, 3 or 4 from host.
func request(cmd byte, host string, port uint16) []byte {
	b := []byte{5, cmd, 0}
	if ip, err := netip.ParseAddr(host); err == nil {
		b = appendAddr(b, netip.AddrPortFrom(ip, port))
		if ip.Is4In6() { // keep the mapped form: appendAddr unmaps
			a := ip.As16()
			b = append(append([]byte{5, cmd, 0, atypIPv6}, a[:]...), byte(port>>8), byte(port))
		}
		return b
	}
	return nameRequest(cmd, host, port)
}

// nameRequest builds a request with a domain name (ATYP 3).
func nameRequest(cmd byte, name string, port uint16) []byte {
	b := append([]byte{5, cmd, 0, atypDomain, byte(len(name))}, name...)
	return append(b, byte(port>>8), byte(port))
}

// connect greets with no authentication and sends a CONNECT.
func (c *socksConn) connect(host string, port uint16) (Reply, netip.AddrPort) {
	c.t.Helper()
	c.send(5, 1, 0)
	c.expect(5, 0)
	c.send(request(cmdConnect, host, port)...)
	return c.reply()
}
