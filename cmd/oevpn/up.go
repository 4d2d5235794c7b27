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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/tunnel"
)

// cmdUp runs an endpoint (oevpn up -c FILE) or, given a peer's name,
// initiates that configured peer on the running one (oevpn up PEER).
func cmdUp(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socketFlags(fs)
	fs.Bool("json", false, "")
	if rest, err := parseInterspersed(fs, args); err == nil && len(rest) > 0 {
		return cmdUpPeer(args, stdout, stderr)
	}
	fs = newFlags("up")
	path := fs.String("c", "", "configuration `file` (TOML) to run; with PEER, the running endpoint's, to find its socket")
	fs.String("s", "", "with PEER: the running endpoint's control `socket`")
	fs.Bool("json", false, "with PEER: print JSON")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *path == "" || len(rest) > 0 {
		return fmt.Errorf("%w: oevpn up -c FILE, or oevpn up [-s SOCKET | -c FILE] PEER", errUsage)
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
	sig, hup, stopSignals := daemonSignals()
	defer stopSignals()
	lock, err := lockInstance(cfg.Interface.Control, cfg.Interface.Name)
	if err != nil {
		return err
	}
	defer lock.Close() // after ep.Close: the host is clean before another may start
	log := newLogger(stderr, cfg.Interface.LogLevel, cfg.Interface.LogFormat)
	logSettings(cfg, log)
	ep, err := startEndpoint(cfg, cfg.Interface.StateDir, log)
	if err != nil {
		if cfg.Interface.Mode == config.ModeTUN && (errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM)) {
			return fmt.Errorf("%w\n%s: a TUN device needs CAP_NET_ADMIN (run as root, or with that capability); to run without privileges set interface.mode = %q", err, cfg.Path, config.ModeNetstack)
		}
		return err
	}
	if err := startProxies(ep, cfg, log); err != nil {
		ep.Close()
		return err
	}
	if err := ep.serveControl(cfg, gid); err != nil {
		ep.Close()
		return err
	}
	if err := ep.serveMetrics(cfg, log); err != nil {
		ep.Close()
		return err
	}
	ikePort, natt := ep.Engine().Ports()
	log.Info("endpoint up", "config", cfg.Path, "mode", cfg.Interface.Mode, "device", cfg.Interface.Name,
		"ike_port", ikePort, "natt_port", natt, "sas", len(cfg.SAs), "peers", len(cfg.Peers),
		"control", cfg.Interface.Control, "state_dir", cfg.Interface.StateDir)
	// After a burst (a flood), give the heap's free pages back.
	trimStop := make(chan struct{})
	defer close(trimStop)
	go tunnel.TrimAfterBursts(trimStop)
	notifyService("READY=1\nSTATUS=endpoint up")
	for {
		select {
		case <-hup:
			ep.reloadOnHUP(log)
		case s := <-sig:
			log.Info("shutting down", "signal", s.String())
			notifyService("STOPPING=1")
			return ep.Close()
		}
	}
}

// daemonSignals asks for the signals the endpoint handles, before anything
// is set up: SIGINT and SIGTERM stop it (sig); SIGHUP, which would kill it
// and leave its routing behind, reloads the configuration (hup); SIGPIPE, which Go
// turns into an exit when stdout or stderr is a closed pipe, is ignored:
// writes to the pipe fail (log/slog drops them) and the endpoint carries
// on. stop undoes it.
func daemonSignals() (sig, hup chan os.Signal, stop func()) {
	sig, hup = make(chan os.Signal, 1), make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	signal.Notify(hup, syscall.SIGHUP)
	signal.Ignore(syscall.SIGPIPE)
	return sig, hup, func() { signal.Stop(sig); signal.Stop(hup); signal.Reset(syscall.SIGPIPE) }
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

// logSettings logs what opportunism and AutoVPN run with.
func logSettings(cfg *config.Config, log *slog.Logger) {
	if o := cfg.OE; cfg.Policy.Enabled() {
		validation := "resolver's AD bit"
		if o.Anchors != nil {
			validation = "own, from " + o.TrustAnchors
		}
		auth := ike.Credential{Signer: o.Signer, Null: o.Signer == nil}
		log.Info("opportunistic encryption on", "resolver", o.Resolver, "dnssec", o.DNSSEC, "validation", validation, "auth", auth.Method())
	}
	if a := cfg.AutoVPN; a.Enabled() {
		log.Info("AutoVPN on", "protected", a.Protected, "certificate", a.Cert.Subject.String(),
			"fingerprint", policy.Fingerprint(a.Cert.Raw)[:16], "trust_store", a.TrustStore)
	}
}

// newLogger returns the daemon's logger: text (key=value) or, with format
// "json", one JSON object a line.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(strings.ToUpper(level)))
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// endpoint is the running node and what the command adds to it: the
// control socket, and the configuration it runs (for reload).
type endpoint struct {
	*tunnel.Node
	running running // reload.go
}

// startEndpoint starts the node that cfg describes; stateDir keeps the
// static SAs' sequence numbers ("" keeps them in memory, only for keys
// made at random for this run, as in the demo).
func startEndpoint(cfg *config.Config, stateDir string, log *slog.Logger) (*endpoint, error) {
	nc, err := nodeConfig(cfg, stateDir)
	if err != nil {
		return nil, err
	}
	nc.Logger = log
	n, err := tunnel.NewNode(nc)
	if err != nil {
		return nil, err
	}
	return &endpoint{Node: n, running: running{cfg: cfg}}, nil
}

// nodeConfig translates the configuration file into the node's
// configuration.
func nodeConfig(cfg *config.Config, stateDir string) (tunnel.NodeConfig, error) {
	in := cfg.Interface
	nc := tunnel.NodeConfig{Netstack: in.Mode == config.ModeNetstack, Name: in.Name, MTU: in.MTU, Addresses: in.Addresses, DNS: cfg.Proxy.DNS,
		IKEPort: uint16(*in.IKEPort), NATTPort: uint16(*in.NATTPort), Mark: uint32(*in.Fwmark), Table: in.Table, Outside: in.Outside}
	if in.Outside != "" {
		if _, err := net.InterfaceByName(in.Outside); err != nil {
			return nc, cfg.KeyError("interface.outside", fmt.Errorf("no interface %q on this host", in.Outside))
		}
	}
	nc.SAs = staticSAs(cfg.SAs)
	if stateDir != "" {
		// Outbound sequence numbers, hence IVs, live in the state
		// directory, so that a restart under the same keys never uses
		// one twice.
		nc.Sequences = func(key []byte) (esp.SeqStore, error) { return newSeqFile(stateDir, key) }
	}
	var err error
	if nc.Peers, err = peersConfig(cfg, nil); err != nil {
		return nc, err
	}
	nc.Policy = policyConfig(cfg)
	if cfg.Policy.Enabled() {
		nc.Opportunism = opportunismConfig(cfg)
	}
	if cfg.AutoVPN.Enabled() {
		var err error
		if nc.AutoVPN, err = autoVPNConfig(cfg); err != nil {
			return nc, err
		}
		nc.AutoVPNHost = cfg.AutoVPN.Mode == "host"
	}
	return nc, nil
}

// peersConfig translates the [[peer]]s. A peer without local_id that
// running has (by name, at the same address) keeps the identity it runs
// with, the default found at start: a reload does not change it.
func peersConfig(cfg *config.Config, running []tunnel.Peer) ([]tunnel.Peer, error) {
	var out []tunnel.Peer
	for i, p := range cfg.Peers {
		pc := peerConfig(p)
		if pc.LocalID.Type == 0 && (p.Auth == config.AuthPSK || p.Auth == config.AuthPubkey) {
			if j := slices.IndexFunc(running, func(r tunnel.Peer) bool { return r.IKE.Name == p.Name && r.IKE.Addr == p.Address }); j >= 0 {
				pc.LocalID = running[j].IKE.LocalID
			} else {
				// As strongSwan: our identity is the address we reach
				// the peer from (routing at start, before our own
				// routes).
				src, err := localAddressFor(p.Address)
				if err != nil {
					return nil, cfg.KeyError(fmt.Sprintf("peer[%d].local_id", i),
						fmt.Errorf("not set, and our address toward %v, its default, is unknown (%v): set local_id", p.Address, err))
				}
				pc.LocalID = ike.IdentityOf(src)
			}
		}
		out = append(out, tunnel.Peer{IKE: pc, Start: startOf(p.Start)})
	}
	return out, nil
}

// policyConfig translates [policy].
func policyConfig(cfg *config.Config) tunnel.Policy {
	pol := cfg.Policy
	return tunnel.Policy{Block: pol.Block, Clear: pol.Clear, Private: pol.Private,
		PrivateOrClear: pol.PrivateOrClear, ClearOrPrivate: pol.ClearOrPrivate, Exceptions: pol.Rules}
}

// localAddressFor returns the address this host sends from to reach a, by
// its routing now: a UDP socket connected to a (nothing is sent).
func localAddressFor(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return netip.Addr{}, errors.New("no peer address")
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 500)))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// staticSAs returns the configured static SA pairs.
func staticSAs(sas []config.SA) []tunnel.PairConfig {
	var out []tunnel.PairConfig
	for _, sa := range sas {
		out = append(out, tunnel.PairConfig{
			Peer:   sa.Peer,
			Local:  policy.Selectors(sa.Local),
			Remote: policy.Selectors(sa.Remote),
			Out:    esp.Config{Transform: sa.Transform, SPI: sa.SPIOut, Key: sa.KeyOut, ESN: sa.ESN},
			In:     esp.Config{Transform: sa.Transform, SPI: sa.SPIIn, Key: sa.KeyIn, ESN: sa.ESN, ReplayWindow: sa.ReplayWindow},
		})
	}
	return out
}

// peerConfig translates one [[peer]].
func peerConfig(p config.Peer) *ike.PeerConfig {
	pc := &ike.PeerConfig{Name: p.Name, Addr: p.Address, IKEPort: uint16(p.IKEPort), NATTPort: uint16(p.NATTPort),
		LocalID: p.LocalIdentity, RemoteID: p.RemoteIdentity, IKEProposals: p.IKE, ESPProposals: p.ESP,
		LocalTS: policy.Selectors(p.Local), RemoteTS: policy.Selectors(p.Remote),
		IKELifetime: time.Duration(p.IKELifetime), ChildLifetime: time.Duration(p.ChildLifetime), DPD: time.Duration(p.DPD),
		RetransmitBase: time.Duration(p.RetransmitBase), RetransmitTries: p.RetransmitTries, FragmentSize: p.FragmentSize}
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
	return pc
}

// startOf translates a peer's start key.
func startOf(s string) tunnel.Start {
	switch s {
	case config.StartNow:
		return tunnel.StartNow
	case config.StartNever:
		return tunnel.StartNever
	}
	return tunnel.StartOnTraffic
}

// opportunismConfig translates [opportunism].
func opportunismConfig(cfg *config.Config) *tunnel.OEConfig {
	o := cfg.OE
	oc := &tunnel.OEConfig{Resolver: &dnsoe.Resolver{Server: o.Resolver, Mode: o.Mode, Timeout: time.Duration(o.Timeout), Anchors: o.Anchors},
		Timeout: time.Duration(o.Timeout), ShuntTTL: time.Duration(o.ShuntTTL), Lifespan: time.Duration(o.Lifespan),
		ExtendedLifespan: time.Duration(o.ExtendedLifespan), IKELifetime: time.Duration(o.IKELifetime), ID: o.Identity,
		DNSListen: o.DNSListen, DNSWait: time.Duration(o.DNSWait)}
	if o.Signer != nil {
		oc.Auth.Signer = o.Signer
	} else {
		oc.Auth.Null = true
	}
	return oc
}

// autoVPNConfig opens the trust store and translates [autovpn].
func autoVPNConfig(cfg *config.Config) (*tunnel.AutoVPNConfig, error) {
	a := cfg.AutoVPN
	store, err := policy.OpenTrustStore(a.TrustStore)
	if err != nil {
		return nil, fmt.Errorf("autovpn.trust_store: %w", err)
	}
	store.UnverifiedTTL = time.Duration(a.UnverifiedTTL)
	store.Roots = a.Roots
	store.CRLs = a.CRLs
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
	return &tunnel.AutoVPNConfig{Protected: a.Protected, Cert: a.Cert, Signer: ike.Credential{Signer: a.Signer, Cert: a.Cert},
		Contact: a.Contact, Store: store, SharedSecret: *a.SharedSecret, Fallback: fallback}, nil
}
