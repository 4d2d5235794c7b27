package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"
)

// HTTPServer is an HTTP proxy: CONNECT tunnels (any port) and forwarding of
// absolute-URI http:// requests (RFC 9110 section 7.6: hop-by-hop headers
// are removed both ways, and no Forwarded or X-Forwarded-For is added).
//
// Answers: 400 for a request that is not a proxy request (origin-form) or
// names a scheme other than http, 405 for TRACE (it would echo the
// request's headers back), 407 without the configured credentials, 403
// when the Dialer refuses the destination, 504 on a timeout, 502 for any
// other failure to reach it. Connections are kept alive between requests.
type HTTPServer struct {
	// Dialer carries the tunnels and forwarded requests.
	Dialer Dialer
	// Resolver resolves names in request targets. Nil: names get 502.
	Resolver Resolver
	// Username and Password, when Username is not empty, are required of
	// every request as Proxy-Authorization: Basic (answer 407 otherwise).
	// They are compared in constant time and never logged.
	Username, Password string
	// Limits bound clients; HandshakeTimeout bounds the reading of each
	// request's headers.
	Limits
	// Logger receives request events at Debug level; nil discards.
	Logger *slog.Logger

	once sync.Once
	log  *slog.Logger
	t    tracker
	hs   *http.Server
	rp   *httputil.ReverseProxy
	tr   *http.Transport
}

// maxHeaderBytes bounds a request's headers.
const maxHeaderBytes = 64 << 10

func (s *HTTPServer) init() {
	s.log = logger(s.Logger)
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.tr = &http.Transport{
		Proxy:                 nil, // never the environment's proxy
		DialContext:           s.dialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
	}
	s.rp = &httputil.ReverseProxy{
		// Out is In with hop-by-hop and X-Forwarded headers removed; its
		// URL is already absolute.
		Rewrite:      func(*httputil.ProxyRequest) {},
		Transport:    s.tr,
		ErrorLog:     errLog,
		ErrorHandler: s.upstreamError,
	}
	s.hs = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: s.handshakeTimeout(),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return s.t.ctx },
	}
	s.t.init()
}

// Serve accepts proxy clients on ln until Close, and returns
// ErrServerClosed then. It may be called on several listeners.
func (s *HTTPServer) Serve(ln net.Listener) error {
	s.once.Do(s.init)
	wl, err := s.t.listen(ln, s.maxConns(), s.log)
	if err != nil {
		return err
	}
	err = s.hs.Serve(wl)
	if errors.Is(err, http.ErrServerClosed) {
		err = ErrServerClosed
	}
	return err
}

// Close closes the listeners, every connection and tunnel, and the idle
// connections to servers.
func (s *HTTPServer) Close() error {
	s.once.Do(s.init)
	s.hs.Close()
	err := s.t.close()
	s.tr.CloseIdleConnections()
	return err
}

func (s *HTTPServer) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := splitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.dialTimeout())
	defer cancel()
	return dial(ctx, s.Dialer, s.Resolver, network, host, port)
}

func (s *HTTPServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if s.Username != "" && !s.authorized(r) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="oevpn"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		s.connect(w, r)
	case r.Method == http.MethodTrace:
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, CONNECT")
		http.Error(w, "TRACE is not forwarded", http.StatusMethodNotAllowed)
	case !r.URL.IsAbs() || r.URL.Host == "":
		http.Error(w, "not a proxy request: the target must be an absolute URI", http.StatusBadRequest)
	case r.URL.Scheme != "http":
		http.Error(w, "only http:// is forwarded; use CONNECT for https", http.StatusBadRequest)
	default:
		s.log.Debug("http proxy: forward", "client", r.RemoteAddr, "method", r.Method, "host", r.URL.Host)
		s.rp.ServeHTTP(w, r)
	}
}

// authorized checks Proxy-Authorization: Basic (RFC 7617).
func (s *HTTPServer) authorized(r *http.Request) bool {
	scheme, cred, ok := strings.Cut(r.Header.Get("Proxy-Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	return ok && credentialsMatch([]byte(user), []byte(pass), s.Username, s.Password)
}

func (s *HTTPServer) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	status := HTTPStatusFor(err)
	s.log.Debug("http proxy: upstream failed", "client", r.RemoteAddr, "host", r.URL.Host, "status", status, "err", err)
	http.Error(w, http.StatusText(status), status)
}

// connect opens a CONNECT tunnel (RFC 9110 section 9.3.6).
func (s *HTTPServer) connect(w http.ResponseWriter, r *http.Request) {
	// The target is the request's authority-form URI, never a Host header.
	host, port, err := splitHostPort(r.URL.Host)
	if err != nil || r.RequestURI != r.URL.Host {
		http.Error(w, "CONNECT needs host:port", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.dialTimeout())
	up, err := dial(ctx, s.Dialer, s.Resolver, "tcp", host, port)
	cancel()
	if err != nil {
		status := HTTPStatusFor(err)
		s.log.Debug("http proxy: connect failed", "client", r.RemoteAddr, "host", r.URL.Host, "status", status, "err", err)
		http.Error(w, http.StatusText(status), status)
		return
	}
	defer up.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot tunnel on this connection", http.StatusInternalServerError)
		return
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.handshakeTimeout()))
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent after the request (a TLS ClientHello, say)
	// may sit in the server's buffer.
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		if _, err := up.Write(p); err != nil {
			return
		}
	}
	c.SetDeadline(time.Time{})
	s.log.Debug("http proxy: connect", "client", r.RemoteAddr, "host", r.URL.Host)
	relay(c, up)
}
