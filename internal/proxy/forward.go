package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

// Forwarder is a TCP port forward: it accepts connections on a listener and
// connects each to Target through Dialer, relaying both ways with half-close
// propagated. The same type serves both directions: a host listener with
// the node's Dialer forwards into the tunnel; a listener on the node's
// netstack with a *net.Dialer offers a host service to peers.
type Forwarder struct {
	// Dialer connects to Target.
	Dialer Dialer
	// Resolver resolves Target when it is a name, at each connection.
	// Nil: Target must be an IP address.
	Resolver Resolver
	// Target is the host:port every connection goes to.
	Target string
	// Limits bound connections; HandshakeTimeout is unused.
	Limits
	// Logger receives connection events at Debug level; nil discards.
	Logger *slog.Logger

	t tracker
}

// Serve accepts connections on ln until Close, and returns ErrServerClosed
// then. It may be called on several listeners.
func (f *Forwarder) Serve(ln net.Listener) error {
	host, port, err := splitHostPort(f.Target)
	if err != nil {
		return fmt.Errorf("forward: target: %w", err)
	}
	if _, err := netip.ParseAddr(host); err != nil && f.Resolver == nil {
		return fmt.Errorf("forward: target %q is a name and there is no Resolver", f.Target)
	}
	log := logger(f.Logger)
	return f.t.serve(ln, f.Limits, log, func(c net.Conn) {
		ctx, cancel := context.WithTimeout(f.t.ctx, f.dialTimeout())
		up, err := dial(ctx, f.Dialer, f.Resolver, "tcp", host, port)
		cancel()
		if err != nil {
			log.Debug("forward: dial failed", "from", c.RemoteAddr(), "to", f.Target, "err", err)
			return
		}
		defer up.Close()
		relay(c, up)
	})
}

// Close closes the listeners and every connection.
func (f *Forwarder) Close() error { return f.t.close() }

// relayBufSize is the size of a relay copy buffer, as io.Copy's.
const relayBufSize = 32 << 10

var relayBufs = sync.Pool{New: func() any { return new([relayBufSize]byte) }}

type closeWriter interface{ CloseWrite() error }

// relay copies a to b and b to a until both directions end. When one
// direction reaches EOF its writer is half-closed, so the peer sees the
// EOF; on an error both connections are closed.
func relay(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		pipe(b, a)
		close(done)
	}()
	pipe(a, b)
	<-done
}

func pipe(dst, src net.Conn) {
	if err := copyConn(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(closeWriter); !ok || cw.CloseWrite() != nil {
		dst.Close()
	}
}

// copyConn copies src to dst until EOF. Two host TCP connections use
// (*net.TCPConn).ReadFrom, which splices in the kernel on Linux; anything
// else goes through a pooled buffer, so nothing is allocated per read.
func copyConn(dst, src net.Conn) error {
	if d, ok := unwrap(dst).(*net.TCPConn); ok {
		if s, ok := unwrap(src).(*net.TCPConn); ok {
			_, err := d.ReadFrom(s)
			return err
		}
	}
	buf := relayBufs.Get().(*[relayBufSize]byte)
	defer relayBufs.Put(buf)
	for {
		n, err := src.Read(buf[:])
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func unwrap(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}
