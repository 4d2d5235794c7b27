// Package relay is a UDP relay between two endpoints on this machine. Tests
// and the demo put it between two oevpn endpoints to watch what crosses the
// wire and to drop, delay or reorder datagrams (this machine has no netem).
package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Direction of a datagram through the relay.
type Direction int

// Directions: from the A side to B and back.
const (
	AToB Direction = iota
	BToA
)

// Verdict says what to do with a datagram.
type Verdict int

// Verdicts returned by a Filter.
const (
	Forward Verdict = iota
	Drop
)

// Filter inspects each datagram; it runs on the relay's goroutine for that
// direction and must not keep the slice.
type Filter func(dir Direction, datagram []byte) Verdict

// Relay forwards datagrams between two sockets on loopback: one that A
// sends to (and that B's datagrams appear to come from), one for B.
type Relay struct {
	forA, forB *net.UDPConn
	filter     Filter

	mu    sync.Mutex
	peerA netip.AddrPort // learned from A's first datagram
	peerB netip.AddrPort
	wg    sync.WaitGroup
}

// New starts a relay towards b; A's address is learned from the first
// datagram A sends. filter may be nil.
func New(b netip.AddrPort, filter Filter) (*Relay, error) {
	lo := &net.UDPAddr{IP: b.Addr().AsSlice()}
	forA, err := net.ListenUDP("udp", lo)
	if err != nil {
		return nil, err
	}
	forB, err := net.ListenUDP("udp", lo)
	if err != nil {
		forA.Close()
		return nil, err
	}
	r := &Relay{forA: forA, forB: forB, filter: filter, peerB: b}
	r.wg.Add(2)
	go r.run(forA, forB, AToB)
	go r.run(forB, forA, BToA)
	return r, nil
}

// AddrForA is where A sends datagrams meant for B.
func (r *Relay) AddrForA() netip.AddrPort { return r.forA.LocalAddr().(*net.UDPAddr).AddrPort() }

// AddrForB is where B sends datagrams meant for A.
func (r *Relay) AddrForB() netip.AddrPort { return r.forB.LocalAddr().(*net.UDPAddr).AddrPort() }

// SetA tells the relay A's address before A has sent anything.
func (r *Relay) SetA(a netip.AddrPort) {
	r.mu.Lock()
	r.peerA = a
	r.mu.Unlock()
}

func (r *Relay) run(in, out *net.UDPConn, dir Direction) {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := in.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		r.mu.Lock()
		if dir == AToB && !r.peerA.IsValid() {
			r.peerA = from
		}
		to := r.peerB
		if dir == BToA {
			to = r.peerA
		}
		r.mu.Unlock()
		if !to.IsValid() || (r.filter != nil && r.filter(dir, buf[:n]) == Drop) {
			continue
		}
		out.WriteToUDPAddrPort(buf[:n], to)
	}
}

// Close stops the relay.
func (r *Relay) Close() error {
	err := errors.Join(r.forA.Close(), r.forB.Close())
	r.wg.Wait()
	return err
}
