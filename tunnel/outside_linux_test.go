package tunnel

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/oevpn/oevpn/internal/lab"
	conn "github.com/oevpn/oevpn/internal/wgconn"
)

// TestLabOutside: in namespace X, the route to Y's address is wrong on
// purpose (into a dummy device, where packets vanish); sockets that leave by
// Outside still reach Y, by the mark's table or bound to the veth, and
// DetectOutside finds the interface of the default route.
func TestLabOutside(t *testing.T) {
	lab.Require(t)
	x, y, z := lab.NewNetns(t), lab.NewNetns(t), lab.NewNetns(t)
	vx, vy := lab.Veth(t, x, y)
	x.Run("ip", "addr", "add", "10.91.0.1/24", "dev", vx)
	y.Run("ip", "addr", "add", "10.91.0.2/24", "dev", vy)
	// Z answers nothing: what is routed to it is lost.
	wrong, _ := lab.Veth(t, x, z)
	x.Run("ip", "addr", "add", "10.92.0.1/24", "dev", wrong)

	detect := func(exclude string) (name string, err error) {
		x.Do(func() error { name, err = DetectOutside(exclude); return nil })
		return
	}
	if name, err := detect(""); !errors.Is(err, ErrNoOutside) {
		t.Errorf("no default route: DetectOutside = %q, %v; want ErrNoOutside", name, err)
	}
	x.Run("ip", "route", "add", "default", "via", "10.91.0.2")
	if name, err := detect("tun0"); name != vx || err != nil {
		t.Errorf("DetectOutside = %q, %v; want %q", name, err, vx)
	}
	if name, err := detect(vx); !errors.Is(err, ErrNoOutside) {
		t.Errorf("default route by the excluded device: DetectOutside = %q, %v; want ErrNoOutside", name, err)
	}

	// The wrong route, and a table that marked sockets follow.
	x.Run("ip", "route", "add", "10.91.0.2/32", "dev", wrong)
	x.Run("ip", "route", "add", "10.91.0.2/32", "dev", vx, "table", "91")
	x.Run("ip", "rule", "add", "fwmark", "0x91", "lookup", "91")

	var ln net.Listener
	var udp net.PacketConn
	if err := y.Do(func() (err error) {
		if ln, err = net.Listen("tcp", "10.91.0.2:7"); err != nil {
			return err
		}
		udp, err = net.ListenPacket("udp", "10.91.0.2:7")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer udp.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var lo net.Listener
	if err := x.Do(func() (err error) { lo, err = net.Listen("tcp", "0.0.0.0:7"); return err }); err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	go func() {
		for {
			c, err := lo.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	bound := Outside{Interface: vx}
	for _, c := range []struct {
		name    string
		o       Outside
		dst     string
		ok      bool
		wantSrc string
	}{
		{"unmarked, unbound: the wrong route", Outside{}, "10.91.0.2:7", false, "10.92.0.1"},
		{"marked", Outside{Mark: 0x91}, "10.91.0.2:7", true, "10.91.0.1"},
		{"bound to the veth", bound, "10.91.0.2:7", true, "10.91.0.1"},
		{"bound, to loopback", bound, "127.0.0.1:7", true, "127.0.0.1"},
		{"bound, to another address of this host", bound, "10.92.0.1:7", true, "10.92.0.1"},
	} {
		var err error
		var src netip.Addr
		x.Do(func() error {
			d := c.o.Dialer()
			d.Timeout = 500 * time.Millisecond
			var cn net.Conn
			if cn, err = d.Dial("tcp", c.dst); err == nil {
				cn.Close()
			}
			src = c.o.SourceFor(netip.MustParseAddrPort(c.dst).Addr())
			return nil
		})
		if (err == nil) != c.ok {
			t.Errorf("%s: dial %s: %v, want success %v", c.name, c.dst, err, c.ok)
		}
		if src.String() != c.wantSrc {
			t.Errorf("%s: SourceFor %s = %v, want %s", c.name, c.dst, src, c.wantSrc)
		}
	}

	// The outer sockets of the engine: bound, marked, and their datagrams
	// reach Y.
	b := conn.NewStdNetBind()
	defer b.Close()
	if err := x.Do(func() error {
		if _, _, err := b.Open(0); err != nil {
			return err
		}
		return Outside{Mark: 0x42, Interface: vx}.applyBinds(b)
	}); err != nil {
		t.Fatal(err)
	}
	b.(*conn.StdNetBind).Control(func(network string, fd uintptr) error {
		dev, err := unix.GetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
		mark, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		if err != nil || dev != vx || mark != 0x42 {
			t.Errorf("%s socket: bound to %q (%v), mark %#x; want %q, 0x42", network, dev, err, mark, vx)
		}
		return nil
	})
	ep, err := b.ParseEndpoint("10.91.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Send([][]byte{[]byte("hello")}, ep); err != nil {
		t.Fatal(err)
	}
	udp.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	if n, from, err := udp.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("the bound outer socket's datagram did not arrive: %q from %v, %v", buf[:n], from, err)
	}
}
