package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/oevpn/oevpn/internal/dnstest"
)

// associate opens a UDP association and returns the client's UDP socket
// and the relay's address.
func associate(t *testing.T, c *socksConn) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	c.send(5, 1, 0)
	c.expect(5, 0)
	c.send(request(cmdUDPAssociate, "0.0.0.0", 0)...)
	rep, relay := c.reply()
	if rep != ReplySucceeded {
		t.Fatalf("UDP ASSOCIATE: reply %#x", rep)
	}
	return u, relay
}

func dnsQuery(t *testing.T, name string) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	p, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// exchange sends a datagram with header hdr and returns what comes back
// within wait, or nil.
func exchange(t *testing.T, u *net.UDPConn, relay netip.AddrPort, hdr, payload []byte, wait time.Duration) []byte {
	t.Helper()
	if _, err := u.WriteToUDPAddrPort(append(append([]byte(nil), hdr...), payload...), relay); err != nil {
		t.Fatal(err)
	}
	u.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, 2048)
	n, from, err := u.ReadFromUDPAddrPort(b)
	if err != nil {
		return nil
	}
	if from != relay {
		t.Fatalf("datagram from %v, want the relay %v", from, relay)
	}
	return b[:n]
}

// TestSOCKS5UDPAssociateDNS carries real DNS queries to an in-process
// server through UDP ASSOCIATE, by address and by name, and checks that
// refused destinations, fragments and strangers are dropped and that the
// association dies with its control connection.
func TestSOCKS5UDPAssociateDNS(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Add(t, "www.example. 300 IN A 192.0.2.7")
	dnsAddr := netip.MustParseAddrPort(srv.Addr)
	forbidden := netip.AddrPortFrom(loopback4, dnsAddr.Port()+1)
	d := &testDialer{}
	d.Refuse(forbidden)
	s := &SOCKS5Server{Dialer: d, Resolver: newResolver()}
	addr := serve(t, s)
	c := dialSOCKS(t, addr)
	u, relay := associate(t, c)

	check := func(hdr []byte) {
		t.Helper()
		resp := exchange(t, u, relay, hdr, dnsQuery(t, "www.example"), 5*time.Second)
		src, payload, err := parseUDPHeader(resp)
		if err != nil {
			t.Fatalf("reply header: %v (%x)", err, resp)
		}
		if got := netip.AddrPortFrom(src.ip, src.port); got != dnsAddr {
			t.Errorf("reply from %v, want %v", got, dnsAddr)
		}
		var m dns.Msg
		if err := m.Unpack(payload); err != nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
			t.Fatalf("answer %v, %v", m.Answer, err)
		}
	}
	check(appendUDPHeader(nil, dnsAddr))
	check(append(append([]byte{0, 0, 0, atypDomain, 8}, "dns.test"...), byte(dnsAddr.Port()>>8), byte(dnsAddr.Port())))

	before := srv.Queries.Load()
	for name, hdr := range map[string][]byte{
		"refused":  appendUDPHeader(nil, forbidden),
		"fragment": append([]byte{0, 0, 1}, appendUDPHeader(nil, dnsAddr)[3:]...),
		"rsv":      append([]byte{0, 1}, appendUDPHeader(nil, dnsAddr)[2:]...),
		"no name":  {0, 0, 0, atypDomain, 7, 'n', 'o', 'w', 'h', 'e', 'r', 'e', 0, 53},
		"atyp":     {0, 0, 0, 9, 127, 0, 0, 1, 0, 53},
		"short":    {0, 0, 0},
	} {
		if resp := exchange(t, u, relay, hdr, dnsQuery(t, "www.example"), 200*time.Millisecond); resp != nil {
			t.Errorf("%s: got a reply %x", name, resp)
		}
	}
	// Another socket on the client's host is not the client.
	stranger, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer stranger.Close()
	if resp := exchange(t, stranger, relay, appendUDPHeader(nil, dnsAddr), dnsQuery(t, "www.example"), 200*time.Millisecond); resp != nil {
		t.Errorf("stranger got a reply %x", resp)
	}
	if n := srv.Queries.Load() - before; n != 0 {
		t.Errorf("%d dropped datagrams reached the DNS server", n)
	}
	check(appendUDPHeader(nil, dnsAddr)) // still working

	// The association lives as long as the TCP connection.
	c.Close()
	for deadline := time.Now().Add(5 * time.Second); s.assocs.Load() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("association outlived its control connection")
		}
	}
	if resp := exchange(t, u, relay, appendUDPHeader(nil, dnsAddr), dnsQuery(t, "www.example"), 200*time.Millisecond); resp != nil {
		t.Errorf("closed association answered %x", resp)
	}
}

// TestSOCKS5UDPNotSupported: a Dialer without ListenPacket gets 0x07.
func TestSOCKS5UDPNotSupported(t *testing.T) {
	s := &SOCKS5Server{Dialer: &net.Dialer{}}
	c := dialSOCKS(t, serve(t, s))
	c.send(5, 1, 0)
	c.expect(5, 0)
	c.send(request(cmdUDPAssociate, "0.0.0.0", 0)...)
	if rep, _ := c.reply(); rep != ReplyCommandNotSupported {
		t.Fatalf("reply %#x, want 0x07", rep)
	}
}

// TestSOCKS5UDPInjection: someone who learns the association's outside
// port cannot send to the client through it; only the destinations the
// client has sent to can answer.
func TestSOCKS5UDPInjection(t *testing.T) {
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	outside := make(chan netip.AddrPort, 1)
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			select {
			case outside <- from:
			default:
			}
			echo.WriteToUDPAddrPort(b[:n], from)
		}
	}()
	echoAddr := netip.MustParseAddrPort(echo.LocalAddr().String())
	s := &SOCKS5Server{Dialer: &testDialer{}}
	c := dialSOCKS(t, serve(t, s))
	u, relay := associate(t, c)
	if resp := exchange(t, u, relay, appendUDPHeader(nil, echoAddr), []byte("ping"), 5*time.Second); resp == nil {
		t.Fatal("no echo")
	}
	attacker, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer attacker.Close()
	attacker.WriteToUDPAddrPort([]byte("spoofed answer"), <-outside)
	u.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	b := make([]byte, 2048)
	if n, _, err := u.ReadFromUDPAddrPort(b); err == nil {
		t.Fatalf("the client got an injected datagram %q", b[:n])
	}
}
