package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPForward sends requests through the forward proxy with
// net/http's client and checks hop-by-hop headers stay behind, the proxy
// adds nothing, and the client's connection is reused.
func TestHTTPForward(t *testing.T) {
	_, web := webServer(t)
	s := &HTTPServer{Dialer: &testDialer{}, Resolver: newResolver(), Username: "u", Password: "p"}
	addr := serve(t, s)
	var dials atomic.Int32
	client := &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: addr, User: url.UserPassword("u", "p")}),
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, a)
		},
	}}
	for i := range 3 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://web.test:%d/p%d", web.Port(), i), nil)
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("X-Hop", "secret")
		req.Header.Set("X-End", "kept")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(body)
		if !strings.HasPrefix(got, fmt.Sprintf("hello web.test:%d /p%d", web.Port(), i)) || !strings.Contains(got, "X-End: kept") {
			t.Fatalf("response %q", got)
		}
		for _, h := range []string{"X-Hop", "Proxy-Authorization", "X-Forwarded-For", "Forwarded", "Via"} {
			if strings.Contains(got, h+":") {
				t.Errorf("the server got %s:\n%s", h, got)
			}
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the client opened %d connections to the proxy, want 1 (keep-alive)", n)
	}
}

// TestHTTPConnect tunnels TLS through CONNECT.
func TestHTTPConnect(t *testing.T) {
	web := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret page")
	}))
	defer web.Close()
	port := netip.MustParseAddrPort(web.Listener.Addr().String()).Port()
	s := &HTTPServer{Dialer: &testDialer{}, Resolver: newResolver()}
	addr := serve(t, s)
	tr := web.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: addr})
	tr.TLSClientConfig.ServerName = "example.com" // httptest's certificate
	resp, err := (&http.Client{Transport: tr}).Get(fmt.Sprintf("https://web.test:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "secret page" {
		t.Fatalf("body %q", body)
	}
}

// TestHTTPStatuses checks each failure's status, and that the connection
// stays usable after an error answer.
func TestHTTPStatuses(t *testing.T) {
	_, web := webServer(t)
	_, forbidden := webServer(t)
	closed := closedPort(t)
	d := &testDialer{}
	d.Refuse(forbidden)
	addr := serve(t, &HTTPServer{Dialer: d, Resolver: newResolver()})
	hangAddr := serve(t, &HTTPServer{Dialer: &testDialer{hang: true}, Limits: Limits{DialTimeout: 100 * time.Millisecond}})
	authAddr := serve(t, &HTTPServer{Dialer: d, Username: "u", Password: "p"})
	for _, tc := range []struct {
		name, server, req string
		want              int
	}{
		{"forward", addr, "GET http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\n\r\n", 200},
		{"forward by name", addr, "GET http://web.test:{web}/ HTTP/1.1\r\nHost: web.test\r\n\r\n", 200},
		{"connect", addr, "CONNECT 127.0.0.1:{web} HTTP/1.1\r\nHost: 127.0.0.1:{web}\r\n\r\n", 200},
		{"origin form", addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"https forward", addr, "GET https://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"connect no port", addr, "CONNECT web.test HTTP/1.1\r\nHost: web.test\r\n\r\n", 400},
		{"connect path", addr, "CONNECT /x HTTP/1.1\r\nHost: 127.0.0.1:{web}\r\n\r\n", 400},
		{"connect port 0", addr, "CONNECT web.test:0 HTTP/1.1\r\nHost: web.test:0\r\n\r\n", 400},
		{"trace", addr, "TRACE http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\n\r\n", 405},
		{"refused forward", addr, "GET http://127.0.0.1:{forbidden}/ HTTP/1.1\r\nHost: x\r\n\r\n", 403},
		{"refused connect", addr, "CONNECT 127.0.0.1:{forbidden} HTTP/1.1\r\nHost: 127.0.0.1:{forbidden}\r\n\r\n", 403},
		{"refused connect, mapped form", addr, "CONNECT [::ffff:127.0.0.1]:{forbidden} HTTP/1.1\r\nHost: x\r\n\r\n", 403},
		{"refused forward, mapped form", addr, "GET http://[::ffff:127.0.0.1]:{forbidden}/ HTTP/1.1\r\nHost: x\r\n\r\n", 403},
		{"not loopback", addr, "CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\n", 403},
		{"connection refused", addr, "CONNECT 127.0.0.1:{closed} HTTP/1.1\r\nHost: 127.0.0.1:{closed}\r\n\r\n", 502},
		{"forward connection refused", addr, "GET http://127.0.0.1:{closed}/ HTTP/1.1\r\nHost: x\r\n\r\n", 502},
		{"unknown name", addr, "GET http://nowhere.test/ HTTP/1.1\r\nHost: nowhere.test\r\n\r\n", 502},
		{"bad name", addr, "CONNECT a%00b:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bad huge header", addr, "GET http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", 431},
		{"timeout", hangAddr, "CONNECT 127.0.0.1:{web} HTTP/1.1\r\nHost: x\r\n\r\n", 504},
		{"forward timeout", hangAddr, "GET http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\n\r\n", 504},
		{"no credentials", authAddr, "GET http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\n\r\n", 407},
		{"wrong credentials", authAddr, "GET http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dTpx\r\n\r\n", 407},
		{"credentials", authAddr, "GET http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dTpw\r\n\r\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", tc.server)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			req := strings.NewReplacer("{web}", fmt.Sprint(web.Port()), "{forbidden}", fmt.Sprint(forbidden.Port()),
				"{closed}", fmt.Sprint(closed.Port())).Replace(tc.req)
			for round := range 2 { // the second round checks keep-alive
				io.WriteString(c, req)
				resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(tc.req)[0]})
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if resp.StatusCode != tc.want {
					t.Fatalf("round %d: status %d, want %d", round, resp.StatusCode, tc.want)
				}
				if tc.want == 200 && strings.HasPrefix(tc.req, "CONNECT") {
					return // the connection is a tunnel now
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Close {
					if !strings.Contains(tc.name, "bad") {
						t.Fatalf("round %d: the proxy closes the connection", round)
					}
					return // net/http closes after a malformed request
				}
			}
		})
	}
}

// TestHTTPHeaderDeadline is a slowloris client: headers one byte at a
// time must be cut off at the deadline.
func TestHTTPHeaderDeadline(t *testing.T) {
	addr := serve(t, &HTTPServer{Dialer: &testDialer{}, Limits: Limits{HandshakeTimeout: 300 * time.Millisecond}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(closed)
	}()
	msg := "GET http://127.0.0.1/ HTTP/1.1\r\nX-Slow: " + strings.Repeat("a", 200)
	for i := range len(msg) {
		c.Write([]byte{msg[i]})
		select {
		case <-closed:
			if d := time.Since(start); d > time.Second {
				t.Fatalf("closed after %v", d)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("the server let a 10-second request header through")
}

// TestHTTPConnLimit checks connections over MaxConns, tunnels included,
// are closed at once.
func TestHTTPConnLimit(t *testing.T) {
	up := listen(t)
	go countServer(up)
	s := &HTTPServer{Dialer: &testDialer{}, Limits: Limits{MaxConns: 2}}
	addr := serve(t, s)
	tunnel := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: x\r\n\r\n", up.Addr())
		return c
	}
	a, b := tunnel(), tunnel()
	for _, c := range []net.Conn{a, b} {
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v", err)
		}
	}
	waitConns(t, &s.t, 2)
	over := tunnel()
	if n, err := over.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("over the limit: read %d, %v; want closed", n, err)
	}
	checkCount(t, a)
}

// TestHTTPCurl runs curl -x (forward, and CONNECT with -p) against the
// server.
func TestHTTPCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	_, web := webServer(t)
	_, forbidden := webServer(t)
	d := &testDialer{}
	d.Refuse(forbidden)
	addr := serve(t, &HTTPServer{Dialer: d, Resolver: newResolver()})
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		args = append([]string{"-sS", "--noproxy", "", "-x", "http://" + addr, "-w", "\n%{http_code}"}, args...)
		out, _ := exec.CommandContext(ctx, curl, args...).CombinedOutput()
		return string(out)
	}
	url := fmt.Sprintf("http://web.test:%d/by-name", web.Port())
	for _, args := range [][]string{{url}, {"-p", url}} {
		out := run(args...)
		if !strings.HasPrefix(out, fmt.Sprintf("hello web.test:%d /by-name", web.Port())) || !strings.HasSuffix(out, "\n200") {
			t.Errorf("curl %v:\n%s", args, out)
		}
	}
	if out := run(fmt.Sprintf("http://127.0.0.1:%d/", forbidden.Port())); !strings.HasSuffix(out, "\n403") {
		t.Errorf("curl to a refused address:\n%s", out)
	}
	if out := run("-p", fmt.Sprintf("http://127.0.0.1:%d/", forbidden.Port())); !strings.Contains(out, "403") {
		t.Errorf("curl -p to a refused address:\n%s", out)
	}
}
