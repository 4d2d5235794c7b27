package wgconn

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
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

// TestSendGathers sends batches through UDP GSO, where a message gathers
// its run of datagrams from the caller's buffers, and checks that every
// datagram arrives whole and in its own right: runs cut where the size
// changes, at a short datagram, at 64 datagrams and at 64 KiB, with no
// spare capacity behind any buffer (upstream needed it to copy into).
func TestSendGathers(t *testing.T) {
	bind := NewStdNetBind()
	if _, _, err := bind.Open(0); err != nil {
		t.Fatal(err)
	}
	defer bind.Close()
	rcv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	rcv.SetReadBuffer(8 << 20)
	ep, err := bind.ParseEndpoint(rcv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, sizes := range [][]int{
		{1400, 1400, 1400, 300, 1400, 1400},
		{1200, 1400, 1400, 1400},
		append(make([]int, 70), 5), // 70 of 900, then 5: a run ends at 64
		{60000, 6000, 6000},        // 64 KiB: the second starts a run
	} {
		for i := range sizes {
			if sizes[i] == 0 {
				sizes[i] = 900
			}
		}
		bufs := make([][]byte, len(sizes))
		for i, n := range sizes {
			bufs[i] = make([]byte, n, n) // no room behind
			for j := range bufs[i] {
				bufs[i][j] = byte(i + j)
			}
		}
		if err := bind.Send(bufs, ep); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		rcv.SetReadDeadline(time.Now().Add(2 * time.Second))
		for i := range bufs {
			n, err := rcv.Read(buf)
			if err != nil {
				t.Fatalf("sizes %v: datagram %d: %v", sizes, i, err)
			}
			if !bytes.Equal(buf[:n], bufs[i]) {
				t.Fatalf("sizes %v: datagram %d of %d octets, want %d octets of its own", sizes, i, n, len(bufs[i]))
			}
		}
	}
}
