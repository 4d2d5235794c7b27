package proxy

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// hiddenConn hides the *net.TCPConn under a connection (as a netstack
// connection would be), so the relay takes the pooled-buffer path.
type hiddenConn struct{ c *net.TCPConn }

func (h hiddenConn) Read(p []byte) (int, error)         { return h.c.Read(p) }
func (h hiddenConn) Write(p []byte) (int, error)        { return h.c.Write(p) }
func (h hiddenConn) Close() error                       { return h.c.Close() }
func (h hiddenConn) CloseWrite() error                  { return h.c.CloseWrite() }
func (h hiddenConn) LocalAddr() net.Addr                { return h.c.LocalAddr() }
func (h hiddenConn) RemoteAddr() net.Addr               { return h.c.RemoteAddr() }
func (h hiddenConn) SetDeadline(t time.Time) error      { return h.c.SetDeadline(t) }
func (h hiddenConn) SetReadDeadline(t time.Time) error  { return h.c.SetReadDeadline(t) }
func (h hiddenConn) SetWriteDeadline(t time.Time) error { return h.c.SetWriteDeadline(t) }

type hiddenListener struct{ net.Listener }

func (l hiddenListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hiddenConn{c.(*net.TCPConn)}, nil
}

type hiddenDialer struct{ testDialer }

func (d *hiddenDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.testDialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return hiddenConn{c.(*net.TCPConn)}, nil
}

// TestForward runs a forward both ways round: a host listener dialing
// through the Dialer (kernel splice between two host sockets), and a
// "netstack" listener dialing the host (pooled buffers); in both the
// client's half-close reaches the server and the answer comes back.
func TestForward(t *testing.T) {
	up := listen(t)
	go countServer(up)
	for _, tc := range []struct {
		name string
		wrap func(net.Listener) net.Listener
		d    Dialer
	}{
		{"into the tunnel", func(l net.Listener) net.Listener { return l }, &testDialer{}},
		{"from the tunnel", func(l net.Listener) net.Listener { return hiddenListener{l} }, &hiddenDialer{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &Forwarder{Dialer: tc.d, Resolver: newResolver(), Target: "web.test:" + portOf(up)}
			ln := listen(t)
			done := make(chan error, 1)
			go func() { done <- f.Serve(tc.wrap(ln)) }()
			defer func() {
				f.Close()
				if err := <-done; err != ErrServerClosed {
					t.Errorf("Serve: %v", err)
				}
			}()
			for range 3 {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				checkCount(t, c)
				c.Close()
			}
		})
	}
}

func portOf(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

// TestForwardRefused: a refused target closes the client's connection.
func TestForwardRefused(t *testing.T) {
	up := listen(t)
	go countServer(up)
	d := &testDialer{}
	d.Refuse(addrPort(up.Addr()))
	var logs logBuffer
	f := &Forwarder{Dialer: d, Target: up.Addr().String(), Logger: logs.logger()}
	addr := serve(t, f)
	c := dialSOCKS(t, addr)
	c.expectClosed()
	time.Sleep(20 * time.Millisecond)
	if l := logs.String(); !strings.Contains(l, "refused by policy") {
		t.Errorf("log: %s", l)
	}
}

// TestForwardBadTarget: Serve refuses a target without a port.
func TestForwardBadTarget(t *testing.T) {
	for _, target := range []string{"web.test", "127.0.0.1:0", "web.test:80"} {
		f := &Forwarder{Dialer: &testDialer{}, Target: target}
		if err := f.Serve(listen(t)); err == nil {
			t.Fatalf("Serve accepted target %q without a resolver", target)
		}
	}
}
