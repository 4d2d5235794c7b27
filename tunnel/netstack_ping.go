package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// PingAddr is the address of an ICMP echo socket.
type PingAddr struct{ addr netip.Addr }

// Network implements net.Addr: "ping4" or "ping6".
func (a PingAddr) Network() string {
	if a.addr.Is4() {
		return "ping4"
	}
	return "ping6"
}

// String implements net.Addr.
func (a PingAddr) String() string { return a.addr.String() }

// Addr returns the IP address.
func (a PingAddr) Addr() netip.Addr { return a.addr }

// PingConn is an ICMP echo socket (as Linux's unprivileged ping sockets):
// it writes echo requests, whose identifier the stack sets, and reads the
// replies to them.
type PingConn struct {
	laddr, raddr PingAddr
	wq           waiter.Queue
	ep           tcpip.Endpoint

	mu      sync.Mutex
	expired chan struct{} // closed when the read deadline passes; replaced when it moves
	timer   *time.Timer
}

// DialPingAddr opens an ICMP echo socket from laddr (if valid) to raddr.
func (n *Netstack) DialPingAddr(laddr, raddr netip.Addr) (*PingConn, error) {
	laddr, raddr = laddr.Unmap(), raddr.Unmap()
	if !raddr.IsValid() {
		return nil, errors.New("tunnel: ping: no remote address")
	}
	if laddr.IsValid() && laddr.Is4() != raddr.Is4() {
		return nil, fmt.Errorf("tunnel: ping: %v and %v are of different families", laddr, raddr)
	}
	tp, np := icmp.ProtocolNumber4, ipv4.ProtocolNumber
	if raddr.Is6() {
		tp, np = icmp.ProtocolNumber6, ipv6.ProtocolNumber
	}
	pc := &PingConn{laddr: PingAddr{laddr}, raddr: PingAddr{raddr}, expired: make(chan struct{})}
	ep, err := n.stack.NewEndpoint(tp, np, &pc.wq)
	if err != nil {
		return nil, fmt.Errorf("tunnel: ping: %v", err)
	}
	pc.ep = ep
	if laddr.IsValid() {
		fa, _ := fullAddr(netip.AddrPortFrom(laddr, 0))
		if err := ep.Bind(fa); err != nil {
			ep.Close()
			return nil, fmt.Errorf("tunnel: ping: bind %v: %v", laddr, err)
		}
	}
	fa, _ := fullAddr(netip.AddrPortFrom(raddr, 0))
	if err := ep.Connect(fa); err != nil {
		ep.Close()
		return nil, fmt.Errorf("tunnel: ping: connect %v: %v", raddr, err)
	}
	return pc, nil
}

// LocalAddr implements net.Conn.
func (pc *PingConn) LocalAddr() net.Addr { return pc.laddr }

// RemoteAddr implements net.Conn.
func (pc *PingConn) RemoteAddr() net.Addr { return pc.raddr }

// Close implements net.Conn.
func (pc *PingConn) Close() error {
	pc.ep.Close()
	pc.wq.Notify(waiter.EventIn) // wake a reader
	return nil
}

// Write sends an ICMP echo request (the message, header included).
func (pc *PingConn) Write(p []byte) (int, error) {
	n, err := pc.ep.Write(bytes.NewReader(p), tcpip.WriteOptions{})
	if err != nil {
		return int(n), fmt.Errorf("tunnel: ping: write: %v", err)
	}
	return int(n), nil
}

// Read reads one ICMP echo reply (the message, header included), waiting
// until the read deadline.
func (pc *PingConn) Read(p []byte) (int, error) {
	e, ch := waiter.NewChannelEntry(waiter.EventIn)
	pc.wq.EventRegister(&e)
	defer pc.wq.EventUnregister(&e)
	for {
		w := tcpip.SliceWriter(p)
		res, err := pc.ep.Read(&w, tcpip.ReadOptions{})
		if _, ok := err.(*tcpip.ErrWouldBlock); !ok {
			if err != nil {
				return 0, fmt.Errorf("tunnel: ping: read: %v", err)
			}
			return res.Count, nil
		}
		pc.mu.Lock()
		expired := pc.expired
		pc.mu.Unlock()
		select {
		case <-ch:
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// SetDeadline implements net.Conn: writes never wait, so it is the read
// deadline.
func (pc *PingConn) SetDeadline(t time.Time) error { return pc.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn: writes never wait.
func (pc *PingConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn.
func (pc *PingConn) SetReadDeadline(t time.Time) error {
	pc.mu.Lock()
	if pc.timer != nil {
		pc.timer.Stop() // if it fired already, it closes the old channel
	}
	expired := make(chan struct{})
	pc.expired, pc.timer = expired, nil
	if !t.IsZero() {
		if d := time.Until(t); d > 0 {
			pc.timer = time.AfterFunc(d, func() { close(expired) })
		} else {
			close(expired)
		}
	}
	pc.mu.Unlock()
	pc.wq.Notify(waiter.EventIn) // a waiting reader takes the new deadline
	return nil
}
