package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/internal/dnszone"
	"github.com/oevpn/oevpn/internal/memnet"
	conn "github.com/oevpn/oevpn/internal/wgconn"
	"github.com/oevpn/oevpn/probe"
	"github.com/oevpn/oevpn/tunnel"
)

// The demo's world: two userspace nodes on an in-memory outer network
// whose outer addresses are their inner ones (as opportunistic hosts'
// are), and an authoritative DNS server on loopback. Its addresses are
// documentation addresses (RFC 5737); nothing is sent to them outside this
// process.
var (
	demoA       = netip.MustParseAddr("198.51.100.1")   // initiates; publishes nothing (AUTH_NULL)
	demoB       = netip.MustParseAddr("198.51.100.2")   // publishes its key
	demoClear   = netip.MustParseAddr("198.51.100.9")   // publishes nothing: reached in the clear
	demoPrivate = netip.MustParseAddr("198.51.100.200") // class private, publishes nothing
	// Policy: the lower half of the /24 is private-or-clear, the upper
	// half private.
	demoPrivOrClear = netip.MustParsePrefix("198.51.100.0/25")
	demoPrivPrefix  = netip.MustParsePrefix("198.51.100.128/25")
)

const (
	demoAnchorZone = "51.198.in-addr.arpa."     // the trust anchor's zone (NSEC3, opt-out)
	demoRevZone    = "100.51.198.in-addr.arpa." // where B publishes (NSEC)
	demoFwdZone    = "demo.test."               // names of the demo's hosts
	demoWebName    = "web.demo.test"            // B
)

// marker is written into every flow the demo sends through ESP; the wire
// tap must never see it.
const marker = "oevpn-demo-plaintext-marker"

// demoPart is one part of the demo.
type demoPart struct {
	letter      byte
	name, title string
	run         func(d *demoWorld, out io.Writer) error
}

var demoParts = []demoPart{
	{'a', "oe", "opportunistic encryption discovered in DNSSEC-signed DNS", (*demoWorld).partOE},
	{'b', "policy", "no key published: in the clear under private-or-clear, refused under private", (*demoWorld).partPolicy},
	{'c', "autovpn", "two AutoVPN gateways meet through the probe handshake, trusted by leap of faith", (*demoWorld).partAutoVPN},
	{'d', "proxy", "an HTTP fetch by name through the SOCKS5 proxy", (*demoWorld).partProxy},
	{'e', "bulk", "bulk TCP throughput A→B through ESP", (*demoWorld).partBulk},
	{'f', "status", "oevpn status of A: a configured peer, an opportunistic peer, shunts and an AutoVPN peer", (*demoWorld).partStatus},
}

// demoHelp is the demo's description, with its parts, for commandHelp.
func demoHelp() string {
	var b strings.Builder
	b.WriteString(`oevpn demo [-part NAME[,NAME]] [-size MiB] [-json] [-v]

Show oevpn at work between nodes in this process. They run unprivileged,
on an in-memory outer network whose every datagram a wire tap sees; the
demo ends with "demo OK". With -json, the status part prints the status
as oevpn status --json does. Parts:
`)
	for _, p := range demoParts {
		fmt.Fprintf(&b, "  (%c) %-8s %s\n", p.letter, p.name, p.title)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func cmdDemo(args []string, stdout io.Writer) error {
	fs := newFlags("demo")
	part := fs.String("part", "", "run only these `parts` (comma-separated names)")
	size := fs.Int("size", 64, "`MiB` to send in the bulk part")
	asJSON := fs.Bool("json", false, "print the status part's status as JSON")
	verbose := fs.Bool("v", false, "log the nodes' events")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	run := demoParts
	if *part != "" {
		run = nil
		for _, name := range strings.Split(*part, ",") {
			i := -1
			for j, p := range demoParts {
				if p.name == strings.TrimSpace(name) {
					i = j
				}
			}
			if i < 0 {
				return fmt.Errorf("demo: no part %q (see oevpn demo -h)", name)
			}
			run = append(run, demoParts[i])
		}
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelInfo
	}
	start := time.Now()
	d, err := newDemoWorld(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), *size)
	if err != nil {
		return err
	}
	defer d.close()
	d.json = *asJSON
	fmt.Fprintf(stdout, "oevpn demo: userspace nodes in this process on an in-memory outer network, watched by a wire tap\n")
	fmt.Fprintf(stdout, "  A  %-15v private-or-clear %v, private %v; publishes nothing (AUTH_NULL)\n", demoA, demoPrivOrClear, demoPrivPrefix)
	fmt.Fprintf(stdout, "  B  %-15v publishes its Ed25519 key as IPSECKEY in %s\n", demoB, demoRevZone)
	fmt.Fprintf(stdout, "  DNS %s on loopback: %s (trust anchor) → %s (signed), %s\n", d.dns.Addr, demoAnchorZone, demoRevZone, demoFwdZone)
	for _, p := range run {
		fmt.Fprintf(stdout, "\n(%c) %s [-part %s]\n", p.letter, p.title, p.name)
		if err := p.run(d, stdout); err != nil {
			return fmt.Errorf("demo part %s: %w", p.name, err)
		}
	}
	if err := d.tap.report(stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ndemo OK (%v)\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// demoWorld is what the parts share: the outer network and its tap, the
// DNS server, nodes A and B, and the AutoVPN gateways G1 and G2 (started
// on first use).
type demoWorld struct {
	log    *slog.Logger
	size   int
	json   bool // the status part prints JSON
	mn     *memnet.Network
	tap    *wireTap
	dns    *dnszone.Server
	anchor *dnsoe.TrustAnchors
	ds     string // the anchor, printed
	bPriv  ed25519.PrivateKey
	rA     *dnsoe.Resolver
	a, b   *tunnel.Node
	clear  *clearHost
	closer []func()

	psk    []byte // of A's configured peer, G1
	g1, g2 *avGateway
	avDir  string                    // the trust stores' directory
	avMu   sync.Mutex                // guards front
	front  map[netip.Addr]*avGateway // the gateway in front of a host, which takes ICMP to it
}

func newDemoWorld(log *slog.Logger, size int) (*demoWorld, error) {
	d := &demoWorld{log: log, size: size, mn: &memnet.Network{}, tap: &wireTap{}, clear: &clearHost{addr: demoClear}}
	d.mn.SetTap(d.tap.see)
	var err error
	if _, d.bPriv, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	d.psk = make([]byte, 32)
	rand.Read(d.psk)
	if err := d.startDNS(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *demoWorld) close() {
	for i := len(d.closer) - 1; i >= 0; i-- {
		d.closer[i]()
	}
}

// startDNS publishes B's key in a signed reverse zone, delegated from the
// zone of the trust anchor, and the hosts' names, and serves them on
// loopback.
func (d *demoWorld) startDNS() error {
	top, err := dnszone.New(demoAnchorZone, true)
	if err != nil {
		return err
	}
	top.NSEC3, top.OptOut = true, true
	rev, err := dnszone.New(demoRevZone, true)
	if err != nil {
		return err
	}
	lines, err := dnsoe.Records(demoB.String(), "", 10, d.bPriv.Public())
	if err != nil {
		return err
	}
	if err := rev.Add(lines[0]); err != nil {
		return err
	}
	top.Delegate(rev)
	fwd, err := dnszone.New(demoFwdZone, true)
	if err != nil {
		return err
	}
	for _, l := range []string{demoWebName + ". 300 IN A " + demoB.String(), "plain.demo.test. 300 IN A " + demoClear.String(),
		"secret.demo.test. 300 IN A " + demoPrivate.String()} {
		if err := fwd.Add(l); err != nil {
			return err
		}
	}
	if d.dns, err = dnszone.NewServer(top, rev, fwd); err != nil {
		return err
	}
	if err := d.dns.Listen("127.0.0.1:0"); err != nil {
		return err
	}
	d.closer = append(d.closer, func() { d.dns.Close() })
	ds := top.DS()
	d.ds = fmt.Sprintf("%s DS %d %d %d %s…", ds.Hdr.Name, ds.KeyTag, ds.Algorithm, ds.DigestType, strings.ToLower(ds.Digest[:16]))
	d.anchor, err = dnsoe.ParseTrustAnchors(strings.NewReader(ds.String()+"\n"), "demo trust anchor")
	return err
}

// nodes starts A and B, once. A also has a configured peer: G1, by a PSK,
// for H1 (its IKE starts on traffic; G1 answers it once the status part
// has started the gateways).
func (d *demoWorld) nodes() (a, b *tunnel.Node, err error) {
	if d.a != nil {
		return d.a, d.b, nil
	}
	pol := tunnel.Policy{PrivateOrClear: []netip.Prefix{demoPrivOrClear}, Private: []netip.Prefix{demoPrivPrefix}}
	d.rA = &dnsoe.Resolver{Server: d.dns.Addr, Mode: dnsoe.DNSSECRequire, Anchors: d.anchor}
	rB := &dnsoe.Resolver{Server: d.dns.Addr, Mode: dnsoe.DNSSECRequire, Anchors: d.anchor}
	if d.b, err = d.node(demoB, pol, &tunnel.OEConfig{Resolver: rB, Auth: ike.Credential{Signer: d.bPriv}}); err != nil {
		return nil, nil, err
	}
	g1 := tunnel.Peer{IKE: &ike.PeerConfig{Name: "g1", Addr: demoG1, LocalID: ike.IdentityOf(demoA), Auth: ike.Credential{PSK: d.psk}, PeerAuth: ike.PeerAuth{PSK: d.psk},
		LocalTS: hostSelector(demoA), RemoteTS: hostSelector(demoH1)}, Start: tunnel.StartOnTraffic}
	if d.a, err = d.node(demoA, pol, &tunnel.OEConfig{Resolver: d.rA, Auth: ike.Credential{Null: true}}, g1); err != nil {
		return nil, nil, err
	}
	return d.a, d.b, nil
}

// node starts a netstack node at addr on the in-memory network, on ports
// 500 and 4500, whose flows in the clear go to the demo's clear host.
func (d *demoWorld) node(addr netip.Addr, pol tunnel.Policy, oe *tunnel.OEConfig, peers ...tunnel.Peer) (*tunnel.Node, error) {
	n, err := tunnel.NewNode(tunnel.NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addr, 32)},
		IKEPort: 500, NATTPort: 4500, Bind: func() conn.Bind { return d.mn.Bind(addr) }, ClearDial: d.clear.dial,
		Policy: pol, Opportunism: oe, Peers: peers, Logger: d.log.With("node", addr)})
	if err != nil {
		return nil, fmt.Errorf("node %v: %w", addr, err)
	}
	d.closer = append(d.closer, func() { n.Close() })
	return n, nil
}

// partOE: A connects to B by address; the first packet starts discovery
// and IKE, and is delivered through ESP once the SA is up.
func (d *demoWorld) partOE(out io.Writer) error {
	a, b, err := d.nodes()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  A: check %v before: %s\n", demoB, checkLine(a.Check(demoB)))
	ln, err := b.Listen("tcp", ":7")
	if err != nil {
		return err
	}
	defer ln.Close()
	accepted := make(chan time.Time, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- time.Now()
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The stack's own dialer: the SYN is the first packet, which the
	// datapath holds while discovery and IKE run (Node.DialContext would
	// start them before the first packet).
	start := time.Now()
	c, err := a.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(demoB, 7))
	if err != nil {
		return fmt.Errorf("TCP to %v: %w", demoB, err)
	}
	defer c.Close()
	var delivered time.Time
	select {
	case delivered = <-accepted:
	case <-ctx.Done():
		return errors.New("B accepted nothing")
	}
	msg := marker + " (a): hello B, from A\n"
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != msg {
		return fmt.Errorf("echo through ESP: %q, %v", got, err)
	}
	res := d.rA.Lookup(ctx, demoB)
	if res.Err != nil || len(res.Gateways) == 0 {
		return fmt.Errorf("A's resolver has no key for %v: %v", demoB, res.Err)
	}
	g := res.Gateways[0]
	fmt.Fprintf(out, "  discovery: IPSECKEY at %s found: gateway %v, %s; DNSSEC validated=%v (A's own validation from trust anchor %s)\n",
		reverseName(demoB), g.Addr, keyLine(g.Key), res.Validated, d.ds)
	for _, sa := range a.IKE().SAs() {
		if sa.Remote.Addr() == demoB && sa.State == "established" {
			fmt.Fprintf(out, "  IKEv2: IKE SA %s, A authenticates with %s, B (%s) with the key DNS published\n", sa.Suite, sa.Auth, sa.PeerID)
		}
	}
	if p := a.Engine().PairFor(demoB); p != nil {
		for _, sa := range a.IKE().SAs() {
			for _, ch := range sa.Children {
				if ch.In.SPI == p.In.SPI() {
					fmt.Fprintf(out, "  ESP: Child SA %s, out spi %#08x, in spi %#08x, selectors %v ⇄ %v\n", ch.Suite, p.Out.SPI(), p.In.SPI(), ch.Local, ch.Remote)
				}
			}
		}
	}
	fmt.Fprintf(out, "  first packet (SYN) held by A, delivered to B %v later; echo through ESP OK\n", delivered.Sub(start).Round(100*time.Microsecond))
	fmt.Fprintf(out, "  A: check %v after: %s\n", demoB, checkLine(a.Check(demoB)))
	return nil
}

// dialClear dials demoClear, which publishes nothing and is under
// private-or-clear, from a: a connection in the clear.
func dialClear(ctx context.Context, a *tunnel.Node) (net.Conn, error) {
	c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(demoClear, 80).String())
	if err != nil {
		return nil, fmt.Errorf("private-or-clear %v: %w", demoClear, err)
	}
	return c, nil
}

// refusesPrivate checks that a refuses to dial demoPrivate, which
// publishes nothing and is under private.
func refusesPrivate(ctx context.Context, a *tunnel.Node) error {
	if _, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(demoPrivate, 80).String()); !errors.Is(err, tunnel.ErrBlocked) {
		return fmt.Errorf("private %v: %v, want the dial refused", demoPrivate, err)
	}
	return nil
}

// partPolicy: a destination that publishes nothing, under
// private-or-clear, is reached in the clear (through A's clear path, to an
// in-process host); one under private is refused.
func (d *demoWorld) partPolicy(out io.Writer) error {
	a, _, err := d.nodes()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialClear(ctx, a)
	if err != nil {
		return err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "hello from A\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil {
		return fmt.Errorf("private-or-clear %v: %w", demoClear, err)
	}
	res := d.rA.Lookup(ctx, demoClear)
	fmt.Fprintf(out, "  %v (private-or-clear): DNS says %v (validated=%v) → sent in the clear\n", demoClear, res.Err, res.Validated)
	fmt.Fprintf(out, "    A's clear path re-originated the flow to the in-process clear host, which answered %q\n", strings.TrimSpace(reply))
	fmt.Fprintf(out, "    A: check %v: %s\n", demoClear, checkLine(a.Check(demoClear)))
	start := time.Now()
	if err := refusesPrivate(ctx, a); err != nil {
		return err
	}
	res = d.rA.Lookup(ctx, demoPrivate)
	fmt.Fprintf(out, "  %v (private): DNS says %v (validated=%v) → refused: Node.DialContext returned tunnel.ErrBlocked after %v\n",
		demoPrivate, res.Err, res.Validated, time.Since(start).Round(100*time.Microsecond))
	fmt.Fprintf(out, "    A: check %v: %s\n", demoPrivate, checkLine(a.Check(demoPrivate)))
	if n := d.clear.dialsTo(demoPrivate); n > 0 {
		return fmt.Errorf("%d connections to %v left in the clear", n, demoPrivate)
	}
	fmt.Fprintf(out, "  clear host: %d connection(s) from A's clear path to %v, none to %v\n", d.clear.dialsTo(demoClear), demoClear, demoPrivate)
	return nil
}

// partBulk: a bulk TCP transfer A→B through ESP, its hash checked on
// arrival.
func (d *demoWorld) partBulk(out io.Writer) error {
	a, b, err := d.nodes()
	if err != nil {
		return err
	}
	ln, err := b.Listen("tcp", ":5201")
	if err != nil {
		return err
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		done <- result{sum: [32]byte(h.Sum(nil)), n: n, err: err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(demoB, 5201).String())
	if err != nil {
		return err
	}
	size := int64(d.size) << 20
	h := sha256.New()
	start := time.Now()
	if _, err := io.Copy(c, io.TeeReader(io.LimitReader(&markerReader{}, size), h)); err != nil {
		c.Close()
		return fmt.Errorf("TCP send: %w", err)
	}
	c.Close()
	select {
	case r := <-done:
		if r.err != nil {
			return fmt.Errorf("TCP receive: %w", r.err)
		}
		if r.n != size || r.sum != [32]byte(h.Sum(nil)) {
			return fmt.Errorf("TCP transfer corrupted: %d of %d octets, hash mismatch", r.n, size)
		}
	case <-time.After(2 * time.Minute):
		return errors.New("TCP transfer did not finish in 2 minutes")
	}
	elapsed := time.Since(start)
	fmt.Fprintf(out, "  TCP A→B: %d MiB arrived intact (SHA-256 matches) in %v: %.2f Gbit/s (netstack to netstack through ESP, in this process)\n",
		d.size, elapsed.Round(time.Millisecond), float64(size)*8/elapsed.Seconds()/1e9)
	return nil
}

// checkLine prints a Check.
func checkLine(c tunnel.Check) string {
	s := c.Verdict + " (" + c.Reason
	if c.Peer != "" {
		s += "; peer " + c.Peer
	}
	return s + ")"
}

// keyLine describes a published key.
func keyLine(k any) string {
	if pub, ok := k.(ed25519.PublicKey); ok {
		sum := sha256.Sum256(pub)
		return "Ed25519 key sha256:" + hex.EncodeToString(sum[:8])
	}
	return fmt.Sprintf("%T key", k)
}

// reverseName is addr's name in the reverse tree.
func reverseName(addr netip.Addr) string {
	b := addr.As4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", b[3], b[2], b[1], b[0])
}

// markerReader repeats the marker, numbered, forever (without fmt, which
// was slower than the tunnel).
type markerReader struct {
	n    int64
	line []byte
}

func (m *markerReader) Read(p []byte) (int, error) {
	i := 0
	for i < len(p) {
		m.line = append(append(m.line[:0], marker...), ' ')
		m.line = append(strconv.AppendInt(m.line, m.n, 10), '\n')
		m.n++
		i += copy(p[i:], m.line)
	}
	return i, nil
}

// clearHost is a host that oevpn does not protect, in this process: the
// nodes' clear path (NodeConfig.ClearDial) connects to it instead of the
// host's sockets, so that nothing of the demo leaves the process. It
// answers one line on port 80 of its address and refuses the rest.
type clearHost struct {
	addr  netip.Addr
	mu    sync.Mutex
	dials map[netip.Addr]int
}

func (h *clearHost) dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	if h.dials == nil {
		h.dials = map[netip.Addr]int{}
	}
	h.dials[ap.Addr()]++
	h.mu.Unlock()
	if ap != netip.AddrPortFrom(h.addr, 80) || !strings.HasPrefix(network, "tcp") {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	c, s := net.Pipe()
	go func() {
		defer s.Close()
		s.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(s).ReadString('\n')
		if err != nil {
			return
		}
		fmt.Fprintf(s, "clear host %v got %q: no oevpn here\n", h.addr, strings.TrimSpace(line))
	}()
	return c, nil
}

func (h *clearHost) dialsTo(a netip.Addr) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dials[a]
}

// wireTap sees every datagram on the outer network.
type wireTap struct {
	mu      sync.Mutex
	kinds   map[string]int
	octets  int
	leaks   int
	samples []string
}

func (w *wireTap) see(from, to netip.AddrPort, d []byte) {
	kind := "IKE on UDP/500"
	if to.Port() != 500 && from.Port() != 500 {
		switch k, err := esp.Classify(d); {
		case err != nil && probe.HasPreamble(d):
			kind = "AutoVPN probe"
		case err != nil:
			kind = "malformed"
		case k == esp.KindESP:
			kind = "ESP"
		case k == esp.KindIKE:
			kind = "IKE on UDP/4500"
		default:
			kind = k.String()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.kinds == nil {
		w.kinds = map[string]int{}
	}
	w.kinds[kind]++
	w.octets += len(d)
	if bytes.Contains(d, []byte(marker)) {
		w.leaks++
	}
	if kind == "ESP" && len(w.samples) < 3 && len(d) >= 32 {
		w.samples = append(w.samples, fmt.Sprintf("  %v → %v  spi=%#08x seq=%-3d %4d octets, ciphertext %s…",
			from, to, esp.Header(d).SPI(), esp.Header(d).Seq(), len(d), hex.EncodeToString(d[16:32])))
	}
}

// report prints what the tap saw and fails if the marker was seen.
func (w *wireTap) report(out io.Writer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(out, "\non the wire (every datagram of the outer network, as the tap saw it), first ESP datagrams:\n")
	for _, s := range w.samples {
		fmt.Fprintln(out, s)
	}
	var kinds []string
	total := 0
	for _, k := range []string{"IKE on UDP/500", "IKE on UDP/4500", "AutoVPN probe", "ESP", "keepalive", "malformed"} {
		if n := w.kinds[k]; n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
		}
	}
	for _, n := range w.kinds {
		total += n
	}
	fmt.Fprintf(out, "  %d datagrams (%d MiB): %s; plaintext marker %q seen %d times\n",
		total, w.octets>>20, strings.Join(kinds, ", "), marker, w.leaks)
	if w.leaks > 0 {
		return errors.New("plaintext seen on the wire")
	}
	return nil
}
