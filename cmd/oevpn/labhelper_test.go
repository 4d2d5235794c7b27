//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/oevpn/oevpn/internal/lab"
)

// TestMain lets lab tests run this test binary inside a namespace as a TCP
// source or sink that hashes what it sends or receives
// (OEVPN_LAB_HELPER="sink ADDR:PORT" or "source ADDR:PORT SECONDS"), a TCP
// acceptor and timed connector ("accept", "connect"), a UDP echo server
// and client ("echo ADDR:PORT", "ask ADDR:PORT"), an HTTP server ("http
// ADDR:PORT BODY"), a DNS server ("dns ADDR:PORT NAME IPV4") or a DNS
// query through a SOCKS5 proxy ("socks-udp PROXY SERVER NAME").
func TestMain(m *testing.M) {
	if h := os.Getenv("OEVPN_LAB_HELPER"); h != "" {
		os.Exit(labHelper(strings.Fields(h)))
	}
	os.Exit(m.Run())
}

func labHelper(args []string) int {
	fail := func(err error) int { fmt.Println("error:", err); return 1 }
	switch {
	case len(args) == 2 && args[0] == "sink":
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return fail(err)
		}
		fmt.Println("listening")
		c, err := ln.Accept()
		if err != nil {
			return fail(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil {
			return fail(err)
		}
		fmt.Printf("received %d %x\n", n, h.Sum(nil))
		return 0
	case len(args) == 3 && args[0] == "source":
		secs, _ := strconv.ParseFloat(args[2], 64)
		var c net.Conn
		var err error
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if c, err = net.DialTimeout("tcp", args[1], time.Second); err == nil {
				break
			}
		}
		if err != nil {
			return fail(err)
		}
		h := sha256.New()
		src := rand.NewChaCha8([32]byte{7})
		buf := make([]byte, 64<<10)
		var n int64
		for end := time.Now().Add(time.Duration(secs * float64(time.Second))); time.Now().Before(end); {
			src.Read(buf)
			h.Write(buf)
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write(buf); err != nil {
				return fail(fmt.Errorf("after %d octets: %w", n, err))
			}
			n += int64(len(buf))
		}
		c.Close()
		fmt.Printf("sent %d %x\n", n, h.Sum(nil))
		return 0
	case len(args) == 2 && args[0] == "accept":
		// Accept and close connections until killed.
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return fail(err)
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				return fail(err)
			}
			c.Close()
		}
	case len(args) == 2 && args[0] == "connect":
		// One TCP connect, timed.
		start := time.Now()
		c, err := net.DialTimeout("tcp", args[1], 5*time.Second)
		if err != nil {
			return fail(err)
		}
		d := time.Since(start)
		c.Close()
		fmt.Printf("connect %d\n", d.Microseconds())
		return 0
	case len(args) == 2 && args[0] == "echo":
		// Echo UDP datagrams until killed, saying whom from.
		c, err := net.ListenPacket("udp", args[1])
		if err != nil {
			return fail(err)
		}
		fmt.Println("listening")
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return fail(err)
			}
			fmt.Println("from", from)
			c.WriteTo(buf[:n], from)
		}
	case len(args) == 2 && args[0] == "ask":
		// One UDP request and its echo; a datagram may be lost, so up to
		// three tries.
		c, err := net.Dial("udp", args[1])
		if err != nil {
			return fail(err)
		}
		msg := []byte("oevpn lab " + strconv.Itoa(os.Getpid()))
		buf := make([]byte, 2048)
		for try := 0; try < 3; try++ {
			c.Write(msg)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err == nil && string(buf[:n]) == string(msg) {
				fmt.Println("echoed")
				return 0
			}
		}
		return fail(fmt.Errorf("no echo from %s", args[1]))
	case len(args) == 3 && args[0] == "http":
		// Serve args[2] to every HTTP request until killed.
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return fail(err)
		}
		fmt.Println("listening")
		return fail(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Println("request from", r.RemoteAddr)
			io.WriteString(w, args[2])
		})))
	case len(args) == 4 && args[0] == "dns":
		// Answer A queries for args[2] with args[3] until killed.
		srv := &dns.Server{Addr: args[1], Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			r := new(dns.Msg)
			r.SetReply(q)
			if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA && strings.EqualFold(q.Question[0].Name, args[2]) {
				rr, _ := dns.NewRR(args[2] + " 60 IN A " + args[3])
				r.Answer = append(r.Answer, rr)
			}
			w.WriteMsg(r)
		}), NotifyStartedFunc: func() { fmt.Println("listening") }}
		return fail(srv.ListenAndServe())
	case len(args) > 0 && args[0] == "wireguard":
		return fail(wgHelper(args[1:]))
	case len(args) > 0 && args[0] == "relay":
		return fail(relayHelper(args[1:]))
	case len(args) == 4 && args[0] == "socks-udp":
		// One DNS A query for args[3] to the server args[2], through the
		// SOCKS5 proxy args[1] (UDP ASSOCIATE).
		a, err := socksUDPQuery(args[1], args[2], args[3])
		if err != nil {
			return fail(err)
		}
		fmt.Println("answer", a)
		return 0
	}
	return fail(fmt.Errorf("bad helper arguments %q", args))
}

// socksUDPQuery asks server for name's A record through the SOCKS5 proxy's
// UDP ASSOCIATE (RFC 1928 §7), written out here as a client would.
func socksUDPQuery(proxyAddr, server, name string) (string, error) {
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{5, 1, 0})
	var b [262]byte
	if _, err := io.ReadFull(c, b[:2]); err != nil || b[1] != 0 {
		return "", fmt.Errorf("greeting: % x %v", b[:2], err)
	}
	c.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}) // UDP ASSOCIATE from 0.0.0.0:0
	if _, err := io.ReadFull(c, b[:10]); err != nil || b[1] != 0 || b[3] != 1 {
		return "", fmt.Errorf("UDP ASSOCIATE reply % x: %v", b[:10], err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[8:10]))
	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer u.Close()
	dst := netip.MustParseAddrPort(server)
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	wire, _ := q.Pack()
	hdr := append([]byte{0, 0, 0, 1}, dst.Addr().AsSlice()...)
	hdr = binary.BigEndian.AppendUint16(hdr, dst.Port())
	buf := make([]byte, 2048)
	for try := 0; try < 5; try++ {
		u.WriteTo(append(hdr, wire...), net.UDPAddrFromAddrPort(relay))
		u.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := u.ReadFrom(buf)
		if err != nil || n < 10 {
			continue
		}
		var r dns.Msg
		if err := r.Unpack(buf[10:n]); err != nil {
			return "", err
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				return a.A.String(), nil
			}
		}
		return "", fmt.Errorf("no A record in %v", r.Answer)
	}
	return "", fmt.Errorf("no answer through %v", relay)
}

// tcpdump captures the packets that filter takes on iface in ns, into a new
// pcap file, until the returned function is called; that returns the file.
func tcpdump(t *testing.T, ns *lab.Netns, iface, filter string) func() string {
	t.Helper()
	pcap := filepath.Join(t.TempDir(), lab.Unique(iface)+".pcap")
	dump := ns.Start("tcpdump", "-i", iface, "--immediate-mode", "-nn", "-U", "-s", "256", "-w", pcap, filter)
	if err := dump.WaitFor("listening on", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return func() string {
		time.Sleep(200 * time.Millisecond) // the last packets reach the file
		dump.Signal(syscall.SIGINT)
		dump.Wait(10 * time.Second)
		return pcap
	}
}

// readFrames reads the pcap file at path: its link type and frames.
func readFrames(t *testing.T, path string) (uint32, []lab.Frame) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	link, frames, err := lab.ReadPcap(data)
	if err != nil {
		t.Fatal(err)
	}
	return link, frames
}

// udpEcho sends a datagram from src to addr (an echo server in dst) and
// fails the test unless it is echoed; it returns the address the server
// saw the datagram come from.
func udpEcho(t *testing.T, src, dst *lab.Netns, addr string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	srv := dst.Start("env", "OEVPN_LAB_HELPER=echo "+addr, self)
	defer srv.Signal(syscall.SIGKILL)
	if err := srv.WaitFor("listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := src.Try("env", "OEVPN_LAB_HELPER=ask "+addr, self); err != nil {
		t.Fatalf("UDP to %s: %v\n%s", addr, err, out)
	}
	for _, l := range strings.Split(srv.Output(), "\n") {
		if from, ok := strings.CutPrefix(l, "from "); ok {
			return from
		}
	}
	t.Fatalf("the echo server at %s saw nothing", addr)
	return ""
}

// hashedTransfer runs a TCP transfer of secs seconds from src to dst (the
// sink listening on addr in dst) and fails the test unless every octet
// arrived.
func hashedTransfer(t *testing.T, src, dst *lab.Netns, addr string, secs float64) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sink := dst.Start("env", "OEVPN_LAB_HELPER=sink "+addr, self)
	if err := sink.WaitFor("listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out, err := src.Try("env", fmt.Sprintf("OEVPN_LAB_HELPER=source %s %g", addr, secs), self)
	if err != nil {
		t.Fatalf("TCP source: %v\n%s", err, out)
	}
	if err := sink.Wait(30 * time.Second); err != nil {
		t.Fatalf("TCP sink: %v\n%s", err, sink.Output())
	}
	sent := strings.TrimPrefix(strings.TrimSpace(out), "sent ")
	got := strings.TrimPrefix(strings.TrimSpace(sink.Output()), "listening\nreceived ")
	if sent != got || sent == "" {
		t.Fatalf("TCP transfer damaged: sent %q, received %q", sent, got)
	}
	n, _ := strconv.ParseInt(strings.Fields(sent)[0], 10, 64)
	t.Logf("TCP: %d MB in %gs arrived intact (SHA-256 matches)", n>>20, secs)
}
