package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/config"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/tunnel"
)

func cmdUp(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "configuration `file` (TOML)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: oevpn up -c FILE", errUsage)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Interface.LogLevel)
	ep, err := startEndpoint(cfg, log)
	if err != nil {
		return err
	}
	if err := ep.installSAs(cfg.SAs); err != nil {
		ep.Close()
		return err
	}
	ike, natt := ep.eng.Ports()
	log.Info("endpoint up", "config", cfg.Path, "mode", cfg.Interface.Mode, "device", cfg.Interface.Name,
		"ike_port", ike, "natt_port", natt, "sas", len(cfg.SAs))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	return ep.Close()
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(strings.ToUpper(level)))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// endpoint is one running oevpn endpoint.
type endpoint struct {
	eng *tunnel.Engine
	net *netstack.Net // netstack mode only
	log *slog.Logger
}

// startEndpoint creates the device and starts the datapath.
func startEndpoint(cfg *config.Config, log *slog.Logger) (*endpoint, error) {
	in := cfg.Interface
	ep := &endpoint{log: log}
	tcfg := tunnel.Config{IKEPort: uint16(*in.IKEPort), NATTPort: uint16(*in.NATTPort), Logger: log}
	switch in.Mode {
	case config.ModeNetstack:
		var addrs []netip.Addr
		for _, p := range in.Addresses {
			addrs = append(addrs, p.Addr())
		}
		dev, tnet, err := tunnel.NewNetstack(addrs, in.MTU)
		if err != nil {
			return nil, err
		}
		tcfg.Device, ep.net = dev, tnet
	default:
		dev, err := tunnel.CreateOSTUN(tunnel.OSConfig{Name: in.Name, MTU: in.MTU, Addresses: in.Addresses,
			Routes: routesFor(cfg.SAs), Mark: uint32(*in.Fwmark), Table: in.Table, Logger: log})
		if err != nil {
			return nil, err
		}
		tcfg.Device, tcfg.Mark = dev, uint32(*in.Fwmark)
	}
	eng, err := tunnel.New(tcfg)
	if err != nil {
		tcfg.Device.Close()
		return nil, err
	}
	ep.eng = eng
	return ep, nil
}

// routesFor returns the prefixes to route into the TUN: every remote
// selector, with the local selector's address of the same family as source
// when it is a single address (host-to-host).
func routesFor(sas []config.SA) []tunnel.Route {
	var routes []tunnel.Route
	for _, sa := range sas {
		for _, r := range sa.Remote {
			var src netip.Addr
			for _, l := range sa.Local {
				if a, ok := l.Single(); ok && a.Is4() == r.Start.Is4() {
					src = a
					break
				}
			}
			for _, p := range rangePrefixes(r.Start, r.End) {
				routes = append(routes, tunnel.Route{Prefix: p, Src: src})
			}
		}
	}
	return routes
}

// rangePrefixes splits the address range [lo, hi] into the fewest prefixes.
func rangePrefixes(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for lo.IsValid() && lo.Compare(hi) <= 0 {
		bits := lo.BitLen()
		// Grow the prefix while it stays aligned and inside the range.
		for bits > 0 {
			p := netip.PrefixFrom(lo, bits-1)
			if p.Masked().Addr() != lo || policy.PrefixSelector(p).End.Compare(hi) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(lo, bits)
		out = append(out, p)
		last := policy.PrefixSelector(p).End
		if last == hi {
			break
		}
		lo = last.Next()
	}
	return out
}

// installSAs installs the configured static SA pairs.
func (ep *endpoint) installSAs(sas []config.SA) error {
	for i, sa := range sas {
		_, err := ep.eng.Install(tunnel.PairConfig{
			Peer:   sa.Peer,
			Local:  policy.Selectors(sa.Local),
			Remote: policy.Selectors(sa.Remote),
			Out:    esp.Config{Transform: sa.Transform, SPI: sa.SPIOut, Key: sa.KeyOut, ESN: sa.ESN},
			In:     esp.Config{Transform: sa.Transform, SPI: sa.SPIIn, Key: sa.KeyIn, ESN: sa.ESN, ReplayWindow: sa.ReplayWindow},
		})
		if err != nil {
			return fmt.Errorf("sa[%d] (peer %v): %w", i, sa.Peer, err)
		}
	}
	return nil
}

// Close stops the endpoint and removes what it set up on the host.
func (ep *endpoint) Close() error {
	if ep.eng == nil {
		return errors.New("endpoint not started")
	}
	return ep.eng.Close()
}
