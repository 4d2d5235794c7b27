package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/probe"
	"github.com/oevpn/oevpn/tunnel"
)

// partStatus brings node A to hold one of each kind of peer `oevpn status`
// lists, each through the same exchanges as the other parts, and prints
// A's status as oevpn status (or, with -json, oevpn status --json) does:
//
//   - configured peer g1 (PSK) for H1 behind G1, brought up by traffic;
//   - opportunistic peer B, found through IPSECKEY in signed DNS;
//   - shunts: 198.51.100.9 (clear) and 198.51.100.200 (blocked), which
//     publish no record;
//   - AutoVPN peer G2: A, its own AutoVPN host, answers G2's probe for H2
//     and initiates IKE with the probe's nonce; each side takes the other's
//     certificate on a leap of faith.
//
// It runs alone too: it starts what it needs, and what an earlier part
// already set up is reused.
func (d *demoWorld) partStatus(out io.Writer) error {
	a, b, err := d.nodes()
	if err != nil {
		return err
	}
	g1, g2, err := d.gateways()
	if err != nil {
		return err
	}
	// The configured peer: the first packet for H1 starts IKE with G1.
	if err := hostTraffic(a, g1.node, demoH1, "(f): A → H1 (configured peer g1)"); err != nil {
		return err
	}
	// The opportunistic peer.
	if err := hostTraffic(a, b, demoB, "(f): A → B (opportunistic)"); err != nil {
		return err
	}
	// The shunts.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialClear(ctx, a)
	if err != nil {
		return err
	}
	c.Close()
	if err := refusesPrivate(ctx, a); err != nil {
		return err
	}
	// The AutoVPN peer.
	av, err := d.autoVPNHost(a, g2)
	if err != nil {
		return err
	}
	if err := hostTraffic(a, g2.node, demoH2, "(f): A → H2 (AutoVPN peer G2)"); err != nil {
		return err
	}

	st := a.Status()
	st.Version = version
	// A node running AutoVPN itself lists its trust store; here the demo
	// runs A's AutoVPN parts (see partAutoVPN), so it lists A's.
	for _, p := range av.store.Peers() {
		seen := int64(time.Since(p.LastSeen).Seconds())
		st.AutoVPNPeers = append(st.AutoVPNPeers, tunnel.AutoVPNPeerStatus{Fingerprint: p.Fingerprint, DN: p.DN,
			State: string(p.State), SharedSecret: len(p.SharedSecret) > 0, LastSeenSeconds: &seen, Contact: p.Contact})
	}
	if err := statusHasAll(st); err != nil {
		return err
	}
	fmt.Fprintf(out, "  A %v echoed a line through a peer of each kind, and tried two hosts that publish nothing:\n", demoA)
	fmt.Fprintf(out, "    configured: g1, G1 %v for H1 %v, by PSK, brought up by the first packet\n", demoG1, demoH1)
	fmt.Fprintf(out, "    opportunistic: B, by its key in signed DNS\n")
	fmt.Fprintf(out, "    AutoVPN: G2 for H2 %v, by certificate: G2 probed A on H2's reply to it, A answered and initiated IKE with the probe's nonce\n", demoH2)
	fmt.Fprintf(out, "    shunts: %v sent in the clear, %v refused\n", demoClear, demoPrivate)
	if d.json {
		fmt.Fprintf(out, "  $ oevpn status --json   # A's\n")
		return writeJSON(out, st, true)
	}
	fmt.Fprintf(out, "  $ oevpn status   # A's\n")
	var buf bytes.Buffer
	if err := printStatus(&buf, st); err != nil {
		return err
	}
	for _, l := range strings.SplitAfter(buf.String(), "\n") {
		if l != "" && l != "\n" {
			l = "  " + l
		}
		io.WriteString(out, l)
	}
	return nil
}

// autoVPNHost makes A an AutoVPN host (the gateway of its own address)
// that meets G2: G2 sees H2's reply to A leave in the clear and probes A,
// A answers, and A initiates IKE with G2 carrying the probe's nonce, on
// A's own IKE daemon, for A and H2 only. It returns once both trust stores
// hold the other.
func (d *demoWorld) autoVPNHost(a *tunnel.Node, g2 *avGateway) (*avGateway, error) {
	av, err := d.avIdentity("A", demoA, a)
	if err != nil {
		return nil, err
	}
	av.ike = a.IKE()
	if err := d.answerProbes(av, demoA); err != nil {
		return nil, err
	}
	if err := g2.gw.Probe(synAck(demoH2, 80, demoA, 40001), probe.ProvenPeer); err != nil {
		return nil, fmt.Errorf("G2's probe of A: %w", err)
	}
	var c probe.Completed
	select {
	case c = <-av.completed:
	case <-time.After(5 * time.Second):
		return nil, errors.New("the probe exchange between G2 and A did not complete")
	}
	if c.Gateway != demoG2 || c.Local != demoA || c.Remote != demoH2 {
		return nil, fmt.Errorf("probe completed for gateway %v, hosts %v ⇄ %v", c.Gateway, c.Local, c.Remote)
	}
	peer := &ike.PeerConfig{Name: "autovpn-" + c.Gateway.String(), Addr: c.Gateway, IKEPort: 500, NATTPort: 4500,
		Auth: av.cred, PeerAuth: av.leapOfFaith(), AutoVPNNonce: c.NonceR, Contact: av.contact,
		LocalTS: hostSelector(c.Local), RemoteTS: hostSelector(c.Remote), OnEstablished: av.onEstablished}
	if err := av.ike.AddPeer(peer); err != nil {
		return nil, err
	}
	for _, g := range []*avGateway{av, g2} {
		select {
		case <-g.seen:
		case err := <-g.seenErr:
			return nil, fmt.Errorf("%s's trust store refused the peer: %w", g.name, err)
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("no IKE SA between A and G2 after 5 s (%s)", g.name)
		}
	}
	return av, nil
}

// statusHasAll checks that st shows a peer of each kind up, with traffic
// in both directions for its host, and the two shunts with their
// verdicts and reasons.
func statusHasAll(st tunnel.Status) error {
	want := map[string]netip.Addr{tunnel.PeerConfigured: demoH1, tunnel.PeerOpportunistic: demoB, tunnel.PeerAutoVPN: demoH2}
	for kind, host := range want {
		ok := false
		for _, p := range st.Peers {
			if p.Kind != kind || p.State != tunnel.PeerUp {
				continue
			}
			for _, sa := range p.IKESAs {
				for _, c := range sa.ChildSAs {
					ok = ok || slices.Contains(c.RemoteTS, host.String()) && c.In.Packets > 0 && c.Out.Packets > 0
				}
			}
		}
		if !ok {
			return fmt.Errorf("A's status has no %s peer up with traffic to %v: %+v", kind, host, st.Peers)
		}
	}
	shunts := map[string]string{demoClear.String(): "clear", demoPrivate.String(): "drop"}
	for _, e := range st.Opportunistic {
		if shunts[e.Destination] == e.Verdict && e.Reason != "" {
			delete(shunts, e.Destination)
		}
	}
	if len(shunts) > 0 {
		return fmt.Errorf("A's status lacks the shunts %v: %+v", shunts, st.Opportunistic)
	}
	if len(st.AutoVPNPeers) == 0 {
		return errors.New("A's trust store is empty")
	}
	return nil
}
