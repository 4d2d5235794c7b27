package tunnel

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/internal/dnszone"
	"github.com/oevpn/oevpn/internal/memnet"
	conn "github.com/oevpn/oevpn/internal/wgconn"
	"github.com/oevpn/oevpn/policy"
)

func TestSelectorPrefixes(t *testing.T) {
	tests := []struct{ lo, hi, want string }{
		{"10.0.0.0", "10.0.0.255", "[10.0.0.0/24]"},
		{"10.0.0.1", "10.0.0.1", "[10.0.0.1/32]"},
		{"10.0.0.1", "10.0.0.6", "[10.0.0.1/32 10.0.0.2/31 10.0.0.4/31 10.0.0.6/32]"},
		{"0.0.0.0", "255.255.255.255", "[0.0.0.0/0]"},
		{"2001:db8::", "2001:db8::ffff", "[2001:db8::/112]"},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "[::/0]"},
	}
	for _, tt := range tests {
		got := selectorPrefixes(policy.Selector{Start: netip.MustParseAddr(tt.lo), End: netip.MustParseAddr(tt.hi)})
		if s := fmt.Sprint(got); s != tt.want {
			t.Errorf("selectorPrefixes(%s, %s) = %s, want %s", tt.lo, tt.hi, s, tt.want)
		}
	}
}

// nodePair starts two netstack nodes that are each other's IKEv2 peer
// (PSK), a initiating at once, through the same constructor the command
// uses.
func nodePair(t *testing.T, block ...netip.Prefix) (a, b *Node) {
	t.Helper()
	addrA, addrB := netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("10.97.0.2")
	lo := netip.MustParseAddr("127.0.0.1")
	psk := []byte("node test pre-shared key, long enough")
	peer := func(name string, local, remote netip.Addr, ikePort, nattPort uint16) *ike.PeerConfig {
		return &ike.PeerConfig{Name: name, Addr: lo, IKEPort: ikePort, NATTPort: nattPort,
			LocalID: ike.IdentityOf(local), RemoteID: ike.IdentityOf(remote),
			Auth: ike.Credential{PSK: psk}, PeerAuth: ike.PeerAuth{PSK: psk},
			LocalTS: hostSel(local), RemoteTS: hostSel(remote)}
	}
	var err error
	// B only responds, so it need not know A's ports yet.
	b, err = NewNode(NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addrB, 32)},
		Peers: []Peer{{IKE: peer("a", addrB, addrA, 1, 1), Start: StartNever}}, Logger: testLog(t, "B")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	bIKE, bNATT := b.Engine().Ports()
	a, err = NewNode(NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addrA, 32)},
		Peers:  []Peer{{IKE: peer("b", addrA, addrB, bIKE, bNATT), Start: StartNow}},
		Policy: Policy{Block: block}, Logger: testLog(t, "A")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, b
}

// TestNodeDialThroughIKE dials from one node's stack to a listener on the
// other's: IKE comes up, the connection goes through ESP, Check says so,
// and a destination that policy blocks fails at once.
func TestNodeDialThroughIKE(t *testing.T) {
	a, b := nodePair(t, netip.MustParsePrefix("10.66.0.0/16"))
	ln, err := b.Listen("tcp", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "10.97.0.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("through the node's ESP")
	c.Write(msg)
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if v := a.Check(netip.MustParseAddr("10.97.0.2")); v.Verdict != CheckEncrypted || v.Reason != "IKE SA authenticated by psk" {
		t.Errorf("Check after the connection: %+v", v)
	}
	if p := a.Engine().PairFor(netip.MustParseAddr("10.97.0.2")); p == nil || p.Out.Counters().Packets == 0 {
		t.Errorf("no ESP sent by A's pair: %v", p)
	}

	start := time.Now()
	_, err = a.DialContext(ctx, "tcp", "10.66.1.1:80")
	if !errors.Is(err, ErrBlocked) || time.Since(start) > time.Second {
		t.Errorf("dial to a blocked destination: %v after %v, want ErrBlocked at once", err, time.Since(start))
	}
	// The stack's errors carry the errno a host socket would give.
	if _, err := a.DialContext(ctx, "tcp", "10.97.0.2:7001"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to a closed port: %v, want ECONNREFUSED", err)
	}
	if _, err := a.DialContext(ctx, "sctp", "10.97.0.2:7000"); err == nil {
		t.Error("dial sctp succeeded")
	}
	if _, err := a.Listen("udp", ":1"); err == nil {
		t.Error("Listen udp succeeded")
	}
}

// TestNodeListenPacket sends a datagram each way between unconnected UDP
// sockets of two nodes (an ephemeral one and one on a fixed port), as
// SOCKS5 UDP ASSOCIATE uses them.
func TestNodeListenPacket(t *testing.T) {
	a, b := nodePair(t)
	pb, err := b.ListenPacket("udp", ":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	pa, err := a.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	dst := &net.UDPAddr{IP: net.IPv4(10, 97, 0, 2), Port: 5353}
	buf := make([]byte, 64)
	// The first datagrams wait for IKE: send until one arrives.
	for i := 0; ; i++ {
		if _, err := pa.WriteTo([]byte("ping"), dst); err != nil {
			t.Fatal(err)
		}
		pb.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := pb.ReadFrom(buf)
		if err == nil {
			if string(buf[:n]) != "ping" || from.String() != "10.97.0.1:"+fmt.Sprint(from.(*net.UDPAddr).Port) {
				t.Fatalf("B got %q from %v", buf[:n], from)
			}
			pb.WriteTo([]byte("pong"), from)
			break
		}
		if i == 25 {
			t.Fatal("no datagram reached B in 5 s")
		}
	}
	pa.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, from, err := pa.ReadFrom(buf); err != nil || string(buf[:n]) != "pong" || from.String() != "10.97.0.2:5353" {
		t.Fatalf("A got %q from %v: %v", buf[:n], from, err)
	}
}

// TestNodeOpportunisticDialSource: a netstack node that dials an
// opportunistic destination by address starts opportunism before the
// first packet, and must negotiate for its stack's address, not for the
// address the host's routing would pick (which the stack never sends
// from: the SA would carry none of the connection, and a second one
// would be negotiated on the first packet).
func TestNodeOpportunisticDialSource(t *testing.T) {
	a, _, addrA, _ := oeNodes(t)
	pairs := a.Engine().Pairs()
	if len(pairs) != 1 || fmt.Sprint(pairs[0].Local) != fmt.Sprint(hostSel(addrA)) {
		t.Fatalf("A's SAs: %s, want one, for %v", dumpPairs(a.Engine()), addrA)
	}
}

// oeNodes starts two netstack nodes on a memory network, opportunistic
// for 198.51.100.0/24: b publishes its key in the reverse zone, a uses
// AUTH_NULL; a's connection to b brings up an SA that b holds as
// unauthenticated.
func oeNodes(t *testing.T) (a, b *Node, addrA, addrB netip.Addr) {
	mn := &memnet.Network{}
	addrA, addrB = netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	_, privB, _ := ed25519.GenerateKey(crand.Reader)
	zone, err := dnszone.New("100.51.198.in-addr.arpa.", false)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := dnsoe.Records(addrB.String(), "", 10, privB.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := zone.Add(lines...); err != nil {
		t.Fatal(err)
	}
	srv, err := dnszone.NewServer(zone)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	node := func(addr netip.Addr, auth ike.Credential) *Node {
		n, err := NewNode(NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addr, 32)},
			IKEPort: 500, NATTPort: 4500, Bind: func() conn.Bind { return mn.Bind(addr) },
			// Nothing leaves in the clear: the forwarder dials nowhere.
			ClearDial: func(context.Context, string, string) (net.Conn, error) {
				return nil, errors.New("no clear path in this test")
			},
			Policy:      Policy{PrivateOrClear: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
			Opportunism: &OEConfig{Resolver: &dnsoe.Resolver{Server: srv.Addr, Mode: dnsoe.DNSSECOff}, Auth: auth},
			Logger:      testLog(t, addr.String())})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	b, a = node(addrB, ike.Credential{Signer: privB}), node(addrA, ike.Credential{Null: true})
	ln, err := b.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(addrB, 7).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if v := b.Check(addrA); v.Verdict != CheckUnauthenticated {
		t.Fatalf("b's SA with a: %+v, want it unauthenticated", v)
	}
	return a, b, addrA, addrB
}
