package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// sink accepts connections and discards what they send (io.Discard reads
// with pooled buffers).
func sink(tb testing.TB) net.Listener {
	ln := listen(tb)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// forwardTo starts a Forwarder to ln's address, hiding the TCP
// connections on both sides when hidden (the netstack case).
func forwardTo(tb testing.TB, ln net.Listener, hidden bool) net.Conn {
	tb.Helper()
	f := &Forwarder{Dialer: &testDialer{}, Target: ln.Addr().String()}
	front := listen(tb)
	var serveOn net.Listener = front
	if hidden {
		f.Dialer = &hiddenDialer{}
		serveOn = hiddenListener{front}
	}
	go f.Serve(serveOn)
	tb.Cleanup(func() { f.Close() })
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// echo accepts connections and sends back what they send.
func echo(tb testing.TB) net.Listener {
	ln := listen(tb)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// TestRelayDoesNotAllocate checks the pooled-buffer relay allocates
// nothing per read once running: each round trip through an echo server
// makes the relay read and write at least once each way.
func TestRelayDoesNotAllocate(t *testing.T) {
	c := forwardTo(t, echo(t), true)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 16<<10)
	roundTrip := func() {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 { // warm up: the pool, goroutine stacks
		roundTrip()
	}
	allocs := testing.AllocsPerRun(500, roundTrip)
	t.Logf("%.2f allocations per 16 KiB round trip", allocs)
	if allocs > 0.5 {
		t.Errorf("%.2f allocations per 16 KiB round trip, want 0", allocs)
	}
}

// BenchmarkRelay measures throughput through a Forwarder: between two host
// sockets (kernel splice) and between connections that hide their TCP
// (the pooled-buffer path a netstack connection takes).
func BenchmarkRelay(b *testing.B) {
	for _, tc := range []struct {
		name   string
		hidden bool
	}{{"splice", false}, {"pooled", true}} {
		b.Run(tc.name, func(b *testing.B) {
			c := forwardTo(b, sink(b), tc.hidden)
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSOCKS5Connect measures a whole CONNECT: TCP to the proxy,
// greeting, request, the proxy's connect to a loopback server, reply.
func BenchmarkSOCKS5Connect(b *testing.B) {
	up := sink(b)
	port := netip.MustParseAddrPort(up.Addr().String()).Port()
	s := &SOCKS5Server{Dialer: &testDialer{}}
	addr := serve(b, s)
	msg := append([]byte{5, 1, 0}, request(cmdConnect, "127.0.0.1", port)...)
	var resp [2 + 10]byte
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(msg)
		if _, err := io.ReadFull(c, resp[:]); err != nil || resp[3] != 0 {
			b.Fatalf("reply %x, %v", resp, err)
		}
		c.Close()
	}
}
