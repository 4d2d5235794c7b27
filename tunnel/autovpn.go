package tunnel

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/probe"
)

// AutoVPNConfig configures AutoVPN (draft-sheffer-autovpn).
type AutoVPNConfig struct {
	// Protected are the hosts this gateway stands in front of (gateway
	// mode), or this host's own addresses (host mode).
	Protected []netip.Prefix
	// Cert and Signer are our (usually self-signed) certificate and key.
	Cert   *x509.Certificate
	Signer ike.Credential
	// Contact is sent as Contact Details.
	Contact string
	// Store is the trust store of peer certificates.
	Store *policy.TrustStore
	// SharedSecret asks each new peer for an AutoVPN shared secret.
	SharedSecret bool
	// Fallback is what traffic to a peer host gets when no SA can be had,
	// by the trust state of the peer gateway ("" for unknown): clear or
	// drop (§9.4). Unlisted states fall back to clear.
	Fallback map[policy.TrustState]Verdict
	// Outside is how our own sockets leave.
	Outside Outside
	// Probe tunes the probe exchange (tests); Sender is set by the engine.
	Probe  probe.Config
	Logger *slog.Logger
}

// Flow-table bounds.
const (
	maxFlows = 1 << 16
	flowIdle = 2 * time.Minute
)

// flowKey is a connection as seen from our protected host: Src is its
// side.
type flowKey = ipview.Flow

type flowState struct {
	inboundFirst bool // the peer host opened it
	last         time.Time
	in           int  // bytes the peer host sent (IP lengths): what a probe may cost
	synAcked     bool // our host answered the peer's SYN
}

// TCP flags. Segmenting keeps FIN (and PSH) on the last segment only and
// CWR on the first (as Linux's tcp_gso_segment does).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpECE = 0x40
	tcpCWR = 0x80
)

// AutoVPN runs the AutoVPN probe handshake and its IKE SAs on an engine:
// as G2 it probes the peers of replies its protected hosts send, as G1 it
// answers probes for its hosts and then initiates IKE; both sides
// authenticate with certificates kept in the trust store.
type AutoVPN struct {
	cfg  AutoVPNConfig
	eng  *Engine
	log  *slog.Logger
	gw   *probe.Gateway
	ike  *ike.Daemon
	icmp *icmpSocket

	stop chan struct{}
	wg   sync.WaitGroup
	// goMu orders the goroutines started (spawn) against Close's wait:
	// once stop is closed, none starts.
	goMu sync.Mutex

	mu    sync.Mutex
	flows map[flowKey]*flowState
	// initiated maps the IKE peers we started after a probe to their
	// gateway and the peer host.
	initiated map[string]probe.Completed

	probesSent, intercepted atomic.Uint64
}

// NewAutoVPN prepares AutoVPN on eng; Start hooks it up. The engine's
// Control hands it the probes that reach the NAT-T port (NewNode wires
// it).
func NewAutoVPN(eng *Engine, cfg AutoVPNConfig) (*AutoVPN, error) {
	if cfg.Store == nil || cfg.Cert == nil {
		return nil, errors.New("tunnel: AutoVPN needs a certificate and a trust store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	icmp, err := newICMPSocket(cfg.Outside)
	if err != nil {
		return nil, err
	}
	a := &AutoVPN{cfg: cfg, eng: eng, log: cfg.Logger, icmp: icmp, stop: make(chan struct{}),
		flows: map[flowKey]*flowState{}, initiated: map[string]probe.Completed{}}
	pc := cfg.Probe
	pc.Sender = a
	pc.Live = a.live
	pc.OnComplete = a.onProbeComplete
	pc.Logger = cfg.Logger
	a.gw = probe.NewGateway(pc)
	return a, nil
}

// Start runs AutoVPN with the IKE daemon, whose Config.Responder must
// hand AutoVPN nonces to Responder, and Config.ClaimAutoVPNNonce be
// ClaimNonce.
func (a *AutoVPN) Start(d *ike.Daemon) {
	a.ike = d
	a.eng.autovpn.Store(a)
	a.wg.Add(1)
	go a.routineICMP()
}

// Close stops AutoVPN.
func (a *AutoVPN) Close() {
	a.eng.autovpn.CompareAndSwap(a, nil)
	a.goMu.Lock()
	close(a.stop)
	a.goMu.Unlock()
	a.wg.Wait()
	a.icmp.close()
	a.gw.Close()
}

// spawn runs f on a goroutine of its own that Close waits for, unless
// Close has begun.
func (a *AutoVPN) spawn(f func()) {
	a.goMu.Lock()
	defer a.goMu.Unlock()
	select {
	case <-a.stop:
		return
	default:
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// SendICMP implements probe.Sender.
func (a *AutoVPN) SendICMP(dst netip.Addr, icmp []byte) error {
	a.probesSent.Add(1)
	return a.icmp.send(dst, icmp)
}

// SendUDP implements probe.Sender: from the NAT-T port.
func (a *AutoVPN) SendUDP(dst netip.AddrPort, msg []byte) error {
	a.probesSent.Add(1)
	return a.eng.sendNATT(msg, dst)
}

// routineICMP hands probe messages addressed to this host to the probe
// gateway (Probe Complete, and Probe Request in host mode).
func (a *AutoVPN) routineICMP() {
	defer a.wg.Done()
	buf := make([]byte, 65535)
	for {
		select {
		case <-a.stop:
			return
		default:
		}
		src, dst, icmp, err := a.icmp.receive(buf)
		if err != nil || len(icmp) < 2 || icmp[0] != 12 {
			continue
		}
		a.gw.HandleICMP(icmp, src, dst)
	}
}

func (a *AutoVPN) protected(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range a.cfg.Protected {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// covers reports whether a packet without an SA is AutoVPN's: between a
// protected host and another.
func (a *AutoVPN) covers(p *ipview.Packet) bool {
	return a.protected(p.Src) != a.protected(p.Dst)
}

// outbound handles a packet between a protected host and a peer host that
// no SA carries: probes addressed to our hosts are intercepted; the rest
// is noted in the flow table and forwarded in the clear (or dropped, by
// the fallback verdict), and a reply of our host starts a probe.
func (a *AutoVPN) outbound(p *ipview.Packet, pkt []byte) {
	now := time.Now()
	if a.protected(p.Dst) {
		if a.intercept(p, pkt) {
			a.intercepted.Add(1)
			return
		}
		a.noteFlow(p.Flow.Reverse(), true, p.Len, 0, now)
		a.eng.emit(VerdictClear, pkt)
		return
	}
	var flags byte
	if hl := ipview.HeaderLen(pkt); p.Proto == ipview.ProtoTCP && len(pkt) >= hl+14 {
		flags = pkt[hl+13]
	}
	reply, paid := a.noteFlow(p.Flow, false, 0, flags, now)
	v, _, decided := a.eng.VerdictFor(p.Dst)
	if reply && !decided {
		// Only a flow that brought more bytes than the probe costs, or a
		// TCP handshake the peer completed, pays for a probe: spoofed
		// SYNs reflect nothing.
		if err := a.gw.Probe(pkt, paid); err == nil {
			a.log.Info("AutoVPN: clear reply from a protected host; probing the peer", "host", p.Src, "peer", p.Dst)
		}
	}
	if decided && v == VerdictDrop {
		a.eng.emit(VerdictDrop, pkt)
		return
	}
	a.eng.emit(VerdictClear, pkt)
}

// intercept takes probe messages addressed to our hosts (gateway mode:
// they pass through us): ICMP Parameter Problem with our objects, and UDP
// to port 4500 behind the preamble.
func (a *AutoVPN) intercept(p *ipview.Packet, pkt []byte) bool {
	hl := ipview.HeaderLen(pkt)
	switch {
	case p.Proto == ipview.ProtoICMP && len(pkt) > hl+1 && pkt[hl] == 12:
		return a.gw.HandleICMP(pkt[hl:p.Len], p.Src, p.Dst)
	case p.Proto == ipview.ProtoUDP && p.DstPort == 4500 && p.Len >= hl+8+probe.PreambleLen:
		msg := pkt[hl+8 : p.Len]
		if probe.HasPreamble(msg) {
			a.gw.HandleUDP(msg, netip.AddrPortFrom(p.Src, p.SrcPort), p.Dst)
			return true
		}
	}
	return false
}

// noteFlow records a packet of a flow: n bytes from the peer host when
// inbound, else a packet of our host with TCP flags tcpFlags (0 for other
// protocols). For our host's packets it reports whether they reply to
// the peer host (the flow is the peer's, or our host answered its SYN),
// and what the peer has paid for a probe: the bytes it sent in the flow,
// or probe.ProvenPeer once it completed the TCP handshake. In host mode
// no inbound packet passes here, and only the handshake counts.
func (a *AutoVPN) noteFlow(k flowKey, inbound bool, n int, tcpFlags byte, now time.Time) (reply bool, paid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.flows[k]
	if f == nil || now.Sub(f.last) > flowIdle {
		if len(a.flows) >= maxFlows {
			for fk, fs := range a.flows {
				if now.Sub(fs.last) > flowIdle || len(a.flows) >= maxFlows {
					delete(a.flows, fk)
				}
				if len(a.flows) < maxFlows*3/4 {
					break
				}
			}
		}
		f = &flowState{inboundFirst: inbound}
		a.flows[k] = f
	}
	f.last = now
	if inbound {
		f.in += n
		return f.inboundFirst, f.in
	}
	switch {
	case tcpFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK:
		f.synAcked = true
	case f.synAcked && tcpFlags&(tcpSYN|tcpRST) == 0:
		// After our SYN+ACK, a segment that is neither SYN nor RST: the
		// peer acknowledged our SYN+ACK, so it receives at its address;
		// probing it reflects nothing onto anyone else.
		return true, probe.ProvenPeer
	}
	return f.inboundFirst || f.synAcked, f.in
}

// live, as G1, checks that a probe's fragment (a packet from the peer
// host to our host) belongs to a connection our host opened recently.
func (a *AutoVPN) live(f probe.Flow) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	fs := a.flows[f]
	return fs != nil && !fs.inboundFirst && time.Since(fs.last) < flowIdle
}

// peerAuth is how AutoVPN peers authenticate: a certificate or the shared
// secret kept for the peer's DN, both decided by the trust store's Accept.
func (a *AutoVPN) peerAuth() ike.PeerAuth {
	return ike.PeerAuth{
		LeapOfFaith: func(c *x509.Certificate) error {
			_, err := a.cfg.Store.Accept(c.Subject.String(), c, false, time.Now())
			return err
		},
		SharedSecret: func(id ike.Identity, c *x509.Certificate) []byte {
			p, err := a.cfg.Store.Accept(id.String(), c, true, time.Now())
			if err != nil {
				a.log.Info("AutoVPN: shared secret refused", "id", id.String(), "err", err)
				return nil
			}
			return p.SharedSecret
		},
	}
}

// credential is our credential towards a gateway: the shared secret of
// the peer last authenticated at that address, if the trust store still
// accepts it (a hint: the peer must still prove the secret), else our
// certificate.
func (a *AutoVPN) credential(gateway netip.Addr) ike.Credential {
	c := a.cfg.Signer
	if p, ok := a.cfg.Store.ByAddr(gateway.Unmap()); ok && len(p.SharedSecret) > 0 {
		if p, err := a.cfg.Store.Accept(p.DN, nil, true, time.Now()); err == nil {
			c.PSK = p.SharedSecret
		}
	}
	return c
}

func single(a netip.Addr) policy.Selectors {
	return policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(a, a.BitLen()))}
}

// onProbeComplete, as G1: the probe completed; initiate IKE carrying its
// Nonce-R, for exactly the two hosts.
func (a *AutoVPN) onProbeComplete(c probe.Completed) {
	name := fmt.Sprintf("av-out-%s-%s", c.Gateway, c.Remote)
	pc := &ike.PeerConfig{Name: name, Addr: c.Gateway, Auth: a.credential(c.Gateway), PeerAuth: a.peerAuth(),
		AutoVPNNonce: c.NonceR, LocalTS: single(c.Local), RemoteTS: single(c.Remote), Contact: a.cfg.Contact,
		SendSharedSecret: a.cfg.SharedSecret, OnEstablished: a.onEstablished, RetransmitBase: 250 * time.Millisecond, RetransmitTries: 4}
	a.mu.Lock()
	a.initiated[name] = c
	a.mu.Unlock()
	if c.NAT {
		// Behind a NAT: the SA is for the public address the peer knows
		// our host by; we translate our host's traffic ourselves.
		a.eng.AddNAT(c.Flow.Src, c.Public.Addr(), c.Remote, c.Flow.Proto, c.Flow.SrcPort, c.Public.Port())
	}
	a.spawn(func() { // not on the caller's goroutine: AddPeer waits for the daemon
		if err := a.ike.AddPeer(pc); err != nil && !errors.Is(err, ike.ErrPeerExists) {
			a.log.Warn("AutoVPN: starting IKE", "gateway", c.Gateway, "err", err)
			return
		}
		a.log.Info("AutoVPN: probe complete; initiating IKE", "gateway", c.Gateway, "local", c.Local, "remote", c.Remote, "nat", c.NAT)
	})
}

// Responder, as G2, answers an IKE_SA_INIT that carries an AutoVPN nonce:
// only for a probe completed with that gateway, and only for the two
// hosts of that probe. It does not spend the nonce: ClaimNonce does, once
// the daemon found the request's proposal and KE acceptable.
func (a *AutoVPN) Responder(from netip.AddrPort, nonce []byte) *ike.PeerConfig {
	c, ok := a.gw.Lookup(nonce, from.Addr())
	if !ok {
		a.log.Info("AutoVPN: IKE_SA_INIT with an unknown AutoVPN nonce refused", "from", from)
		return nil
	}
	return &ike.PeerConfig{Name: fmt.Sprintf("av-in-%s-%s", c.Gateway, c.Remote), Addr: from.Addr(), Auth: a.cfg.Signer,
		PeerAuth: a.peerAuth(), LocalTS: single(c.Local), RemoteTS: single(c.Remote), Contact: a.cfg.Contact,
		SendSharedSecret: a.cfg.SharedSecret, OnEstablished: a.onEstablished}
}

// ClaimNonce is the IKE daemon's Config.ClaimAutoVPNNonce: it spends the
// probe's nonce, so that it starts one IKE SA only.
func (a *AutoVPN) ClaimNonce(from netip.AddrPort, nonce []byte) bool {
	_, ok := a.gw.Accept(nonce, from.Addr())
	return ok
}

// onEstablished records a successful exchange in the trust store: the
// certificate (unknown → unverified), contact details, a new shared
// secret, or a certificate rolled under the shared secret.
func (a *AutoVPN) onEstablished(i ike.EstablishedInfo) {
	if i.Cert == nil {
		return
	}
	dn := i.Cert.Subject.String()
	now := time.Now()
	// The store writes its file: not on the daemon's goroutine.
	a.spawn(func() {
		old, known := a.cfg.Store.ByDN(dn)
		p, err := a.cfg.Store.Seen(i.Cert, i.Contact, i.Remote.Addr(), i.BySharedSecret, now)
		if err != nil {
			// Refused since IKE_AUTH (revoked, untrusted meanwhile): the
			// SA goes.
			a.log.Warn("AutoVPN: trust store refuses the peer; deleting its SA", "dn", dn, "err", err)
			a.ike.Down(i.Peer)
			return
		}
		if known && old.Fingerprint != p.Fingerprint {
			a.log.Info("AutoVPN: peer rolled its certificate (authenticated by the shared secret)", "dn", dn)
		}
		if len(i.SharedSecret) > 0 && len(p.SharedSecret) == 0 {
			if err := a.cfg.Store.SetSharedSecret(dn, i.SharedSecret); err == nil {
				a.log.Info("AutoVPN: shared secret made with the peer", "dn", dn)
			}
		}
		a.log.Info("AutoVPN: peer authenticated", "dn", dn, "state", p.State, "fingerprint", p.Fingerprint[:16],
			"by_shared_secret", i.BySharedSecret, "contact", strings.TrimSpace(i.Contact))
	})
}

// OnChange is to be called from the IKE daemon's OnChange: a failed
// AutoVPN negotiation sets the fallback verdict for the peer host.
func (a *AutoVPN) OnChange(peer string, up bool, err error) {
	if up {
		return
	}
	a.mu.Lock()
	c, ok := a.initiated[peer]
	delete(a.initiated, peer)
	a.mu.Unlock()
	if !ok {
		return
	}
	gw, host := c.Gateway, c.Remote
	a.eng.RemoveNATFor(host)
	if err == nil || errors.Is(err, ike.ErrDown) {
		return // deleted or stopped, not failed
	}
	state := policy.TrustState("")
	if p, ok := a.cfg.Store.ByAddr(gw); ok {
		state = p.State
	}
	v, ok := a.cfg.Fallback[state]
	if !ok {
		v = VerdictClear
	}
	a.log.Info("AutoVPN: no SA with the peer; falling back", "peer", host, "gateway", gw, "trust", state, "verdict", v, "err", err)
	a.eng.Decide(host, v, time.Now().Add(time.Hour))
}

// Stats are AutoVPN's counters.
type AutoVPNStats struct {
	Probe       probe.Stats
	Intercepted uint64
}

// Stats returns the counters.
func (a *AutoVPN) Stats() AutoVPNStats {
	return AutoVPNStats{Probe: a.gw.Stats(), Intercepted: a.intercepted.Load()}
}
