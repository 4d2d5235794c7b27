package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/oevpn/oevpn/internal/proxy"
)

// partProxy: an HTTP server listens on B's stack; a client fetches a page
// from it by name through the SOCKS5 proxy of A, which resolves the name
// with A's resolver (starting opportunism) and connects through A's node.
func (d *demoWorld) partProxy(out io.Writer) error {
	a, b, err := d.nodes()
	if err != nil {
		return err
	}
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		return err
	}
	page := "<h1>served on B's userspace stack</h1><p>" + marker + " (d)</p>\n"
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s<p>you are %s</p>\n", page, r.RemoteAddr)
	}), ReadHeaderTimeout: 5 * time.Second}
	go web.Serve(ln)
	defer web.Close()

	socks := &proxy.SOCKS5Server{Dialer: nodeDialer{a}, Resolver: nodeDialer{a}}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go socks.Serve(pl)
	defer socks.Close()
	fmt.Fprintf(out, "  A's SOCKS5 proxy on %v (host loopback); HTTP server on B's stack at %v:80\n", pl.Addr(), demoB)

	dialer, err := xproxy.SOCKS5("tcp", pl.Addr().String(), nil, &net.Dialer{})
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: dialer.(xproxy.ContextDialer).DialContext, DisableKeepAlives: true}}
	url := "http://" + demoWebName + "/"
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("GET %s through SOCKS5: %w", url, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), page) {
		return fmt.Errorf("GET %s: %s %q", url, resp.Status, body)
	}
	fmt.Fprintf(out, "  GET %s via socks5h (the name sent to the proxy, resolved by A's resolver to %v): %s in %v\n",
		url, demoB, resp.Status, time.Since(start).Round(100*time.Microsecond))
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		fmt.Fprintf(out, "    | %s\n", l)
	}
	fmt.Fprintf(out, "  A: check %v: %s\n", demoB, checkLine(a.Check(demoB)))
	// A name under private that publishes nothing: the proxy refuses it
	// (SOCKS5 reply 2, "connection not allowed by ruleset").
	_, err = client.Get("http://secret.demo.test/")
	if err == nil || !strings.Contains(err.Error(), "not allowed") {
		return fmt.Errorf("GET http://secret.demo.test/ (private, no key): %v, want refused", err)
	}
	fmt.Fprintf(out, "  GET http://secret.demo.test/ (%v, private, no key): refused by A's proxy: SOCKS5 reply 0x02, connection not allowed by ruleset\n", demoPrivate)
	return nil
}
