package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"
)

// TestSOCKS5ConnectHTTP fetches from a real HTTP server by name and by
// address through the proxy, with x/net/proxy's client and with
// username/password.
func TestSOCKS5ConnectHTTP(t *testing.T) {
	_, web := webServer(t)
	for _, auth := range []*xproxy.Auth{nil, {User: "u", Password: "p"}} {
		s := &SOCKS5Server{Dialer: &testDialer{}, Resolver: newResolver()}
		if auth != nil {
			s.Username, s.Password = auth.User, auth.Password
		}
		addr := serve(t, s)
		d, err := xproxy.SOCKS5("tcp", addr, auth, xproxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Transport: &http.Transport{
			DialContext: d.(xproxy.ContextDialer).DialContext,
		}}
		for _, host := range []string{"web.test", "127.0.0.1"} {
			url := fmt.Sprintf("http://%s:%d/x", host, web.Port())
			resp, err := client.Get(url)
			if err != nil {
				t.Fatalf("auth %v: GET %s: %v", auth != nil, url, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("hello %s:%d /x", host, web.Port()); !strings.HasPrefix(string(body), want) {
				t.Errorf("GET %s: %q, want %q", url, body, want)
			}
		}
	}
}

// TestSOCKS5Replies checks each failure gets its RFC 1928 reply code.
func TestSOCKS5Replies(t *testing.T) {
	_, web := webServer(t)
	_, forbidden := webServer(t)
	closed := closedPort(t)
	d := &testDialer{}
	d.Refuse(forbidden)
	s := &SOCKS5Server{Dialer: d, Resolver: newResolver()}
	addr := serve(t, s)
	hang := &SOCKS5Server{Dialer: &testDialer{hang: true}, Limits: Limits{DialTimeout: 100 * time.Millisecond}}
	hangAddr := serve(t, hang)

	for _, tc := range []struct {
		name   string
		server string
		req    []byte
		want   Reply
	}{
		{"connect ipv4", addr, request(cmdConnect, "127.0.0.1", web.Port()), ReplySucceeded},
		{"connect name", addr, request(cmdConnect, "web.test", web.Port()), ReplySucceeded},
		{"connect name as literal", addr, nameRequest(cmdConnect, "127.0.0.1", web.Port()), ReplySucceeded},
		{"connect mapped ipv6", addr, request(cmdConnect, "::ffff:127.0.0.1", web.Port()), ReplySucceeded},
		{"refused by ruleset", addr, request(cmdConnect, "127.0.0.1", forbidden.Port()), ReplyNotAllowed},
		{"refused, mapped form", addr, request(cmdConnect, "::ffff:127.0.0.1", forbidden.Port()), ReplyNotAllowed},
		{"refused, name", addr, nameRequest(cmdConnect, "127.0.0.1", forbidden.Port()), ReplyNotAllowed},
		{"not loopback", addr, request(cmdConnect, "192.0.2.1", 80), ReplyNotAllowed},
		{"connection refused", addr, request(cmdConnect, "127.0.0.1", closed.Port()), ReplyConnectionRefused},
		{"unknown name", addr, request(cmdConnect, "nowhere.test", 80), ReplyHostUnreachable},
		{"bad name", addr, request(cmdConnect, "a b\x00c", 80), ReplyHostUnreachable},
		{"timeout", hangAddr, request(cmdConnect, "127.0.0.1", web.Port()), ReplyTTLExpired},
		{"bind", addr, request(cmdBind, "127.0.0.1", web.Port()), ReplyCommandNotSupported},
		{"unknown command", addr, request(9, "127.0.0.1", web.Port()), ReplyCommandNotSupported},
		{"unknown atyp", addr, []byte{5, 1, 0, 5, 1, 2, 3, 4, 0, 80}, ReplyAddressTypeNotSupported},
		{"empty name", addr, []byte{5, 1, 0, 3, 0, 0, 80}, ReplyGeneralFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSOCKS(t, tc.server)
			c.send(5, 1, 0)
			c.expect(5, 0)
			c.send(tc.req...)
			got, _ := c.reply()
			if got != tc.want {
				t.Fatalf("reply %#x, want %#x", got, tc.want)
			}
			if got != ReplySucceeded {
				c.expectClosed()
			}
		})
	}
}

// TestSOCKS5Greeting checks malformed and unacceptable greetings.
func TestSOCKS5Greeting(t *testing.T) {
	s := &SOCKS5Server{Dialer: &testDialer{}, Resolver: newResolver()}
	addr := serve(t, s)
	auth := &SOCKS5Server{Dialer: &testDialer{}, Username: "u", Password: "p"}
	authAddr := serve(t, auth)
	for _, tc := range []struct {
		name   string
		server string
		send   []byte
		want   []byte // then closed
	}{
		{"socks4", addr, []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil},
		{"http", addr, []byte("GET / HTTP/1.1\r\n\r\n"), nil},
		{"no methods", addr, []byte{5, 0}, []byte{5, 0xff}},
		{"only gssapi", addr, []byte{5, 1, 1}, []byte{5, 0xff}},
		{"no auth to auth server", authAddr, []byte{5, 1, 0}, []byte{5, 0xff}},
		{"short", addr, []byte{5, 3, 0}, nil},
		{"request version 4", addr, []byte{5, 1, 0, 4, 1, 0, 1, 127, 0, 0, 1, 0, 80}, []byte{5, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSOCKS(t, tc.server)
			c.send(tc.send...)
			if tc.name == "short" {
				c.CloseWrite()
			}
			if tc.want != nil {
				c.expect(tc.want...)
			}
			c.expectClosed()
		})
	}
}

func (c *socksConn) CloseWrite() { c.Conn.(*net.TCPConn).CloseWrite() }

// TestSOCKS5Auth checks RFC 1929 and that credentials never reach the log.
func TestSOCKS5Auth(t *testing.T) {
	_, web := webServer(t)
	var logs logBuffer
	const user, pass = "user-7f3a", "pass-91c2"
	s := &SOCKS5Server{Dialer: &testDialer{}, Username: user, Password: pass, Logger: logs.logger()}
	addr := serve(t, s)
	userpass := func(u, p string) []byte {
		b := append([]byte{1, byte(len(u))}, u...)
		return append(append(b, byte(len(p))), p...)
	}
	for _, tc := range []struct {
		name string
		u, p string
		ok   bool
	}{
		{"good", user, pass, true},
		{"wrong password", user, "pass-91c3", false},
		{"wrong user", "user-7f3b", pass, false},
		{"prefix", user[:4], pass[:4], false},
		{"swapped", pass, user, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSOCKS(t, addr)
			c.send(5, 2, 0, 2)
			c.expect(5, 2)
			c.send(userpass(tc.u, tc.p)...)
			if !tc.ok {
				c.expect(1, 1)
				c.expectClosed()
				return
			}
			c.expect(1, 0)
			c.send(request(cmdConnect, "127.0.0.1", web.Port())...)
			if rep, _ := c.reply(); rep != ReplySucceeded {
				t.Fatalf("reply %#x", rep)
			}
		})
	}
	t.Run("bad version", func(t *testing.T) {
		c := dialSOCKS(t, addr)
		c.send(5, 1, 2)
		c.expect(5, 2)
		c.send(2, 1, 'u', 1, 'p')
		c.expectClosed()
	})
	time.Sleep(50 * time.Millisecond) // let the handlers log
	if l := logs.String(); strings.Contains(l, "user-7f3") || strings.Contains(l, "pass-91c") {
		t.Errorf("credentials in the log:\n%s", l)
	} else if !strings.Contains(l, "authentication failed") {
		t.Errorf("log does not record the failures:\n%s", l)
	}
}

// TestSOCKS5HandshakeDeadline is a slowloris client: it sends one byte of
// a valid handshake every 50 ms; the server must close it when the
// handshake deadline passes, not when it stops sending.
func TestSOCKS5HandshakeDeadline(t *testing.T) {
	s := &SOCKS5Server{Dialer: &testDialer{}, Resolver: newResolver(), Limits: Limits{HandshakeTimeout: 300 * time.Millisecond}}
	addr := serve(t, s)
	c := dialSOCKS(t, addr)
	msg := append([]byte{5, 1, 0}, request(cmdConnect, strings.Repeat("a", 200)+".test", 80)...)
	start := time.Now()
	closed := make(chan time.Duration)
	go func() {
		var b [2]byte
		io.ReadFull(c, b[:]) // the method selection
		c.Read(b[:])
		closed <- time.Since(start)
	}()
	for _, b := range msg {
		if _, err := c.Write([]byte{b}); err != nil {
			break
		}
		select {
		case d := <-closed:
			if d > time.Second {
				t.Fatalf("closed after %v", d)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("the server let a 10-second handshake finish")
}

// TestSOCKS5ConnLimit checks a connection over MaxConns is closed at once
// and that a slot frees when a client leaves.
func TestSOCKS5ConnLimit(t *testing.T) {
	s := &SOCKS5Server{Dialer: &testDialer{}, Limits: Limits{MaxConns: 5}}
	addr := serve(t, s)
	var idle []*socksConn
	for range 5 {
		c := dialSOCKS(t, addr)
		c.send(5) // half a greeting, then silence
		idle = append(idle, c)
	}
	waitConns(t, &s.t, 5)
	extra := dialSOCKS(t, addr)
	extra.expectClosed()
	idle[0].Close()
	waitConns(t, &s.t, 4)
	c := dialSOCKS(t, addr)
	c.send(5, 1, 0)
	c.expect(5, 0)
}

func waitConns(t testing.TB, tr *tracker, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		tr.mu.Lock()
		n := len(tr.conns)
		tr.mu.Unlock()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections tracked, want %d", n, want)
		}
	}
}

// TestHalfOpenMemory opens 2,000 clients that send half a handshake and
// wait: each server must hold them in bounded memory, close the next one
// over its limit, then drop every one on Close.
func TestHalfOpenMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	lim := Limits{MaxConns: 2000, HandshakeTimeout: time.Minute}
	socks := &SOCKS5Server{Dialer: &testDialer{}, Limits: lim}
	web := &HTTPServer{Dialer: &testDialer{}, Limits: lim}
	t.Run("socks5", func(t *testing.T) { halfOpen(t, socks, &socks.t, []byte{5, 2, 0}, 16<<10) })
	t.Run("http", func(t *testing.T) { halfOpen(t, web, &web.t, []byte("GET http://x/ HTTP/1.1\r\nHost"), 24<<10) })
}

func halfOpen(t *testing.T, s interface {
	Serve(net.Listener) error
	Close() error
}, tr *tracker, half []byte, budget int64) {
	n := 2000
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	before := memInUse()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(half)
		conns = append(conns, c)
	}
	waitConns(t, tr, n)
	// The next one is over the limit.
	extra := dialSOCKS(t, ln.Addr().String())
	extra.expectClosed()
	perConn := (memInUse() - before) / int64(n)
	t.Logf("%d half-open clients: %d bytes each (both ends in this process)", n, perConn)
	if perConn > budget {
		t.Errorf("%d bytes per half-open client, want at most %d", perConn, budget)
	}
	s.Close()
	if err := <-done; err != ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
	waitConns(t, tr, 0)
	var b [8]byte
	conns[n-1].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conns[n-1].Read(b[:]); err == nil || isTimeout(err) {
		t.Errorf("after Close a client reads %v, want EOF", err)
	}
}

func memInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

// TestSOCKS5HalfClose checks a client's half-close reaches the server and
// the server's answer still comes back.
func TestSOCKS5HalfClose(t *testing.T) {
	up := listen(t)
	go countServer(up)
	s := &SOCKS5Server{Dialer: &testDialer{}}
	addr := serve(t, s)
	c := dialSOCKS(t, addr)
	ap := netip.MustParseAddrPort(up.Addr().String())
	if rep, _ := c.connect("127.0.0.1", ap.Port()); rep != ReplySucceeded {
		t.Fatalf("reply %#x", rep)
	}
	checkCount(t, c.Conn)
}

// countServer answers each connection, once the client half-closes, with
// the number of bytes it read, then closes.
func countServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			fmt.Fprintf(c, "read %d", n)
		}()
	}
}

func checkCount(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := strings.Repeat("x", 100000)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "read 100000" {
		t.Fatalf("got %q, %v; want %q", got, err, "read 100000")
	}
}

// TestSOCKS5Curl runs curl --socks5-hostname against the server.
func TestSOCKS5Curl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	_, web := webServer(t)
	_, forbidden := webServer(t)
	d := &testDialer{}
	d.Refuse(forbidden)
	s := &SOCKS5Server{Dialer: d, Resolver: newResolver(), Username: "u", Password: "p"}
	addr := serve(t, s)
	run := func(url string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, "-sS", "--noproxy", "", "--socks5-hostname", addr,
			"--proxy-user", "u:p", url).CombinedOutput()
		return string(out), err
	}
	out, err := run(fmt.Sprintf("http://web.test:%d/by-name", web.Port()))
	if err != nil || !strings.HasPrefix(out, fmt.Sprintf("hello web.test:%d /by-name", web.Port())) {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	out, err = run(fmt.Sprintf("http://127.0.0.1:%d/", forbidden.Port()))
	if err == nil || !strings.Contains(out, "SOCKS5 connection to 127.0.0.1. (2)") {
		t.Fatalf("curl to a refused address: %v\n%s", err, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
}
