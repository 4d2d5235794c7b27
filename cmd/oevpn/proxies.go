package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/internal/proxy"
	"github.com/oevpn/oevpn/tunnel"
)

// nodeDialer lets the proxies reach destinations through a netstack node:
// a peer's or an opportunistic destination through ESP, the rest as policy
// says. A destination that policy drops is refused (SOCKS5 0x02, HTTP 403).
type nodeDialer struct{ n *tunnel.Node }

func refused(err error) error {
	if errors.Is(err, tunnel.ErrBlocked) {
		return fmt.Errorf("%w: %w", proxy.ErrRefused, err)
	}
	return err
}

// DialContext implements proxy.Dialer.
func (d nodeDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.n.DialContext(ctx, network, address)
	return c, refused(err)
}

// ListenPacket implements proxy.PacketListener (UDP ASSOCIATE).
func (d nodeDialer) ListenPacket(_ context.Context, network string) (net.PacketConn, error) {
	return d.n.ListenPacket(network, ":0")
}

// LookupNetIP implements proxy.Resolver: names resolve through the node,
// which starts opportunism for their addresses.
func (d nodeDialer) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	addrs, err := d.n.LookupNetIP(ctx, network, host)
	return addrs, refused(err)
}

// startProxies starts the proxies and port forwards of cfg on ep, which
// close with it.
func startProxies(ep *endpoint, cfg *config.Config, log *slog.Logger) error {
	p := cfg.Proxy
	d := nodeDialer{ep.Node}
	type server interface {
		Serve(net.Listener) error
		Close() error
	}
	start := func(k, what string, s server, ln net.Listener, err error) error {
		if err != nil {
			return cfg.KeyError(k, err)
		}
		ep.OnClose(func() { s.Close() })
		go s.Serve(ln)
		log.Info(what+" listening", "addr", ln.Addr().String())
		return nil
	}
	if p.SOCKS5 != "" {
		ln, err := net.Listen("tcp", p.SOCKS5)
		s := &proxy.SOCKS5Server{Dialer: d, Resolver: d, Username: p.Username, Password: p.Password, Logger: log.With("component", "socks5")}
		if err := start("proxy.socks5", "SOCKS5 proxy", s, ln, err); err != nil {
			return err
		}
	}
	if p.HTTP != "" {
		ln, err := net.Listen("tcp", p.HTTP)
		s := &proxy.HTTPServer{Dialer: d, Resolver: d, Username: p.Username, Password: p.Password, Logger: log.With("component", "http-proxy")}
		if err := start("proxy.http", "HTTP proxy", s, ln, err); err != nil {
			return err
		}
	}
	for i, f := range cfg.Forwards {
		k := fmt.Sprintf("forward[%d].listen", i)
		fw := &proxy.Forwarder{Dialer: d, Resolver: d, Target: f.Connect, Logger: log.With("component", "forward", "connect", f.Connect)}
		var ln net.Listener
		var err error
		if f.From == "tunnel" {
			// A service of this host offered to peers.
			fw.Dialer, fw.Resolver = &net.Dialer{}, net.DefaultResolver
			ln, err = ep.Listen("tcp", f.Listen)
		} else {
			ln, err = net.Listen("tcp", f.Listen)
		}
		if err := start(k, "port forward from "+fromName(f.From), fw, ln, err); err != nil {
			return err
		}
	}
	return nil
}

func fromName(from string) string {
	if from == "tunnel" {
		return "the tunnel"
	}
	return "the host"
}
