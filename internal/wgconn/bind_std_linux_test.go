package wgconn

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
)

// TestReceiveAllocatesNothing floods a StdNetBind with small datagrams, as
// a spoofed IKE_SA_INIT flood does, and checks that receiving them makes
// no garbage (which grew the daemon's heap, and so its resident set, with
// each flood) and that each comes with its source.
func TestReceiveAllocatesNothing(t *testing.T) {
	bind := NewStdNetBind()
	fns, port, err := bind.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer bind.Close()
	recv := fns[0] // IPv4
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	snd, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	from := snd.LocalAddr().(*net.UDPAddr).AddrPort()

	batch := bind.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, batch)
	eps := make([]Endpoint, batch)
	msg := make([]byte, 300)
	// round sends a burst and receives it all; it returns the datagrams
	// received.
	round := func() int {
		const burst = 64
		for range burst {
			if _, err := snd.WriteToUDPAddrPort(msg, to); err != nil {
				t.Fatal(err)
			}
		}
		got := 0
		for got < burst {
			n, err := recv(bufs, sizes, eps)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if sizes[i] == 0 {
					continue
				}
				ap := eps[i].(*StdNetEndpoint).AddrPort
				if netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) != from || sizes[i] != len(msg) {
					t.Fatalf("datagram from %v of %d octets, want %v, %d", ap, sizes[i], from, len(msg))
				}
				got++
			}
		}
		return got
	}
	round() // the endpoints and the control buffers are made once
	// Collections do not make it allocate again (sync.Pool drops what it
	// holds on them).
	runtime.GC()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	n := 0
	for range 50 {
		n += round()
	}
	runtime.ReadMemStats(&m1)
	// Sending allocates nothing either; allow the odd runtime allocation
	// (the race detector's are more than odd).
	if allocs := m1.Mallocs - m0.Mallocs; raceEnabled {
		t.Logf("%d allocations for %d datagrams received (race detector)", allocs, n)
	} else if allocs := m1.Mallocs - m0.Mallocs; allocs > uint64(n)/100 {
		t.Errorf("%d allocations for %d datagrams received", allocs, n)
	}
}
