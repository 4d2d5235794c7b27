package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestNetstackWire joins two netstack devices by a wire that checks every
// packet as an OS TUN peer's kernel would: no longer than the MTU, IP and
// TCP checksums right (the device cuts TCP's 64 KiB packets into segments
// and computes them), then moves a TCP stream each way over it, IPv4 and
// IPv6.
func TestNetstackWire(t *testing.T) {
	for _, tt := range []struct{ a, b string }{{"10.98.0.1", "10.98.0.2"}, {"fd00:98::1", "fd00:98::2"}} {
		t.Run(tt.a, func(t *testing.T) {
			const mtu = 1400
			addrA, addrB := netip.MustParseAddr(tt.a), netip.MustParseAddr(tt.b)
			devA, netA, err := NewNetstack([]netip.Addr{addrA}, mtu)
			if err != nil {
				t.Fatal(err)
			}
			defer devA.Close()
			devB, netB, err := NewNetstack([]netip.Addr{addrB}, mtu)
			if err != nil {
				t.Fatal(err)
			}
			defer devB.Close()
			var bad atomic.Value
			var pkts, multi atomic.Int64
			check := func(batch [][]byte) {
				if len(batch) > 1 {
					multi.Add(1)
				}
				for _, pkt := range batch {
					if err := checkPacket(pkt, mtu); err != nil {
						bad.CompareAndSwap(nil, fmt.Sprintf("%v: % x", err, pkt[:min(len(pkt), 60)]))
					}
					pkts.Add(1)
				}
			}
			go wire(devA, devB, mtu, check)
			go wire(devB, devA, mtu, check)

			ln, err := netB.ListenTCPAddrPort(netip.AddrPortFrom(addrB, 80))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				io.Copy(c, c) // echo
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := netA.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(addrB, 80))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			data := make([]byte, 8<<20)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			go func() { c.Write(data); c.CloseWrite() }()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("echoed %d octets (sha256 %x), sent %d (%x): %v", len(got), sha256.Sum256(got), len(data), sha256.Sum256(data), err)
			}
			if b := bad.Load(); b != nil {
				t.Fatalf("bad packet on the wire: %s", b)
			}
			if multi.Load() == 0 {
				t.Errorf("%d packets, never more than one per read", pkts.Load())
			}
		})
	}
}

// wire copies what from's stack sends to to's, until from is closed,
// showing each batch read to see (which must not keep it).
func wire(from, to tun.Device, mtu int, see func(batch [][]byte)) {
	const offset = 16
	bufs := make([][]byte, from.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, offset+mtu)
	}
	sizes := make([]int, len(bufs))
	pkts, out := make([][]byte, len(bufs)), make([][]byte, len(bufs))
	for {
		n, err := from.Read(bufs, sizes, offset)
		if err != nil {
			return
		}
		for i := range n {
			pkts[i], out[i] = bufs[i][offset:offset+sizes[i]], bufs[i][:offset+sizes[i]]
		}
		if see != nil {
			see(pkts[:n])
		}
		to.Write(out[:n], offset)
	}
}

// checkPacket checks an IP packet as a receiving kernel would: length,
// header checksum (IPv4), and the TCP checksum.
func checkPacket(pkt []byte, mtu int) error {
	if len(pkt) > mtu {
		return fmt.Errorf("%d octets, longer than the MTU %d", len(pkt), mtu)
	}
	var src, dst tcpip.Address
	var proto tcpip.TransportProtocolNumber
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		ip := header.IPv4(pkt)
		if !ip.IsValid(len(pkt)) || int(ip.TotalLength()) != len(pkt) {
			return fmt.Errorf("IPv4 lengths")
		}
		if !ip.IsChecksumValid() {
			return fmt.Errorf("IPv4 header checksum")
		}
		src, dst, proto, l4 = ip.SourceAddress(), ip.DestinationAddress(), ip.TransportProtocol(), ip.Payload()
	case 6:
		ip := header.IPv6(pkt)
		if !ip.IsValid(len(pkt)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(pkt) {
			return fmt.Errorf("IPv6 lengths")
		}
		src, dst, proto, l4 = ip.SourceAddress(), ip.DestinationAddress(), ip.TransportProtocol(), ip.Payload()
	default:
		return fmt.Errorf("IP version %d", pkt[0]>>4)
	}
	if proto != header.TCPProtocolNumber {
		return nil
	}
	xsum := header.PseudoHeaderChecksum(proto, src, dst, uint16(len(l4)))
	if checksum.Checksum(l4, xsum) != 0xffff {
		return fmt.Errorf("TCP checksum")
	}
	return nil
}

// TestNetstackLocal moves a TCP stream between two sockets of one
// netstack, which the stack delivers itself, GSO packets and all.
func TestNetstackLocal(t *testing.T) {
	addr := netip.MustParseAddr("10.98.1.1")
	dev, ns, err := NewNetstack([]netip.Addr{addr}, 1400)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	ln, err := ns.ListenTCPAddrPort(netip.AddrPortFrom(addr, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		done <- [32]byte(h.Sum(nil))
	}()
	c, err := ns.DialTCPAddrPort(netip.AddrPortFrom(addr, 80))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	c.Write(data)
	c.Close()
	select {
	case sum := <-done:
		if sum != sha256.Sum256(data) {
			t.Fatal("the stream arrived damaged")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not arrive")
	}
}

// TestNetstackAllocs moves a TCP stream between two netstack devices
// joined by a wire and counts the allocations of the whole process per
// 64 KiB: the devices' paths allocate nothing per packet; what is left
// is the application's socket calls (gonet) and gVisor's own.
func TestNetstackAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	const mtu, chunk = 1400, 64 << 10
	addrA, addrB := netip.MustParseAddr("10.98.2.1"), netip.MustParseAddr("10.98.2.2")
	devA, netA, err := NewNetstack([]netip.Addr{addrA}, mtu)
	if err != nil {
		t.Fatal(err)
	}
	defer devA.Close()
	devB, netB, err := NewNetstack([]netip.Addr{addrB}, mtu)
	if err != nil {
		t.Fatal(err)
	}
	defer devB.Close()
	go wire(devA, devB, mtu, nil)
	go wire(devB, devA, mtu, nil)
	ln, err := netB.ListenTCPAddrPort(netip.AddrPortFrom(addrB, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer c.Close()
		buf := make([]byte, chunk)
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				done <- n
				return
			}
		}
	}()
	c, err := netA.DialTCPAddrPort(netip.AddrPortFrom(addrB, 80))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, chunk)
	const warm, chunks = 128, 512
	for range warm {
		c.Write(buf)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range chunks {
		c.Write(buf)
	}
	runtime.ReadMemStats(&m1)
	c.Close()
	if n := <-done; n != (warm+chunks)*chunk {
		t.Fatalf("received %d octets, sent %d", n, (warm+chunks)*chunk)
	}
	// A 64 KiB chunk is about 48 segments and a few ACKs on the wire;
	// gonet's Write and Read allocate a few objects per call, as many
	// as the reader's timing makes.
	if per := float64(m1.Mallocs-m0.Mallocs) / chunks; per > 24 {
		t.Errorf("%.1f allocations per 64 KiB written, want at most 24 (about 48 segments)", per)
	} else {
		t.Logf("%.1f allocations per 64 KiB written", per)
	}
}

// TestNetstackQueueBound sends large UDP datagrams from the stack while
// nothing reads the device: the queue stops at its bound in octets (with
// an MTU of 64000) or in packets (1400: fragments), and reads drain it.
func TestNetstackQueueBound(t *testing.T) {
	for _, mtu := range []int{64000, 1400} {
		t.Run(fmt.Sprint(mtu), func(t *testing.T) { testQueueBound(t, mtu) })
	}
}

func testQueueBound(t *testing.T, mtu int) {
	addr := netip.MustParseAddr("10.98.3.1")
	dev, ns, err := NewNetstack([]netip.Addr{addr}, mtu)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	d := dev.(*netstackDevice)
	msg := make([]byte, 60000)
	var queued, octets, after int
	// Each socket blocks at its send buffer: as many as it takes to fill
	// the queue, and a few more.
	for range 1000 {
		c, err := ns.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort("10.98.3.2:9"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			if _, err := c.Write(msg); err != nil {
				break
			}
		}
		d.mu.Lock()
		queued, octets = d.queued, d.octets
		d.mu.Unlock()
		if queued == netstackQueue || octets > netstackQueueBytes-mtu {
			if after++; after == 3 {
				break
			}
		}
	}
	full := queued == netstackQueue || octets > netstackQueueBytes-mtu
	if octets > netstackQueueBytes || queued > netstackQueue || !full {
		t.Fatalf("%d packets, %d octets queued; the bound is %d packets, %d octets", queued, octets, netstackQueue, netstackQueueBytes)
	}
	bufs := make([][]byte, netstackBatch)
	for i := range bufs {
		bufs[i] = make([]byte, mtu)
	}
	sizes := make([]int, len(bufs))
	for read := 0; read < queued; {
		n, err := dev.Read(bufs, sizes, 0)
		if err != nil || n == 0 {
			t.Fatalf("read %d of %d: %d, %v", read, queued, n, err)
		}
		read += n
	}
	if d.queued != 0 || d.octets != 0 {
		t.Fatalf("after reading all: %d packets, %d octets queued", d.queued, d.octets)
	}
}
