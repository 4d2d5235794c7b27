package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
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
	// One instance per control socket, decided before anything on the
	// host is touched: a second one would take the first one's routing
	// away.
	gid, err := controlGroup(cfg)
	if err != nil {
		return err
	}
	if err := prepareControlDir(filepath.Dir(cfg.Interface.Control), gid); err != nil {
		return err
	}
	lock, err := lockInstance(cfg.Interface.Control, cfg.Interface.Name)
	if err != nil {
		return err
	}
	defer lock.Close() // after ep.Close: the host is clean before another may start
	log := newLogger(stderr, cfg.Interface.LogLevel)
	ep, err := startEndpoint(cfg, log)
	if err != nil {
		return err
	}
	ep.eng.SetClasses(cfg.Policy.Classes.WithOwn(ownAddresses(cfg)))
	if err := ep.installSAs(cfg.SAs, cfg.Interface.StateDir); err != nil {
		ep.Close()
		return err
	}
	if err := ep.startIKE(cfg); err != nil {
		ep.Close()
		return err
	}
	if err := ep.serveControl(cfg, gid); err != nil {
		ep.Close()
		return err
	}
	ikePort, natt := ep.eng.Ports()
	log.Info("endpoint up", "config", cfg.Path, "mode", cfg.Interface.Mode, "device", cfg.Interface.Name,
		"ike_port", ikePort, "natt_port", natt, "sas", len(cfg.SAs), "peers", len(cfg.Peers))
	ep.initiatePeers(cfg.Peers)
	trimStop := make(chan struct{})
	defer close(trimStop)
	go tunnel.TrimAfterBursts(trimStop)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	return ep.Close()
}

// controlGroup returns the gid of [interface] control_group, or -1.
func controlGroup(cfg *config.Config) (int, error) {
	name := cfg.Interface.ControlGroup
	if name == "" {
		return -1, nil
	}
	if runtime.GOOS == "windows" {
		return -1, cfg.KeyError("interface.control_group", errors.New("Windows has no peer credentials on unix sockets: the control socket's directory decides who may use it"))
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		if g, err = user.LookupGroupId(name); err != nil {
			return -1, cfg.KeyError("interface.control_group", fmt.Errorf("no group %q on this host", name))
		}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, cfg.KeyError("interface.control_group", err)
	}
	return gid, nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(strings.ToUpper(level)))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// endpoint is one running oevpn endpoint.
type endpoint struct {
	eng     *tunnel.Engine
	ike     *ike.Daemon
	oe      *tunnel.Opportunism // nil without opportunistic classes
	av      *tunnel.AutoVPN     // nil without [autovpn]
	trust   *policy.TrustStore
	closers []func()
	net     *netstack.Net    // netstack mode only
	outside tunnel.Outside   // how our own packets leave, TUN mode only
	dev     *tunnel.OSDevice // TUN mode only
	// gateway is set for an AutoVPN gateway: the traffic it protects is
	// its hosts', which the kernel routes by source, not its own.
	gateway   bool
	clearPath string // "raw", "forwarder" or "none", for status
	log       *slog.Logger
}

// startEndpoint creates the device and starts the datapath.
func startEndpoint(cfg *config.Config, log *slog.Logger) (*endpoint, error) {
	in := cfg.Interface
	ep := &endpoint{log: log, clearPath: "none", gateway: cfg.AutoVPN.Enabled() && cfg.AutoVPN.Mode != "host"}
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
		// No raw sockets here: flows that leave in the clear are
		// terminated and re-originated from host sockets.
		tcfg.ForwardDial = (&net.Dialer{}).DialContext
		ep.clearPath = "forwarder"
	default:
		outside, err := outsideFor(cfg, log)
		if err != nil {
			return nil, err
		}
		ep.outside = outside
		dev, err := tunnel.CreateOSTUN(tunnel.OSConfig{Name: in.Name, MTU: in.MTU, Addresses: in.Addresses,
			Routes: routesFor(cfg, ep.outside), Mark: uint32(*in.Fwmark), Table: in.Table, Protected: cfg.AutoVPN.Protected,
			ProtectedHost: cfg.AutoVPN.Mode == "host", Logger: log})
		if err != nil {
			return nil, err
		}
		tcfg.Device, tcfg.Outside, tcfg.Bypass, ep.dev = dev, ep.outside, dev, dev
		if cfg.Policy.Enabled() || len(cfg.Policy.Clear) > 0 || cfg.AutoVPN.Enabled() {
			if err := ep.openClearPath(&tcfg); err != nil {
				dev.Close()
				return nil, err
			}
		}
	}
	eng, err := tunnel.New(tcfg)
	if err != nil {
		tcfg.Device.Close()
		return nil, err
	}
	ep.eng = eng
	return ep, nil
}

// openClearPath sets up the clear path of an OS TUN device: raw sockets
// where we may open them, else the forwarder, which terminates flows and
// re-originates them from sockets that leave by the outside. Without an
// outside (no mark, no interface) there is none: what we sent would come
// straight back into the TUN.
func (ep *endpoint) openClearPath(tcfg *tunnel.Config) error {
	if ep.outside == (tunnel.Outside{}) {
		ep.log.Warn("no clear path: with no fwmark and no outside interface, packets sent in the clear would come back into the TUN; traffic that policy sends in the clear is dropped")
		return nil
	}
	clear, err := tunnel.NewClearPath(ep.outside)
	switch {
	case err == nil:
		tcfg.Clear, ep.clearPath = clear, "raw"
	case errors.Is(err, tunnel.ErrNoClearPath) || errors.Is(err, os.ErrPermission):
		ep.log.Info("clear path: forwarding TCP and UDP flows from host sockets", "reason", err)
		tcfg.ForwardDial, ep.clearPath = ep.outside.Dialer().DialContext, "forwarder"
		// A bypass route would take the rest of a flow that the
		// forwarder terminated around it.
		tcfg.Bypass = nil
	default:
		return err
	}
	return nil
}

// outsideFor returns how the endpoint's own packets leave the host. On
// Linux the fwmark keeps them out of the TUN, and [interface] outside, if
// set, also binds them to that interface. Elsewhere there are no marks:
// they are bound to the outside interface, by default the one of the
// default route when oevpn starts (before anything is routed into the TUN).
func outsideFor(cfg *config.Config, log *slog.Logger) (tunnel.Outside, error) {
	in := cfg.Interface
	o := tunnel.Outside{Mark: uint32(*in.Fwmark), Interface: in.Outside}
	if o.Interface != "" {
		if _, err := net.InterfaceByName(o.Interface); err != nil {
			return o, cfg.KeyError("interface.outside", fmt.Errorf("no interface %q on this host", o.Interface))
		}
		return o, nil
	}
	if runtime.GOOS == "linux" {
		return o, nil
	}
	name, err := tunnel.DetectOutside(in.Name)
	if err != nil {
		log.Warn("oevpn's own packets follow the routing table: do not route their destinations into the TUN, or set interface.outside", "err", err)
		return o, nil
	}
	log.Info("outside interface", "name", name)
	o.Interface = name
	return o, nil
}

// ownAddresses returns the endpoint's own addresses (the host's, in TUN
// mode, and the configured ones), which are never opportunistic.
func ownAddresses(cfg *config.Config) []netip.Addr {
	var out []netip.Addr
	for _, p := range cfg.Interface.Addresses {
		out = append(out, p.Addr())
	}
	if cfg.Interface.Mode == config.ModeTUN {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					out = append(out, p.Addr())
				}
			}
		}
	}
	return out
}

// routesFor returns the prefixes to route into the TUN: every remote
// selector, with the local selector's address of the same family as source
// when it is a single address (host-to-host). outside looks up the sources
// of opportunistic prefixes.
func routesFor(cfg *config.Config, outside tunnel.Outside) []tunnel.Route {
	type pair struct{ local, remote []policy.Selector }
	var pairs []pair
	for _, sa := range cfg.SAs {
		pairs = append(pairs, pair{sa.Local, sa.Remote})
	}
	for _, p := range cfg.Peers {
		pairs = append(pairs, pair{p.Local, p.Remote})
	}
	var routes []tunnel.Route
	// Blocked and opportunistic destinations are routed to oevpn, which
	// drops, encrypts or re-sends in the clear (clear path) by class, so
	// that nothing leaks around it.
	pol := cfg.Policy
	for _, ps := range [][]netip.Prefix{pol.Block, pol.Private, pol.PrivateOrClear, pol.ClearOrPrivate} {
		for _, p := range ps {
			// The source the host would use without oevpn: the clear
			// path sends with it, and host-to-host SAs are made for it.
			src := outside.SourceFor(p.Masked().Addr())
			routes = append(routes, tunnel.Route{Prefix: p.Masked(), Src: src})
		}
	}
	for _, sa := range pairs {
		for _, r := range sa.remote {
			var src netip.Addr
			for _, l := range sa.local {
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

// installSAs installs the configured static SA pairs. Their outbound
// sequence numbers, hence IVs, live in stateDir, so that a restart under
// the same keys never uses one twice; "" keeps them in memory, only for
// keys made at random for this run (the demo).
func (ep *endpoint) installSAs(sas []config.SA, stateDir string) error {
	for i, sa := range sas {
		var seq esp.SeqStore
		if stateDir != "" {
			f, err := newSeqFile(stateDir, sa.KeyOut)
			if err != nil {
				return fmt.Errorf("sa[%d].key_out: %w", i, err)
			}
			seq = f
		}
		_, err := ep.eng.Install(tunnel.PairConfig{
			Peer:   sa.Peer,
			Local:  policy.Selectors(sa.Local),
			Remote: policy.Selectors(sa.Remote),
			Out:    esp.Config{Transform: sa.Transform, SPI: sa.SPIOut, Key: sa.KeyOut, ESN: sa.ESN, Sequence: seq},
			In:     esp.Config{Transform: sa.Transform, SPI: sa.SPIIn, Key: sa.KeyIn, ESN: sa.ESN, ReplayWindow: sa.ReplayWindow},
		})
		if err != nil {
			return fmt.Errorf("sa[%d] (peer %v): %w", i, sa.Peer, err)
		}
	}
	return nil
}

// startIKE starts the IKE daemon for the configured peers and, with
// opportunistic classes, opportunism.
func (ep *endpoint) startIKE(cfg *config.Config) error {
	peers := cfg.Peers
	if len(peers) == 0 && !cfg.Policy.Enabled() && !cfg.AutoVPN.Enabled() {
		return nil
	}
	var pcs []*ike.PeerConfig
	authz := &policy.Peers{}
	for _, p := range peers {
		var ids []string
		if p.RemoteIdentity.Type != 0 {
			ids = append(ids, p.RemoteIdentity.String())
		}
		authz.Allow(p.Name, ids, p.Auth == config.AuthNull)
		pc := &ike.PeerConfig{Name: p.Name, Addr: p.Address, IKEPort: uint16(p.IKEPort), NATTPort: uint16(p.NATTPort),
			LocalID: p.LocalIdentity, RemoteID: p.RemoteIdentity, IKEProposals: p.IKE, ESPProposals: p.ESP,
			LocalTS: policy.Selectors(p.Local), RemoteTS: policy.Selectors(p.Remote),
			IKELifetime: time.Duration(p.IKELifetime), ChildLifetime: time.Duration(p.ChildLifetime), DPD: time.Duration(p.DPD),
			RetransmitBase: time.Duration(p.RetransmitBase), RetransmitTries: p.RetransmitTries, FragmentSize: p.FragmentSize, AutoStart: p.Start == config.StartNow}
		switch p.Auth {
		case config.AuthPSK:
			pc.Auth.PSK, pc.PeerAuth.PSK = []byte(p.PSK), []byte(p.PSK)
		case config.AuthPubkey:
			pc.Auth.Signer, pc.PeerAuth.PublicKey = p.Signer, p.RemoteKey
		case config.AuthCert:
			pc.Auth.Signer, pc.Auth.Cert, pc.Auth.Chain = p.Signer, p.Cert, p.CertChain
			pc.PeerAuth.Certs, pc.PeerAuth.Roots, pc.PeerAuth.CAs = p.RemoteCerts, p.Roots, p.CACerts
		case config.AuthNull:
			pc.Auth.Null, pc.PeerAuth.Null = true, true
		}
		pcs = append(pcs, pc)
	}
	eng := ep.eng
	icfg := ike.Config{Datapath: eng, Peers: pcs, Logger: ep.log.With("component", "ike"), Authorizer: authz,
		OnChange: func(peer string, up bool, err error) {
			if !up && err != nil {
				eng.AcquireFailed(peer) // drop held packets; the next one retries
			}
		}}
	if cfg.Policy.Enabled() {
		ep.oe = ep.newOpportunism(cfg)
	}
	if cfg.AutoVPN.Enabled() {
		var err error
		if ep.av, err = ep.newAutoVPN(cfg); err != nil {
			return err
		}
	}
	if ep.oe != nil || ep.av != nil {
		icfg.Responder = func(from netip.AddrPort, local netip.Addr, autovpnNonce []byte) *ike.PeerConfig {
			switch {
			case autovpnNonce != nil && ep.av != nil:
				return ep.av.Responder(from, autovpnNonce)
			case autovpnNonce == nil && ep.oe != nil:
				return ep.oe.Responder(from, local)
			}
			return nil
		}
		if ep.av != nil {
			icfg.ClaimAutoVPNNonce = ep.av.ClaimNonce
		}
		onChange := icfg.OnChange
		icfg.OnChange = func(peer string, up bool, err error) {
			onChange(peer, up, err)
			if ep.oe != nil {
				ep.oe.OnChange(peer, up, err)
			}
			if ep.av != nil {
				ep.av.OnChange(peer, up, err)
			}
		}
	}
	d, err := ike.New(icfg)
	if err != nil {
		return err
	}
	if ep.av != nil {
		ep.av.Start(d)
	}
	if ep.oe != nil {
		ep.oe.Start(d)
		if err := ep.startStub(cfg); err != nil {
			d.Close()
			return err
		}
	}
	for _, p := range peers {
		// A start peer is trapped too: while its IKE SA is down (the
		// peer restarted, or is not there yet) its traffic is held and
		// renegotiates, instead of finding no route into the tunnel.
		if p.Start == config.StartTraffic || p.Start == config.StartNow {
			eng.SetTrap(p.Name, policy.Selectors(p.Local), policy.Selectors(p.Remote))
		}
	}
	eng.SetAcquireHandler(d.Acquire)
	ep.ike = d
	ep.eng.SetIKEHandler(d.HandlePacketTo)
	ep.eng.SetUnknownSPIHandler(d.UnknownESP)
	ep.eng.SetSAEventHandler(func(p *tunnel.SAPair, ev esp.Event) {
		if c, ok := p.Owner.(*ike.ChildSA); ok {
			d.ChildEvent(c, ev == esp.EventHardExpire)
		}
	})
	return nil
}

// newOpportunism configures opportunistic encryption from [opportunism].
func (ep *endpoint) newOpportunism(cfg *config.Config) *tunnel.Opportunism {
	o := cfg.OE
	res := &dnsoe.Resolver{Server: o.Resolver, Mode: o.Mode, Timeout: time.Duration(o.Timeout), Anchors: o.Anchors}
	if cfg.Interface.Mode == config.ModeTUN {
		res.Dialer = ep.outside.Dialer()
	}
	oc := tunnel.OEConfig{Resolver: res, Timeout: time.Duration(o.Timeout), ShuntTTL: time.Duration(o.ShuntTTL),
		Lifespan: time.Duration(o.Lifespan), ExtendedLifespan: time.Duration(o.ExtendedLifespan), IKELifetime: time.Duration(o.IKELifetime), Logger: ep.log.With("component", "oe"),
		Outside: ep.outside, ID: o.Identity}
	if o.Signer != nil {
		oc.Auth.Signer = o.Signer
	} else {
		oc.Auth.Null = true
	}
	validation := "resolver's AD bit"
	if o.Anchors != nil {
		validation = "own, from " + o.TrustAnchors
	}
	ep.log.Info("opportunistic encryption on", "resolver", o.Resolver, "dnssec", o.DNSSEC, "validation", validation, "auth", oc.Auth.Method())
	return tunnel.NewOpportunism(ep.eng, oc)
}

// newAutoVPN opens the trust store and prepares AutoVPN from [autovpn].
func (ep *endpoint) newAutoVPN(cfg *config.Config) (*tunnel.AutoVPN, error) {
	a := cfg.AutoVPN
	store, err := policy.OpenTrustStore(a.TrustStore)
	if err != nil {
		return nil, fmt.Errorf("autovpn.trust_store: %w", err)
	}
	store.UnverifiedTTL = time.Duration(a.UnverifiedTTL)
	store.Roots = a.Roots
	store.CRLs = a.CRLs
	ep.trust = store
	fallback := map[policy.TrustState]tunnel.Verdict{}
	for state, v := range a.Fallback {
		st := policy.TrustState(state)
		if state == "unknown" {
			st = ""
		}
		fallback[st] = tunnel.VerdictClear
		if v == "drop" {
			fallback[st] = tunnel.VerdictDrop
		}
	}
	av, err := tunnel.NewAutoVPN(ep.eng, tunnel.AutoVPNConfig{Protected: a.Protected, Cert: a.Cert,
		Signer: ike.Credential{Signer: a.Signer, Cert: a.Cert}, Contact: a.Contact, Store: store, SharedSecret: *a.SharedSecret,
		Fallback: fallback, Outside: ep.outside, Logger: ep.log.With("component", "autovpn")})
	if err != nil {
		return nil, err
	}
	ep.log.Info("AutoVPN on", "protected", a.Protected, "certificate", a.Cert.Subject.String(),
		"fingerprint", policy.Fingerprint(a.Cert.Raw)[:16], "trust_store", a.TrustStore)
	return av, nil
}

// startStub starts the DNS-triggered stub, if configured.
func (ep *endpoint) startStub(cfg *config.Config) error {
	o := cfg.OE
	if o.DNSListen == "" {
		return nil
	}
	stub := &dnsoe.Stub{Listen: o.DNSListen, Upstream: o.Resolver, Wait: time.Duration(o.DNSWait), Trigger: ep.oe.Trigger,
		Logger: ep.log.With("component", "dns-stub")}
	if cfg.Interface.Mode == config.ModeTUN {
		stub.Dialer = ep.outside.Dialer()
	}
	if err := stub.Start(); err != nil {
		return fmt.Errorf("opportunism.dns_listen: %w", err)
	}
	ep.closers = append(ep.closers, stub.Close)
	ep.log.Info("DNS-triggered stub listening", "addr", o.DNSListen, "upstream", o.Resolver, "wait", time.Duration(o.DNSWait))
	return nil
}

// initiatePeers starts IKE with the peers configured to start at once.
func (ep *endpoint) initiatePeers(peers []config.Peer) {
	for _, p := range peers {
		if p.Start == config.StartNow {
			if err := ep.ike.Initiate(p.Name); err != nil {
				ep.log.Error("initiating", "peer", p.Name, "err", err)
			}
		}
	}
}

// Close stops the endpoint (deleting its IKE SAs) and removes what it set
// up on the host.
func (ep *endpoint) Close() error {
	if ep.eng == nil {
		return errors.New("endpoint not started")
	}
	for _, f := range ep.closers {
		f()
	}
	if ep.oe != nil {
		ep.oe.Close()
	}
	if ep.av != nil {
		ep.av.Close()
	}
	if ep.ike != nil {
		ep.ike.Close()
	}
	return ep.eng.Close()
}
