package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func seedRequests(f *testing.F) {
	f.Add(request(cmdConnect, "192.0.2.1", 80))
	f.Add(request(cmdConnect, "2001:db8::1", 443))
	f.Add(request(cmdUDPAssociate, "0.0.0.0", 0))
	f.Add(nameRequest(cmdConnect, "example.com", 80))
	f.Add(nameRequest(cmdBind, "127.0.0.1", 80))
	f.Add([]byte{5, 1, 0, 3, 255})
	f.Add([]byte{5, 1, 0, 9})
}

func FuzzSOCKS5Greeting(f *testing.F) {
	f.Add([]byte{5, 1, 0})
	f.Add([]byte{5, 2, 0, 2})
	f.Add([]byte{5, 255})
	f.Add([]byte{4, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		var b [handshakeBufSize]byte
		m, err := readGreeting(bytes.NewReader(p), &b)
		if err == nil && (len(m) == 0 || len(m) != int(p[1]) || !bytes.Equal(m, p[2:2+len(m)])) {
			t.Fatalf("methods %x from %x", m, p)
		}
	})
}

func FuzzSOCKS5UserPass(f *testing.F) {
	f.Add([]byte{1, 1, 'u', 1, 'p'})
	f.Add([]byte{1, 255})
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		var b [handshakeBufSize]byte
		u, pw, err := readUserPass(bytes.NewReader(p), &b)
		if err == nil && (len(u) == 0 || len(pw) == 0 || len(u)+len(pw)+3 > len(p)) {
			t.Fatalf("user %q pass %q from %x", u, pw, p)
		}
	})
}

func FuzzSOCKS5Request(f *testing.F) {
	seedRequests(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		var b [handshakeBufSize]byte
		_, dst, err := readRequest(bytes.NewReader(p), &b)
		if err != nil {
			return
		}
		if dst.name != "" && !validName(dst.name) || dst.name == "" && !dst.ip.IsValid() {
			t.Fatalf("accepted %+v from %x", dst, p)
		}
		if dst.ip.Is4In6() {
			t.Fatalf("mapped address %v not unmapped", dst.ip)
		}
	})
}

func FuzzSOCKSUDPHeader(f *testing.F) {
	f.Add(appendUDPHeader(nil, netip.MustParseAddrPort("192.0.2.1:53")))
	f.Add(append(appendUDPHeader(nil, netip.MustParseAddrPort("[2001:db8::1]:53")), "query"...))
	f.Add([]byte{0, 0, 0, 3, 3, 'a', '.', 'b', 0, 53, 'x'})
	f.Add([]byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 53})
	f.Fuzz(func(t *testing.T, p []byte) {
		dst, payload, err := parseUDPHeader(p)
		if err != nil {
			return
		}
		if len(payload) > len(p) || !bytes.HasSuffix(p, payload) {
			t.Fatalf("payload %x is not the end of %x", payload, p)
		}
		if p[3] == atypIPv4 {
			if re := append(appendUDPHeader(nil, netip.AddrPortFrom(dst.ip, dst.port)), payload...); !bytes.Equal(re, p) {
				t.Fatalf("round trip %x, want %x", re, p)
			}
		}
	})
}

// refuseAll is a Dialer that refuses everything, so fuzzing touches no
// network.
type refuseAll struct{}

func (refuseAll) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return nil, fmt.Errorf("%s: %w", address, ErrRefused)
}

// scriptConn is a net.Conn that reads a script and discards what is
// written.
type scriptConn struct {
	io.Reader
	out bytes.Buffer
}

func (c *scriptConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *scriptConn) Close() error                { return nil }
func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1080}
}
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzSOCKS5Handshake runs the server's whole handshake on a script; the
// reply, if any, must be a well-formed SOCKS5 or RFC 1929 answer.
func FuzzSOCKS5Handshake(f *testing.F) {
	for _, r := range [][]byte{
		request(cmdConnect, "192.0.2.1", 80), nameRequest(cmdConnect, "x.test", 80),
		request(cmdUDPAssociate, "0.0.0.0", 0), request(cmdBind, "192.0.2.1", 80), {5, 1, 0, 8},
	} {
		f.Add(append([]byte{5, 1, 0}, r...))
		f.Add(append([]byte{5, 1, 2, 1, 1, 'u', 1, 'p'}, r...))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, user := range []string{"", "u"} {
			s := &SOCKS5Server{Dialer: refuseAll{}, Resolver: testResolver{}, Username: user, Password: "p"}
			s.t.init()
			c := &scriptConn{Reader: bytes.NewReader(p)}
			s.handle(c, logger(nil))
			out := c.out.Bytes()
			if len(out) == 0 {
				continue
			}
			if len(out) < 2 || out[0] != socksVersion {
				t.Fatalf("script %x: method selection %x", p, out)
			}
			rest := out[2:]
			if out[1] == methodUserPass && len(rest) >= 2 && rest[0] == userPassVersion {
				rest = rest[2:]
			}
			// Every dial is refused: any reply is a 10-byte failure.
			if len(rest) > 0 && (len(rest) != 10 || rest[0] != socksVersion || rest[1] == byte(ReplySucceeded)) {
				t.Fatalf("script %x: answer %x", p, out)
			}
		}
	})
}

// FuzzHTTPRequest parses a request as net/http does and hands it to the
// proxy's handler; the answer must be one of the proxy's error statuses
// (every dial is refused).
func FuzzHTTPRequest(f *testing.F) {
	for _, r := range []string{
		"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET http://192.0.2.1:8080/x HTTP/1.1\r\nHost: x\r\nConnection: close, X\r\nX: y\r\n\r\n",
		"CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\n",
		"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"TRACE http://x/ HTTP/1.1\r\n\r\n",
		"POST http://x:1/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
	} {
		f.Add([]byte(r))
	}
	s := &HTTPServer{Dialer: refuseAll{}}
	s.once.Do(s.init)
	f.Fuzz(func(t *testing.T, p []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(p)))
		if err != nil {
			return
		}
		req.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		s.serveHTTP(w, req)
		switch w.Code {
		case http.StatusBadRequest, http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusBadGateway:
		default:
			t.Fatalf("request %q: status %d", p, w.Code)
		}
	})
}
