package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oevpn/oevpn/ike"
	conn "github.com/oevpn/oevpn/internal/wgconn"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/probe"
	"github.com/oevpn/oevpn/tunnel"
)

// The AutoVPN part's addresses: gateways G1 and G2 on the outer network,
// each in front of one host (its node's stack).
var (
	demoG1 = netip.MustParseAddr("203.0.113.1")
	demoG2 = netip.MustParseAddr("203.0.113.2")
	demoH1 = netip.MustParseAddr("10.1.0.1")
	demoH2 = netip.MustParseAddr("10.2.0.1")
)

// avGateway is one AutoVPN gateway of the demo (or host A, its own
// gateway, in the status part): a node, its probe gateway, its IKE daemon
// and its trust store, wired as tunnel.AutoVPN wires them.
type avGateway struct {
	name     string
	addr     netip.Addr // outer
	node     *tunnel.Node
	gw       *probe.Gateway
	ike      *ike.Daemon
	store    *policy.TrustStore
	cred     ike.Credential
	contact  string
	seen     chan *policy.Peer
	seenErr  chan error
	icmpSent atomic.Int32
	// completed receives the probes that its probe gateway answered and
	// that completed (answerProbes).
	completed chan probe.Completed
}

// partAutoVPN: H1 connected to H2 in the clear; G2 sees H2's reply and
// probes H1; G1, in front of H1, answers; the probe completes and G1
// initiates IKE carrying the probe's nonce; both gateways take the other's
// self-signed certificate on a leap of faith, and the hosts' traffic goes
// through ESP.
//
// The nodes run no AutoVPN of their own: in netstack mode a node has no
// inbound clear path, so it never sees the clear flow that starts a probe,
// and AutoVPN's raw ICMP socket needs privileges. The demo therefore runs
// AutoVPN's parts (probe gateways, the IKE daemon with AutoVPN nonces, the
// trust store) on the nodes' engines itself, hands G2 the reply it would
// have seen, and carries the ICMP probe messages in process; the UDP Probe
// Response, IKE and ESP cross the outer network.
func (d *demoWorld) partAutoVPN(out io.Writer) error {
	g1, g2, err := d.gateways()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  G1 %v in front of H1 %v, G2 %v in front of H2 %v; self-signed certificates, empty trust stores\n", demoG1, demoH1, demoG2, demoH2)

	start := time.Now()
	if err := g2.gw.Probe(synAck(demoH2, 80, demoH1, 40000), probe.ProvenPeer); err != nil {
		return fmt.Errorf("G2's probe: %w", err)
	}
	fmt.Fprintf(out, "  G2 sees H2's SYN+ACK to H1 leave in the clear: probes H1 (ICMP Probe Request, taken by G1 on its way)\n")
	var c probe.Completed
	select {
	case c = <-g1.completed:
	case <-time.After(5 * time.Second):
		return errors.New("the probe exchange did not complete")
	}
	fmt.Fprintf(out, "  probe complete after %v: G1 answered over UDP to H2's port 4500 (taken by G2), G2's Probe Complete came back (ICMP);\n", time.Since(start).Round(100*time.Microsecond))
	fmt.Fprintf(out, "  G1 initiates IKEv2 with %v carrying Nonce-R %x…\n", c.Gateway, c.NonceR[:6])
	if c.Gateway != demoG2 || c.Local != demoH1 || c.Remote != demoH2 {
		return fmt.Errorf("probe completed for gateway %v, hosts %v ⇄ %v", c.Gateway, c.Local, c.Remote)
	}
	peer := &ike.PeerConfig{Name: "autovpn-" + c.Gateway.String(), Addr: c.Gateway, IKEPort: 500, NATTPort: 4500,
		Auth: g1.cred, PeerAuth: g1.leapOfFaith(), AutoVPNNonce: c.NonceR, Contact: g1.contact,
		LocalTS: hostSelector(c.Local), RemoteTS: hostSelector(c.Remote), OnEstablished: g1.onEstablished}
	if err := g1.ike.AddPeer(peer); err != nil {
		return err
	}
	if err := g1.ike.Initiate(peer.Name); err != nil {
		return err
	}
	for _, g := range []*avGateway{g1, g2} {
		select {
		case p := <-g.seen:
			fmt.Fprintf(out, "  %s's trust store: %s is %s (leap of faith on first meeting), fingerprint %s…, contact %q\n",
				g.name, p.DN, p.State, p.Fingerprint[:16], p.Contact)
		case err := <-g.seenErr:
			return fmt.Errorf("%s's trust store refused the peer: %w", g.name, err)
		case <-time.After(5 * time.Second):
			return fmt.Errorf("no IKE SA between the gateways after 5 s (%s)", g.name)
		}
	}
	if _, ok := g2.gw.Lookup(c.NonceR, demoG1); ok {
		return errors.New("G2 did not spend the probe's nonce")
	}
	for _, sa := range g1.ike.SAs() {
		if sa.Peer != peer.Name {
			continue // A's configured peer (the status part)
		}
		fmt.Fprintf(out, "  IKEv2 G1→G2: %s, both authenticated by certificate; G2 spent the nonce (it starts no second SA)\n", sa.Suite)
	}
	if err := hostTraffic(g1.node, g2.node, demoH2, "(c): H1 → H2"); err != nil {
		return err
	}
	fmt.Fprintf(out, "  H1 → H2 TCP through the gateways' ESP: echo OK (G1 check %v: %s)\n", demoH2, checkLine(g1.node.Check(demoH2)))
	fmt.Fprintf(out, "  probe messages: %d ICMP (carried in process), %d UDP Probe Response(s) on the wire\n",
		g2.icmpSent.Load(), g1.gw.Stats().Responses)
	// G1's operator checks G2's fingerprint out of band, and marks it
	// trusted (oevpn trust FINGERPRINT).
	for _, p := range g1.store.Peers() {
		q, err := g1.store.SetState(p.Fingerprint, policy.Trusted)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  G1's operator runs `oevpn trust %s`: %s is now %s; G2 still holds G1 as %s\n",
			p.Fingerprint[:16], q.DN, q.State, g2.store.Peers()[0].State)
	}
	return nil
}

// openBind opens a socket on the outer network at addr:port whose
// datagrams go to recv (nil: dropped).
func (d *demoWorld) openBind(addr netip.Addr, port uint16, recv func(msg []byte, from netip.AddrPort)) (conn.Bind, error) {
	b := d.mn.Bind(addr)
	fns, _, err := b.Open(port)
	if err != nil {
		return nil, err
	}
	d.closer = append(d.closer, func() { b.Close() })
	go func() {
		bufs, sizes, eps := [][]byte{make([]byte, 65536)}, make([]int, 1), make([]conn.Endpoint, 1)
		for {
			n, err := fns[0](bufs, sizes, eps)
			if err != nil {
				return
			}
			for i := 0; i < n && recv != nil; i++ {
				from, err := netip.ParseAddrPort(eps[i].DstToString())
				if err == nil {
					recv(bufs[i][:sizes[i]], from)
				}
			}
		}
	}()
	return b, nil
}

// gateways starts G1 and G2, once: their nodes, probe gateways and IKE
// daemons, and the socket at H2's port 4500 by which G2 takes the Probe
// Responses for H2. G1 answers probes for H1, G2 nonces for H2; G1 also
// answers A's configured peer (a PSK; the status part).
func (d *demoWorld) gateways() (g1, g2 *avGateway, err error) {
	if d.g1 != nil {
		return d.g1, d.g2, nil
	}
	if g1, err = d.avGateway("G1", demoG1, demoH1); err != nil {
		return nil, nil, err
	}
	if g2, err = d.avGateway("G2", demoG2, demoH2); err != nil {
		return nil, nil, err
	}
	if err := d.answerProbes(g1, demoH1); err != nil {
		return nil, nil, err
	}
	g2.gw = probe.NewGateway(probe.Config{Sender: probeSender{from: g2, icmp: d.inFront}, Logger: d.log.With("node", "G2")})
	d.closer = append(d.closer, g2.gw.Close)
	if _, err := d.openBind(demoH2, 4500, func(msg []byte, from netip.AddrPort) { g2.gw.HandleUDP(msg, from, demoH2) }); err != nil {
		return nil, nil, err
	}
	a := &ike.PeerConfig{Name: "A", Addr: demoA, LocalID: ike.IdentityOf(demoG1), Auth: ike.Credential{PSK: d.psk}, PeerAuth: ike.PeerAuth{PSK: d.psk},
		LocalTS: hostSelector(demoH1), RemoteTS: hostSelector(demoA)}
	if g1.ike, err = g1.startIKE(d, nil, a); err != nil {
		return nil, nil, err
	}
	if g2.ike, err = g2.startIKE(d, g2.responder(demoH2)); err != nil {
		return nil, nil, err
	}
	d.g1, d.g2 = g1, g2
	return g1, g2, nil
}

// answerProbes gives g a probe gateway that answers probes for hosts (as
// G1 does): ICMP to them and to g reaches it in process (inFront), its
// UDP Probe Responses leave from port 4501 of its outer address, beside
// its engine's socket, and completed probes go to g.completed.
func (d *demoWorld) answerProbes(g *avGateway, hosts ...netip.Addr) error {
	udp, err := d.openBind(g.addr, 4501, nil)
	if err != nil {
		return err
	}
	g.completed = make(chan probe.Completed, 1)
	g.gw = probe.NewGateway(probe.Config{Sender: probeSender{from: g, udp: udp}, Logger: d.log.With("node", g.name),
		OnComplete: func(c probe.Completed) {
			select {
			case g.completed <- c:
			default:
			}
		}})
	d.closer = append(d.closer, g.gw.Close)
	d.avMu.Lock()
	defer d.avMu.Unlock()
	if d.front == nil {
		d.front = map[netip.Addr]*avGateway{}
	}
	d.front[g.addr] = g
	for _, h := range hosts {
		d.front[h] = g
	}
	return nil
}

// inFront is the gateway that ICMP to host passes (nil: none).
func (d *demoWorld) inFront(host netip.Addr) *avGateway {
	d.avMu.Lock()
	defer d.avMu.Unlock()
	return d.front[host]
}

// avGateway starts a gateway's node at outer address g, its stack at h.
func (d *demoWorld) avGateway(name string, g, h netip.Addr) (*avGateway, error) {
	n, err := tunnel.NewNode(tunnel.NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(h, 32)},
		IKEPort: 500, NATTPort: 4500, Bind: func() conn.Bind { return d.mn.Bind(g) }, Logger: d.log.With("node", name)})
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", name, err)
	}
	d.closer = append(d.closer, func() { n.Close() })
	return d.avIdentity(name, g, n)
}

// avIdentity makes what an AutoVPN gateway or host has of its own, for
// node n at outer address addr: a self-signed certificate and an empty
// trust store.
func (d *demoWorld) avIdentity(name string, addr netip.Addr, n *tunnel.Node) (*avGateway, error) {
	if d.avDir == "" {
		dir, err := os.MkdirTemp("", "oevpn-demo-")
		if err != nil {
			return nil, err
		}
		d.avDir = dir
		d.closer = append(d.closer, func() { os.RemoveAll(dir) })
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{CommonName: name + ".autovpn.demo", Organization: []string{"oevpn demo " + name}}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	store, err := policy.OpenTrustStore(filepath.Join(d.avDir, name+"-peers"))
	if err != nil {
		return nil, err
	}
	return &avGateway{name: name, addr: addr, node: n, store: store, cred: ike.Credential{Signer: key, Cert: cert},
		contact: name + " — the demo's operator", seen: make(chan *policy.Peer, 1), seenErr: make(chan error, 1)}, nil
}

// startIKE runs an IKE daemon on the gateway's engine, answering AutoVPN
// nonces with responder (nil: initiate only) and the configured peers.
func (g *avGateway) startIKE(d *demoWorld, responder func(netip.AddrPort, netip.Addr, []byte) *ike.PeerConfig, peers ...*ike.PeerConfig) (*ike.Daemon, error) {
	cfg := ike.Config{Datapath: g.node.Engine(), Logger: d.log.With("node", g.name, "component", "ike"), Responder: responder, Peers: peers}
	if responder != nil {
		cfg.ClaimAutoVPNNonce = func(from netip.AddrPort, nonce []byte) bool {
			_, ok := g.gw.Accept(nonce, from.Addr())
			return ok
		}
	}
	dm, err := ike.New(cfg)
	if err != nil {
		return nil, err
	}
	d.closer = append(d.closer, dm.Close)
	g.node.Engine().SetControl(demoIKE{d: dm})
	return dm, nil
}

// demoIKE hands the engine's IKE messages to the demo's own daemon.
type demoIKE struct {
	tunnel.NopControl
	d *ike.Daemon
}

// IKE implements tunnel.Control.
func (c demoIKE) IKE(msg []byte, from netip.AddrPort, to netip.Addr, natt bool) bool {
	c.d.HandlePacketTo(msg, from, to, natt)
	return true
}

// responder answers an IKE_SA_INIT that carries the nonce of a probe this
// gateway completed, for the hosts the probe proved (as
// tunnel.AutoVPN.Responder does); others get no answer.
func (g *avGateway) responder(host netip.Addr) func(netip.AddrPort, netip.Addr, []byte) *ike.PeerConfig {
	return func(from netip.AddrPort, _ netip.Addr, nonce []byte) *ike.PeerConfig {
		if nonce == nil {
			return nil
		}
		c, ok := g.gw.Lookup(nonce, from.Addr())
		if !ok || c.Local != host {
			return nil
		}
		return &ike.PeerConfig{Name: "autovpn-in-" + from.Addr().String(), Addr: from.Addr(), Auth: g.cred,
			PeerAuth: g.leapOfFaith(), LocalTS: hostSelector(c.Local), RemoteTS: hostSelector(c.Remote),
			Contact: g.contact, OnEstablished: g.onEstablished}
	}
}

// leapOfFaith asks the trust store, the one decision on AutoVPN peers: an
// unknown certificate is let in, a conflicting or untrusted one is not.
func (g *avGateway) leapOfFaith() ike.PeerAuth {
	return ike.PeerAuth{LeapOfFaith: func(c *x509.Certificate) error {
		_, err := g.store.Accept(c.Subject.String(), c, false, time.Now())
		return err
	}}
}

// onEstablished records the peer in the trust store (unknown →
// unverified), off the daemon's goroutine.
func (g *avGateway) onEstablished(i ike.EstablishedInfo) {
	if i.Cert == nil {
		return
	}
	go func() {
		p, err := g.store.Seen(i.Cert, i.Contact, i.Remote.Addr(), i.BySharedSecret, time.Now())
		if err != nil {
			g.seenErr <- err
			return
		}
		select {
		case g.seen <- p:
		default:
		}
	}()
}

// probeSender carries a gateway's probe messages: ICMP in process to the
// gateway in front of the destination, UDP over the outer network.
type probeSender struct {
	from *avGateway
	icmp func(dst netip.Addr) *avGateway // where ICMP to dst goes
	udp  conn.Bind                       // where UDP leaves
}

func (s probeSender) SendICMP(dst netip.Addr, icmp []byte) error {
	var to *avGateway
	if s.icmp != nil {
		to = s.icmp(dst)
	}
	if to == nil {
		return errors.New("demo: no ICMP path")
	}
	s.from.icmpSent.Add(1)
	go to.gw.HandleICMP(append([]byte(nil), icmp...), s.from.addr, dst)
	return nil
}

func (s probeSender) SendUDP(dst netip.AddrPort, msg []byte) error {
	if s.udp == nil {
		return errors.New("demo: no UDP path")
	}
	ep, err := s.udp.ParseEndpoint(dst.String())
	if err != nil {
		return err
	}
	return s.udp.Send([][]byte{msg}, ep)
}

// hostTraffic sends a line, marker and msg, from node n1 to an echo
// server on port 7 of node n2 at dst, and reads it back.
func hostTraffic(n1, n2 *tunnel.Node, dst netip.Addr, msg string) error {
	ln, err := n2.Listen("tcp", ":7")
	if err != nil {
		return err
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n1.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, 7).String())
	if err != nil {
		return fmt.Errorf("%s: %w", msg, err)
	}
	msg = marker + " " + msg + "\n"
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, msg)
	got, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	ln.Close()
	wg.Wait()
	if err != nil || got != msg {
		return fmt.Errorf("echo to %v: %q, %v", dst, got, err)
	}
	return nil
}

// hostSelector is the traffic selector of one address.
func hostSelector(a netip.Addr) policy.Selectors {
	return policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(a, a.BitLen()))}
}

// synAck is a TCP SYN+ACK from src:sport to dst:dport (the reply of a host
// to a connection the peer host opened).
func synAck(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) []byte {
	p := make([]byte, 40)
	p[0], p[3], p[8], p[9] = 0x45, 40, 64, 6
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	p[20], p[21], p[22], p[23] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
	p[32], p[33] = 0x50, 0x12 // data offset 5, SYN+ACK
	return p
}
