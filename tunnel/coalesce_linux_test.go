package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/internal/lab"
)

// TestLabCoalescedWrite: the kernel takes the coalescer's super-packets
// from a real TUN device and hands a TCP socket exactly the stream they
// carry, for IPv4 and IPv6: a remote end made of hand-built segments opens
// a connection to a listener behind the device, then sends one run of
// segments that the coalescer writes as one super-packet.
func TestLabCoalescedWrite(t *testing.T) {
	ns, d := labOffloadTUN(t, "oeco0")
	w := newGatherWriter(d)
	if w == nil {
		t.Fatal("no gather writer for a TUN device with offloads (kernel without IFF_VNET_HDR offloads?)")
	}
	for _, v6 := range []bool{false, true} {
		dst := coDst4
		if v6 {
			dst = coDst6
		}
		var ln net.Listener
		if err := ns.Do(func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 5201).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c := newCoalescer(64, w)
		write := func(segs ...seg) int {
			t.Helper()
			for _, s := range segs {
				pkt := s.build()
				p, err := ipview.Parse(pkt)
				if err != nil || !c.add(pkt, &p) {
					t.Fatalf("segment %+v: %v", s, err)
				}
			}
			n := len(c.items)
			if err := c.flush(); err != nil {
				t.Fatal(err)
			}
			return n
		}
		const isn, mss, n = 7000, 1348, 24
		write(seg{v6: v6, flags: tcpSYN, seq: isn, tsval: 1})
		synAck := readSegment(t, d, v6)
		ack := binary.BigEndian.Uint32(synAck[4:]) + 1
		write(seg{v6: v6, seq: isn + 1, ack: ack, tsval: 1})
		segs := run(n, mss, isn+1, seg{v6: v6, ack: ack, tsval: 1})
		segs[n-1].flags = tcpACK | tcpPSH
		if got := write(segs...); got != 1 {
			t.Fatalf("%d super-packets for one run of segments", got)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, n*mss)
		if _, err := io.ReadFull(conn, got); err != nil {
			t.Fatalf("IPv6 %v: %v", v6, err)
		}
		want := make([]byte, 0, n*mss)
		for _, s := range segs {
			pkt := s.build()
			want = append(want, pkt[len(pkt)-mss:]...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("IPv6 %v: the socket read another stream than the segments carried", v6)
		}
		conn.Close()
	}
	// Writing through the device allocates nothing either.
	c := newCoalescer(4, w)
	ack := seg{seq: 1, payload: 0}.build()
	p, _ := ipview.Parse(ack)
	if n := testing.AllocsPerRun(100, func() {
		c.add(ack, &p)
		if err := c.flush(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per write to the device", n)
	}
}

// labOffloadTUN returns a new namespace with a TUN device with offloads,
// MTU 1400, at coDst4/24 and coDst6/64, closed when the test ends.
func labOffloadTUN(t *testing.T, name string) (*lab.Netns, *OSDevice) {
	t.Helper()
	lab.Require(t)
	ns := lab.NewNetns(t)
	ns.Run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	var d *OSDevice
	if err := ns.Do(func() (err error) {
		d, err = CreateOSTUN(OSConfig{Name: name, MTU: 1400, Addresses: []netip.Prefix{
			netip.PrefixFrom(coDst4, 24), netip.PrefixFrom(coDst6, 64)}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Do(func() error { return d.Close() }) })
	return ns, d
}

// readSegment reads packets from the device until a TCP SYN-ACK of the
// family comes, and returns its TCP header.
func readSegment(t *testing.T, d *OSDevice, v6 bool) []byte {
	t.Helper()
	bufs := make([][]byte, d.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, 65536+vnetHdrLen)
	}
	sizes := make([]int, len(bufs))
	d.File().SetReadDeadline(time.Now().Add(5 * time.Second))
	defer d.File().SetReadDeadline(time.Time{})
	for {
		n, err := d.Read(bufs, sizes, vnetHdrLen)
		if err != nil {
			t.Fatalf("no SYN-ACK from the listener: %v", err)
		}
		for i := range n {
			pkt := bufs[i][vnetHdrLen : vnetHdrLen+sizes[i]]
			ipLen, ok := plainIPHeader(pkt)
			if ok && (ipview.Version(pkt) == 6) == v6 && len(pkt) >= ipLen+20 &&
				(v6 || pkt[9] == ipview.ProtoTCP) && pkt[ipLen+13] == tcpSYN|tcpACK {
				return pkt[ipLen:]
			}
		}
	}
}
