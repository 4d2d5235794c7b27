package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/oevpn/oevpn/internal/ipview"
)

// TestLabSegmentedRead: what Linux's own TCP and UDP (UDP_SEGMENT) send
// into a real TUN device with offloads comes out of the segmenter as the
// segments a NIC would send: super-packets among them, and every segment
// in order, with the octets the socket wrote and checksums that verify
// (summed independently), for IPv4 and IPv6.
func TestLabSegmentedRead(t *testing.T) {
	ns, d := labOffloadTUN(t, "oesg0")
	r, w := newTunSegmenter(d), newGatherWriter(d)
	if r == nil || w == nil {
		t.Fatal("no segmenter for a TUN device with offloads (kernel without IFF_VNET_HDR offloads?)")
	}
	bufs, sizes := segmentBufs(128, 1500)
	d.File().SetReadDeadline(time.Now().Add(10 * time.Second))
	// next returns the next packet read of the protocol and family, and
	// whether it came in a super-packet.
	var pending [][]byte
	var pendingGSO bool
	next := func(v6 bool, proto uint8) ([]byte, bool) {
		t.Helper()
		for {
			for len(pending) > 0 {
				pkt := pending[0]
				pending = pending[1:]
				p, err := ipview.Parse(pkt)
				if err == nil && (ipview.Version(pkt) == 6) == v6 && p.Proto == proto {
					return pkt, pendingGSO
				}
			}
			n, err := r.Read(bufs, sizes, vnetHdrLen)
			if err != nil {
				t.Fatalf("reading the device: %v", err)
			}
			pending, pendingGSO = pending[:0], r.in[1] != vnetGSONone
			for i := range n {
				pending = append(pending, bufs[i][vnetHdrLen:vnetHdrLen+sizes[i]])
			}
		}
	}
	data := make([]byte, 60000)
	for i := range data {
		data[i] = byte(i * 13)
	}
	for _, v6 := range []bool{false, true} {
		local, remote := coDst4, coSrc4
		if v6 {
			local, remote = coDst6, coSrc6
		}
		// TCP: the kernel dials from local:5201 to remote:40000, which
		// answers with a hand-built SYN-ACK (seg builds segments from
		// remote:sport to local:5201).
		dialed := make(chan net.Conn, 1)
		go ns.Do(func() error {
			dl := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 5201)), Timeout: 5 * time.Second}
			c, err := dl.Dial("tcp", netip.AddrPortFrom(remote, 40000).String())
			if err != nil {
				t.Error(err)
			}
			dialed <- c
			return nil
		})
		syn, _ := next(v6, ipview.ProtoTCP)
		ipLen := ipview.HeaderLen(syn)
		if syn[ipLen+13] != tcpSYN || !refChecksumValid(syn, ipLen, ipview.ProtoTCP) {
			t.Fatalf("IPv6 %v: first segment not a SYN with a valid checksum: %x", v6, syn)
		}
		isn := binary.BigEndian.Uint32(syn[ipLen+4:])
		synAck := seg{v6: v6, flags: tcpSYN | tcpACK, seq: 9000, ack: isn + 1, window: 65535, tsval: 1}.build()
		if err := w.writeGather([][]byte{make([]byte, vnetHdrLen), synAck}); err != nil {
			t.Fatal(err)
		}
		c := <-dialed
		if c == nil {
			t.FailNow()
		}
		defer c.Close()
		go c.Write(data)
		var got []byte
		var super bool
		for len(got) < 5000 {
			pkt, gso := next(v6, ipview.ProtoTCP)
			ipLen := ipview.HeaderLen(pkt)
			hdrLen := ipLen + int(pkt[ipLen+12]>>4)*4
			if !refChecksumValid(pkt, ipLen, ipview.ProtoTCP) || (!v6 && ipview.Checksum(pkt[:ipLen]) != 0) {
				t.Fatalf("IPv6 %v: segment with a bad checksum: %x", v6, pkt[:hdrLen])
			}
			if seq := binary.BigEndian.Uint32(pkt[ipLen+4:]); len(pkt) == hdrLen || seq != isn+1+uint32(len(got)) {
				continue // the handshake's ACK, or a retransmission
			}
			super = super || gso
			got = append(got, pkt[hdrLen:]...)
		}
		if !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("IPv6 %v: the segments carry other octets than the socket wrote", v6)
		}
		if !super {
			t.Fatalf("IPv6 %v: %d octets of TCP and no super-packet: the device does not do TSO", v6, len(got))
		}

		// UDP: one send of 3,500 octets with UDP_SEGMENT of 1,000.
		var u *net.UDPConn
		if err := ns.Do(func() (err error) {
			u, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 4433)),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote, 443)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		rc, _ := u.SyscallConn()
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, 1000) })
		if serr != nil {
			t.Fatalf("UDP_SEGMENT: %v", serr)
		}
		if _, err := u.Write(data[:3500]); err != nil {
			t.Fatal(err)
		}
		got, super = got[:0], false
		for len(got) < 3500 {
			pkt, gso := next(v6, ipview.ProtoUDP)
			ipLen := ipview.HeaderLen(pkt)
			if !refChecksumValid(pkt, ipLen, ipview.ProtoUDP) || binary.BigEndian.Uint16(pkt[ipLen+4:]) != uint16(len(pkt)-ipLen) {
				t.Fatalf("IPv6 %v: datagram with a bad checksum or length: %x", v6, pkt[:ipLen+8])
			}
			if len(pkt)-ipLen-8 > 1000 {
				t.Fatalf("IPv6 %v: datagram of %d octets, segment size 1000", v6, len(pkt)-ipLen-8)
			}
			super = super || gso
			got = append(got, pkt[ipLen+8:]...)
		}
		if !bytes.Equal(got, data[:3500]) || !super {
			t.Fatalf("IPv6 %v: UDP_SEGMENT send came out as other octets (%d) or not as a super-packet (%v)", v6, len(got), super)
		}
	}
}
