package proxy_test

import (
	"context"
	"log"
	"net"

	"github.com/oevpn/oevpn/internal/proxy"
)

// A SOCKS5 server that sends everything in the clear from the host and
// resolves names with a DNS server of its choosing (oevpn's stub, so that
// names asked through the proxy trigger discovery). A node's Dialer would
// take the place of net.Dialer.
func ExampleSOCKS5Server() {
	stub := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, "127.0.0.1:5353")
	}}
	s := &proxy.SOCKS5Server{Dialer: &net.Dialer{}, Resolver: stub}
	ln, err := net.Listen("tcp", "127.0.0.1:1080")
	if err != nil {
		log.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Close()
}
