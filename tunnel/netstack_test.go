package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
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
			var segs, multi atomic.Int64
			wire := func(from, to tun.Device) {
				bufs := make([][]byte, from.BatchSize())
				for i := range bufs {
					bufs[i] = make([]byte, 16+mtu+100)
				}
				sizes := make([]int, len(bufs))
				for {
					n, err := from.Read(bufs, sizes, 16)
					if err != nil {
						return
					}
					if n > 1 {
						multi.Add(1)
					}
					out := make([][]byte, n)
					for i := range n {
						pkt := bufs[i][16 : 16+sizes[i]]
						if err := checkPacket(pkt, mtu); err != nil {
							bad.CompareAndSwap(nil, fmt.Sprintf("%v: % x", err, pkt[:min(len(pkt), 60)]))
						}
						segs.Add(1)
						out[i] = bufs[i][:16+sizes[i]]
					}
					to.Write(out, 16)
				}
			}
			go wire(devA, devB)
			go wire(devB, devA)

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
				t.Errorf("%d packets, never more than one per read", segs.Load())
			}
		})
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
