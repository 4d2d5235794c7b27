package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	conn "github.com/oevpn/oevpn/internal/wgconn"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
)

// NodeConfig describes one oevpn endpoint as plain Go values: the command
// builds it from the TOML file, a program embedding oevpn fills it in
// directly. NewNode reads it once; later changes have no effect.
type NodeConfig struct {
	// Netstack selects a userspace network stack (gVisor) as the device
	// instead of an OS TUN: no privileges, no host routes.
	Netstack bool
	// Name is the OS TUN device's name (TUN mode).
	Name string
	// MTU is the device's MTU.
	MTU int
	// Addresses are the device's own addresses (required in netstack
	// mode, optional in host mode).
	Addresses []netip.Prefix
	// IKEPort and NATTPort are the UDP ports to listen on; 0 picks a
	// free port.
	IKEPort, NATTPort uint16
	// Mark, Table and Outside say how oevpn's own packets leave the host
	// (TUN mode; see OSConfig and Outside). An empty Outside, off Linux,
	// means the interface of the default route at start.
	Mark    uint32
	Table   int
	Outside string

	// SAs are statically keyed SA pairs, installed at start.
	SAs []PairConfig
	// Sequences, if set, gives the outbound direction of each static SA
	// that has no Sequence store one, from its key: sequence numbers,
	// hence IVs, must survive a restart under the same keys. It is asked
	// after the device exists. Nil keeps them in memory, which is only
	// right for keys made for this run.
	Sequences func(key []byte) (esp.SeqStore, error)
	// Peers are the configured IKEv2 peers. Nothing fills in a PSK
	// peer's LocalID: leave it empty and the peer is sent the null
	// identity, which it refuses; `oevpn up` sets our address toward the
	// peer, as strongSwan does.
	Peers []Peer
	// Policy classifies destinations (opportunism, block, clear).
	Policy Policy
	// Opportunism, if set and Policy has an opportunistic class, turns on
	// opportunistic encryption. Its Logger and Outside are filled in, and
	// in TUN mode its resolver's Dialer, if nil.
	Opportunism *OEConfig
	// AutoVPN, if set with Protected prefixes, turns on AutoVPN. Its
	// Logger and Outside are filled in.
	AutoVPN *AutoVPNConfig
	// AutoVPNHost is set when the protected addresses are this host's own
	// (AutoVPN host mode); otherwise the node is a gateway for them.
	AutoVPNHost bool

	// DNS, if set, is the DNS server that LookupNetIP (and so the node's
	// dialer) asks, reached through the node's own stack: e.g. a peer's
	// server behind the tunnel.
	DNS netip.AddrPort

	// Bind, if set, makes the outer UDP transport of one port (e.g. an
	// in-memory network); nil means the host's UDP sockets.
	Bind func() conn.Bind
	// ClearDial, if set, makes the host-side connections of flows that
	// leave in the clear in netstack mode; nil means the host's sockets.
	ClearDial DialFunc

	// Logger receives the node's log; nil discards it.
	Logger *slog.Logger

	// engineConfig and ikeConfig, if set, adjust the engine's and the IKE
	// daemon's configuration before they start: the tests' knobs that the
	// file does not have (a recording clear path, COOKIEs always, another
	// authorizer, a tap on OnChange).
	engineConfig func(*Config)
	ikeConfig    func(*ike.Config)
}

// Peer is a configured IKEv2 peer and when to bring it up.
type Peer struct {
	IKE   *ike.PeerConfig
	Start Start
}

// Start says when a configured peer is brought up.
type Start uint8

const (
	// StartOnTraffic negotiates when the first packet for the peer's
	// selectors arrives (the default).
	StartOnTraffic Start = iota
	// StartNow initiates at once and again whenever the IKE SA is lost.
	StartNow
	// StartNever only responds.
	StartNever
)

// Policy is the classification of destinations: the prefixes of each
// class and the exceptions by protocol and port.
type Policy struct {
	Block, Clear, Private, PrivateOrClear, ClearOrPrivate []netip.Prefix
	Exceptions                                            []policy.Exception
}

// opportunistic reports whether any class makes the node initiate or
// respond opportunistically.
func (p *Policy) opportunistic() bool {
	return len(p.Private)+len(p.PrivateOrClear)+len(p.ClearOrPrivate) > 0
}

// Node is one running oevpn endpoint: the device, the datapath engine, the
// IKE daemon, opportunism and AutoVPN, assembled from one NodeConfig. It
// routes what the datapath hands to the control plane (IKE messages,
// acquires, SA events, unknown SPIs) and fans the daemon's changes out to
// opportunism and AutoVPN.
type Node struct {
	cfg     NodeConfig
	log     *slog.Logger
	eng     *Engine
	ike     *ike.Daemon  // nil without peers, opportunism or AutoVPN
	oe      *Opportunism // nil without opportunistic classes
	av      *AutoVPN     // nil without AutoVPN
	net     *Netstack    // netstack mode only
	dev     *OSDevice    // TUN mode only
	outside Outside      // how our own packets leave, TUN mode only
	clear   string       // "raw", "forwarder" or "none"
	closers []func()     // run first by Close

	activity activityWatch        // when SA pairs last carried packets
	statusMu sync.Mutex           // guards errors
	errors   map[string]peerError // configured peers' last errors
	events   events               // IKE SAs established and failed

	// Reload (node_reload.go): reloadMu serializes it and guards cfg's
	// Peers and Policy, and routed; peers are the configured peers and
	// authz their policy, read by the other goroutines.
	reloadMu sync.Mutex
	peers    atomic.Pointer[[]Peer]
	authz    atomic.Pointer[policy.Peers]
	routed   map[netip.Prefix]bool // routed into the device, once Reload needs it
}

// NewNode creates the device, starts the datapath, installs the static SAs
// and starts IKE, opportunism and AutoVPN as configured, then initiates
// the peers that start at once. On error nothing is left behind.
func NewNode(cfg NodeConfig) (*Node, error) {
	n := &Node{cfg: cfg, log: cfg.Logger, clear: "none"}
	peers := clonePeers(cfg.Peers)
	n.peers.Store(&peers)
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	classes, err := n.newClasses()
	if err != nil {
		return nil, err
	}
	if err := n.startEngine(); err != nil {
		return nil, err
	}
	n.eng.SetClasses(classes)
	if err := n.installSAs(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.startIKE(); err != nil {
		n.Close()
		return nil, err
	}
	n.closers = append(n.closers, n.watchActivity())
	n.initiatePeers()
	return n, nil
}

// newClasses builds the policy classes, with the node's own addresses,
// which are never opportunistic.
func (n *Node) newClasses() (*policy.Classes, error) { return n.classesOf(n.cfg.Policy) }

// classesOf builds the classes of p, with the node's own addresses.
func (n *Node) classesOf(p Policy) (*policy.Classes, error) {
	byClass := map[policy.Class][]netip.Prefix{
		policy.ClassBlock: p.Block, policy.ClassClear: p.Clear, policy.ClassPrivate: p.Private,
		policy.ClassPrivateOrClear: p.PrivateOrClear, policy.ClassClearOrPrivate: p.ClearOrPrivate,
	}
	c, err := policy.NewClasses(byClass, p.Exceptions, nil)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return c.WithOwn(n.ownAddresses()), nil
}

// startEngine creates the device and starts the datapath.
func (n *Node) startEngine() error {
	cfg := n.cfg
	tcfg := Config{IKEPort: cfg.IKEPort, NATTPort: cfg.NATTPort, NewBind: cfg.Bind, Logger: n.log}
	if cfg.Netstack {
		var addrs []netip.Addr
		for _, p := range cfg.Addresses {
			addrs = append(addrs, p.Addr())
		}
		dev, tnet, err := NewNetstack(addrs, cfg.MTU)
		if err != nil {
			return err
		}
		tcfg.Device, n.net = dev, tnet
		// No raw sockets here: flows that leave in the clear are
		// terminated and re-originated from host sockets.
		tcfg.ForwardDial = cfg.ClearDial
		if tcfg.ForwardDial == nil {
			tcfg.ForwardDial = (&net.Dialer{}).DialContext
		}
		n.clear = "forwarder"
	} else {
		n.outside = n.findOutside()
		av := cfg.AutoVPN
		var protected []netip.Prefix
		if av != nil {
			protected = av.Protected
		}
		dev, err := CreateOSTUN(OSConfig{Name: cfg.Name, MTU: cfg.MTU, Addresses: cfg.Addresses,
			Routes: n.routes(), Mark: cfg.Mark, Table: cfg.Table, Protected: protected,
			ProtectedHost: cfg.AutoVPNHost, Logger: n.log})
		if err != nil {
			return err
		}
		tcfg.Device, tcfg.Outside, tcfg.Bypass, n.dev = dev, n.outside, dev, dev
		if cfg.Policy.opportunistic() || len(cfg.Policy.Clear) > 0 || n.autoVPN() {
			if err := n.openClearPath(&tcfg); err != nil {
				dev.Close()
				return err
			}
		}
	}
	if cfg.engineConfig != nil {
		cfg.engineConfig(&tcfg)
	}
	eng, err := New(tcfg)
	if err != nil {
		tcfg.Device.Close()
		return err
	}
	n.eng = eng
	return nil
}

// autoVPN reports whether AutoVPN is configured.
func (n *Node) autoVPN() bool { return n.cfg.AutoVPN != nil && len(n.cfg.AutoVPN.Protected) > 0 }

// openClearPath sets up the clear path of an OS TUN device: raw sockets
// where we may open them, else the forwarder, which terminates flows and
// re-originates them from sockets that leave by the outside. Without an
// outside (no mark, no interface) there is none: what we sent would come
// straight back into the TUN.
func (n *Node) openClearPath(tcfg *Config) error {
	if n.outside == (Outside{}) {
		n.log.Warn("no clear path: with no fwmark and no outside interface, packets sent in the clear would come back into the TUN; traffic that policy sends in the clear is dropped")
		return nil
	}
	clear, err := NewClearPath(n.outside)
	switch {
	case err == nil:
		tcfg.Clear, n.clear = clear, "raw"
	case errors.Is(err, ErrNoClearPath) || errors.Is(err, os.ErrPermission):
		n.log.Info("clear path: forwarding TCP and UDP flows from host sockets", "reason", err)
		tcfg.ForwardDial, n.clear = n.outside.Dialer().DialContext, "forwarder"
		// A bypass route would take the rest of a flow that the
		// forwarder terminated around it.
		tcfg.Bypass = nil
	default:
		return err
	}
	return nil
}

// findOutside returns how the node's own packets leave the host. On Linux
// the fwmark keeps them out of the TUN, and Outside, if set, also binds
// them to that interface. Elsewhere there are no marks: they are bound to
// the outside interface, by default the one of the default route when the
// node starts (before anything is routed into the TUN).
func (n *Node) findOutside() Outside {
	o := Outside{Mark: n.cfg.Mark, Interface: n.cfg.Outside}
	if o.Interface != "" || runtime.GOOS == "linux" {
		return o
	}
	name, err := DetectOutside(n.cfg.Name)
	if err != nil {
		n.log.Warn("oevpn's own packets follow the routing table: do not route their destinations into the TUN, or set interface.outside", "err", err)
		return o
	}
	n.log.Info("outside interface", "name", name)
	o.Interface = name
	return o
}

// ownAddresses returns the node's own addresses (the host's, in TUN mode,
// and the configured ones), which are never opportunistic.
func (n *Node) ownAddresses() []netip.Addr {
	var out []netip.Addr
	for _, p := range n.cfg.Addresses {
		out = append(out, p.Addr())
	}
	if !n.cfg.Netstack {
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

// routes returns the prefixes to route into the TUN: every remote
// selector, with the local selector's address of the same family as source
// when it is a single address (host-to-host), and every classified prefix
// but the clear ones.
func (n *Node) routes() []Route { return n.routesOf(n.cfg) }

// routesOf is routes for the configuration cfg.
func (n *Node) routesOf(cfg NodeConfig) []Route {
	var routes []Route
	// Blocked and opportunistic destinations are routed to oevpn, which
	// drops, encrypts or re-sends in the clear (clear path) by class, so
	// that nothing leaks around it.
	pol := cfg.Policy
	for _, ps := range [][]netip.Prefix{pol.Block, pol.Private, pol.PrivateOrClear, pol.ClearOrPrivate} {
		for _, p := range ps {
			// The source the host would use without oevpn: the clear
			// path sends with it, and host-to-host SAs are made for it.
			src := n.outside.SourceFor(p.Masked().Addr())
			routes = append(routes, Route{Prefix: p.Masked(), Src: src})
		}
	}
	add := func(local, remote policy.Selectors) {
		for _, r := range remote {
			var src netip.Addr
			for _, l := range local {
				if a, ok := l.Single(); ok && a.Is4() == r.Start.Is4() {
					src = a
					break
				}
			}
			for _, p := range selectorPrefixes(r) {
				routes = append(routes, Route{Prefix: p, Src: src})
			}
		}
	}
	for _, sa := range cfg.SAs {
		add(sa.Local, sa.Remote)
	}
	for _, p := range cfg.Peers {
		add(p.IKE.LocalTS, p.IKE.RemoteTS)
	}
	return routes
}

// selectorPrefixes returns the fewest prefixes that make up the address
// range of s.
func selectorPrefixes(s policy.Selector) []netip.Prefix {
	var out []netip.Prefix
	rangePrefixes(s, func(k addrKey, n int) { out = append(out, k.prefix(n, s.Start.Unmap().Is4())) })
	return out
}

// prefix returns k as the prefix of length n, in the family of an IPv4
// address if is4.
func (k addrKey) prefix(n int, is4 bool) netip.Prefix {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	if is4 {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(b[:4])), n)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), n)
}

// installSAs installs the statically keyed SA pairs.
func (n *Node) installSAs() error {
	for i, sa := range n.cfg.SAs {
		if sa.Out.Sequence == nil && n.cfg.Sequences != nil {
			seq, err := n.cfg.Sequences(sa.Out.Key)
			if err != nil {
				return fmt.Errorf("sa[%d].key_out: %w", i, err)
			}
			sa.Out.Sequence = seq
		}
		if _, err := n.eng.Install(sa); err != nil {
			return fmt.Errorf("sa[%d] (peer %v): %w", i, sa.Peer, err)
		}
	}
	return nil
}

// startIKE starts the IKE daemon for the configured peers and, with
// opportunistic classes or AutoVPN, opportunism and AutoVPN.
func (n *Node) startIKE() error {
	cfg := n.cfg
	if len(cfg.Peers) == 0 && !cfg.Policy.opportunistic() && !n.autoVPN() {
		return nil
	}
	var pcs []*ike.PeerConfig
	n.authz.Store(peersPolicy(cfg.Peers))
	for _, p := range cfg.Peers {
		p.IKE.AutoStart = p.Start == StartNow
		pcs = append(pcs, p.IKE)
	}
	if cfg.Policy.opportunistic() && cfg.Opportunism != nil {
		n.oe = n.newOpportunism()
	}
	if n.autoVPN() {
		av, err := n.newAutoVPN()
		if err != nil {
			return err
		}
		n.av = av
	}
	icfg := ike.Config{Datapath: n.eng, Peers: pcs, Logger: n.log.With("component", "ike"), Authorizer: currentPeers{&n.authz},
		OnChange: n.onChange}
	if n.oe != nil || n.av != nil {
		icfg.Responder = n.responder
	}
	if n.av != nil {
		icfg.ClaimAutoVPNNonce = n.av.ClaimNonce
	}
	if cfg.ikeConfig != nil {
		cfg.ikeConfig(&icfg)
	}
	d, err := ike.New(icfg)
	if err != nil {
		return err
	}
	n.ike = d
	if n.av != nil {
		n.av.Start(d)
	}
	if n.oe != nil {
		n.oe.Start(d)
		if err := n.startStub(); err != nil {
			return err
		}
	}
	for _, p := range cfg.Peers {
		// A start peer is trapped too: while its IKE SA is down (the
		// peer restarted, or is not there yet) its traffic is held and
		// renegotiates, instead of finding no route into the tunnel.
		if p.Start != StartNever {
			n.eng.SetTrap(p.IKE.Name, p.IKE.LocalTS, p.IKE.RemoteTS)
		}
	}
	n.eng.SetControl(&controlPlane{ike: d, oe: n.oe, av: n.av})
	return nil
}

// onChange is told of every IKE SA that comes up or goes down, and fans
// it out.
func (n *Node) onChange(peer string, up bool, err error) {
	n.noteChange(peer, up, err)
	if !up && err != nil {
		n.eng.AcquireFailed(peer) // drop held packets; the next one retries
	}
	if n.oe != nil {
		n.oe.OnChange(peer, up, err)
	}
	if n.av != nil {
		n.av.OnChange(peer, up, err)
	}
}

// peerAuthorizer lets the policy decide about the peers IKE authenticated.
type peerAuthorizer struct{ *policy.Peers }

func (a peerAuthorizer) AuthorizePeer(id ike.PeerIdentity) error {
	return a.Peers.AuthorizePeer(policy.PeerIdentity(id))
}

// responder finds the configuration for an IKE_SA_INIT from a peer that
// is not configured: AutoVPN's, when it carries an AutoVPN nonce,
// opportunism's otherwise.
func (n *Node) responder(from netip.AddrPort, local netip.Addr, autovpnNonce []byte) *ike.PeerConfig {
	switch {
	case autovpnNonce != nil && n.av != nil:
		return n.av.Responder(from, autovpnNonce)
	case autovpnNonce == nil && n.oe != nil:
		return n.oe.Responder(from, local)
	}
	return nil
}

// newOpportunism prepares opportunistic encryption.
func (n *Node) newOpportunism() *Opportunism {
	oc := *n.cfg.Opportunism
	oc.Logger, oc.Outside = n.log.With("component", "oe"), n.outside
	if n.cfg.Netstack {
		// Our traffic starts on the stack: its address, not the host's
		// route to dst, is the source, hence the traffic selector.
		oc.Source = n.stackSource
	}
	if !n.cfg.Netstack && oc.Resolver != nil && oc.Resolver.Dialer == nil {
		// Queries leave by the outside, not into the TUN.
		oc.Resolver.Dialer = n.outside.Dialer()
	}
	return NewOpportunism(n.eng, oc)
}

// stackSource is the stack's address of dst's family (netstack mode).
func (n *Node) stackSource(dst netip.Addr) netip.Addr {
	for _, p := range n.cfg.Addresses {
		if a := p.Addr().Unmap(); a.Is4() == dst.Unmap().Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// newAutoVPN prepares AutoVPN.
func (n *Node) newAutoVPN() (*AutoVPN, error) {
	ac := *n.cfg.AutoVPN
	ac.Logger, ac.Outside = n.log.With("component", "autovpn"), n.outside
	return NewAutoVPN(n.eng, ac)
}

// startStub starts the DNS-triggered stub, if configured.
func (n *Node) startStub() error {
	o := n.cfg.Opportunism
	if o.DNSListen == "" {
		return nil
	}
	stub := &dnsoe.Stub{Listen: o.DNSListen, Upstream: o.Resolver.Server, Wait: o.DNSWait, Trigger: n.oe.Trigger,
		Logger: n.log.With("component", "dns-stub")}
	if !n.cfg.Netstack {
		stub.Dialer = n.outside.Dialer()
	}
	if err := stub.Start(); err != nil {
		return fmt.Errorf("opportunism.dns_listen: %w", err)
	}
	n.closers = append(n.closers, stub.Close)
	n.log.Info("DNS-triggered stub listening", "addr", o.DNSListen, "upstream", o.Resolver.Server, "wait", o.DNSWait)
	return nil
}

// initiatePeers starts IKE with the peers configured to start at once.
func (n *Node) initiatePeers() {
	for _, p := range n.configured() {
		if p.Start == StartNow {
			if err := n.ike.Initiate(p.IKE.Name); err != nil {
				n.log.Error("initiating", "peer", p.IKE.Name, "err", err)
			}
		}
	}
}

// ErrNoPeer is returned by Up for a name that is no configured peer.
var ErrNoPeer = errors.New("tunnel: no configured peer of that name")

// Up initiates an IKE SA with the configured peer name, unless it has one
// (up or being negotiated).
func (n *Node) Up(name string) error {
	if n.ike == nil || !slices.ContainsFunc(n.configured(), func(p Peer) bool { return p.IKE.Name == name }) {
		return fmt.Errorf("%w: %q", ErrNoPeer, name)
	}
	return n.ike.Initiate(name)
}

// OnClose adds f to what Close runs first (e.g. the control socket).
func (n *Node) OnClose(f func()) { n.closers = append(n.closers, f) }

// Close stops the node (deleting its IKE SAs) and removes what it set up
// on the host.
func (n *Node) Close() error {
	if n.eng == nil {
		return errors.New("tunnel: node not started")
	}
	for _, f := range n.closers {
		f()
	}
	if n.oe != nil {
		n.oe.Close()
	}
	if n.av != nil {
		n.av.Close()
	}
	if n.ike != nil {
		n.ike.Close()
	}
	return n.eng.Close()
}

// Engine returns the node's datapath.
func (n *Node) Engine() *Engine { return n.eng }

// IKE returns the node's IKE daemon, nil when it runs none.
func (n *Node) IKE() *ike.Daemon { return n.ike }

// AutoVPN returns the node's AutoVPN, nil when it is off.
func (n *Node) AutoVPN() *AutoVPN { return n.av }

// Trust returns AutoVPN's trust store, nil when AutoVPN is off.
func (n *Node) Trust() *policy.TrustStore {
	if n.av == nil {
		return nil
	}
	return n.cfg.AutoVPN.Store
}

// Net returns the userspace network stack (netstack mode), nil on a TUN.
func (n *Node) Net() *Netstack { return n.net }

// Device returns the OS TUN device (TUN mode), nil in netstack mode.
func (n *Node) Device() *OSDevice { return n.dev }

// Outside returns how the node's own packets leave the host.
func (n *Node) Outside() Outside { return n.outside }

// ClearPath names how packets that leave in the clear are sent: "raw"
// sockets, the "forwarder" (flows re-originated from host sockets) or
// "none".
func (n *Node) ClearPath() string { return n.clear }

// Gateway reports whether the node is an AutoVPN gateway: the traffic it
// protects is its hosts', which the kernel routes by source.
func (n *Node) Gateway() bool { return n.autoVPN() && !n.cfg.AutoVPNHost }
