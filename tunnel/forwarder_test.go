package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// TestForwarderClearPath: in netstack mode, flows to a clear destination
// are terminated in the forwarder's stack and re-originated from host
// sockets (here redirected to echo servers on loopback, as the test may
// not reach real addresses); answers come back through the device.
func TestForwarderClearPath(t *testing.T) {
	tcpEcho, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpEcho.Close()
	go func() {
		for {
			c, err := tcpEcho.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	udpEcho, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udpEcho.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := udpEcho.ReadFrom(buf)
			if err != nil {
				return
			}
			udpEcho.WriteTo(buf[:n], from)
		}
	}()
	var mu sync.Mutex
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, network+" "+addr)
		mu.Unlock()
		var d net.Dialer
		switch {
		case addr == "192.0.2.66:7":
			return nil, errors.New("refused")
		case network == "tcp":
			return d.DialContext(ctx, "tcp", tcpEcho.Addr().String())
		default:
			return d.DialContext(ctx, "udp", udpEcho.LocalAddr().String())
		}
	}
	addr := netip.MustParseAddr("10.98.0.1")
	dev, tnet, err := NewNetstack([]netip.Addr{addr}, 1400)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(Config{Device: dev, ForwardDial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	classes, _ := policy.NewClasses(map[policy.Class][]netip.Prefix{policy.ClassClear: {netip.MustParsePrefix("192.0.2.0/24")}}, nil, nil)
	eng.SetClasses(classes)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := tnet.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("192.0.2.10:7"))
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 200000) // several windows' worth
	for i := range msg {
		msg[i] = byte(i)
	}
	go c.Write(msg)
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("TCP echo through the forwarder: %v", err)
	}
	for i := range got {
		if got[i] != msg[i] {
			t.Fatalf("octet %d differs", i)
		}
	}
	c.Close()

	u, err := tnet.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort("192.0.2.53:53"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("question"))
	buf := make([]byte, 100)
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "question" {
		t.Fatalf("UDP echo through the forwarder: %q %v", buf[:n], err)
	}
	// A host that refuses: the application sees a reset, at once.
	start := time.Now()
	if _, err := tnet.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("192.0.2.66:7")); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("dial to a refusing host: %v after %v", err, time.Since(start))
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{"tcp 192.0.2.10:7": true, "udp 192.0.2.53:53": true, "tcp 192.0.2.66:7": true}
	for _, d := range dialed {
		delete(want, d)
	}
	if len(want) > 0 {
		t.Fatalf("not dialed: %v (dialed %v)", want, dialed)
	}
	if eng.Stats().Clear == 0 {
		t.Fatal("no packet counted as clear")
	}
}

// TestForwarderMalformed: whatever reaches the forwarder, it neither
// panics nor dials.
func TestForwarderMalformed(t *testing.T) {
	var dials atomic.Int32
	f, err := newForwarder(1400, func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("no")
	}, func([]byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, pkt := range [][]byte{
		nil,
		{0x45},
		{0x60, 0, 0, 0},
		{0x15, 0, 0, 20},
		append([]byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}, make([]byte, 7)...),             // TCP cut short
		append([]byte{0x45, 0, 0xff, 0xff, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}, 0, 53, 0, 53, 0, 8, 0, 0), // length lies
	} {
		f.Send(pkt)
	}
	if err := f.Send(nil); err == nil {
		t.Error("an empty packet was accepted")
	}
	if err := f.Send([]byte{0x15}); err == nil {
		t.Error("a packet of IP version 1 was accepted")
	}
	time.Sleep(50 * time.Millisecond)
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials for malformed packets", n)
	}
}
