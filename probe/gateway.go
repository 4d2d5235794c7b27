package probe

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
)

// Defaults of the exchange.
const (
	// DefaultRetransmit is the wait before a message is sent again; each
	// message is sent at most three times (draft §6).
	DefaultRetransmit = time.Second
	maxSends          = 3
	// DefaultPeerInterval is how long a gateway waits before probing the
	// same peer host again (draft §6: at most once per 24 hours).
	DefaultPeerInterval = 24 * time.Hour
	// DefaultCompleteTTL is how long a completed probe waits for the
	// peer's IKE_SA_INIT.
	DefaultCompleteTTL = 30 * time.Second
	// maxProbes bounds the probes under way and completed; when full, a
	// new probe takes the place of the oldest one under way.
	maxProbes = 4096
)

// Flow is the addresses and ports of a fragment's packet.
type Flow struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// FlowOf reads the flow of a packet fragment (IP header and 8 octets).
func FlowOf(frag []byte) (Flow, error) {
	var f Flow
	var l4 []byte
	switch {
	case len(frag) >= ipview.IPv4MinimumSize && ipview.Version(frag) == 4:
		h := ipview.IPv4(frag)
		if ihl := h.HeaderLength(); ihl < ipview.IPv4MinimumSize || len(frag) < ihl+4 {
			return f, malformed("fragment shorter than its IPv4 header")
		}
		f.Src, f.Dst, f.Proto = h.Src(), h.Dst(), h.Protocol()
		l4 = h.Payload()
	case len(frag) >= ipview.IPv6FixedSize+4 && ipview.Version(frag) == 6:
		h := ipview.IPv6(frag)
		f.Src, f.Dst, f.Proto = h.Src(), h.Dst(), h.NextHeader()
		l4 = h.Payload()
	default:
		return f, malformed("fragment is not an IP packet")
	}
	if f.Proto == ipview.ProtoTCP || f.Proto == ipview.ProtoUDP || f.Proto == ipview.ProtoSCTP {
		f.SrcPort, f.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	}
	return f, nil
}

// Original returns the probe fragment for a reply: the header of a packet
// of the original direction, as the peer host would have sent it (the
// reply's addresses and ports swapped; for TCP the sequence number is the
// reply's acknowledgment number), with a correct IPv4 header checksum.
func Original(reply []byte) ([]byte, error) {
	frag := Fragment(reply)
	if _, err := FlowOf(frag); err != nil {
		return nil, err
	}
	var l4 []byte
	var proto uint8
	switch ipview.Version(frag) {
	case 4:
		h := ipview.IPv4(frag)
		s, d := h.Src().As4(), h.Dst().As4()
		h.SetSrc(d)
		h.SetDst(s)
		h.SetChecksum()
		l4, proto = h.Payload(), h.Protocol()
	case 6:
		h := ipview.IPv6(frag)
		s, d := h.Src().As16(), h.Dst().As16()
		h.SetSrc(d)
		h.SetDst(s)
		l4, proto = h.Payload(), h.NextHeader()
	}
	if proto == ipview.ProtoTCP || proto == ipview.ProtoUDP || proto == ipview.ProtoSCTP {
		sp, dp := [2]byte(l4[0:2]), [2]byte(l4[2:4])
		copy(l4[0:], dp[:])
		copy(l4[2:], sp[:])
	}
	if off := len(frag) - 8; proto == ipview.ProtoTCP && len(reply) >= off+12 {
		// The reply's acknowledgment number, at offset 8 of TCP.
		copy(l4[4:8], reply[off+8:off+12])
	}
	return frag, nil
}

// Sender sends probe messages from this gateway's own address; the engine
// implements it.
type Sender interface {
	// SendICMP sends an ICMPv4 message (encoded, checksum included) to dst.
	SendICMP(dst netip.Addr, icmp []byte) error
	// SendUDP sends a UDP datagram from the NAT-T port to dst.
	SendUDP(dst netip.AddrPort, msg []byte) error
}

// Completed is a probe exchange that ended well: what the IKE SA that
// follows may protect.
type Completed struct {
	// Gateway is the peer gateway (G2 for G1, G1 for G2).
	Gateway netip.Addr
	NonceR  []byte
	// Local is the single address this side proved it stands in front
	// of; Remote the peer's.
	Local, Remote netip.Addr
	// NAT is set when NAT-Detect showed a translation between the
	// gateways; Public is then the address and port the peer gateway saw
	// for our host's flow.
	NAT    bool
	Public netip.AddrPort
	// Flow is the triggering flow as our host sends it.
	Flow Flow
}

// Config configures a Gateway.
type Config struct {
	Sender Sender
	// Nonces mints and checks this gateway's nonces (a fresh set if nil).
	Nonces *Nonces
	// Live, as G1, reports whether a probe request's fragment (a packet
	// of our host's connection to the peer host, translated back by any
	// NAT) belongs to a connection our host opened; nil accepts all.
	Live func(Flow) bool
	// OnComplete, as G1, is told that a probe completed: start IKE with
	// c.Gateway carrying c.NonceR. It must not block.
	OnComplete func(c Completed)
	// Retransmit, PeerInterval and CompleteTTL override the defaults.
	Retransmit, PeerInterval, CompleteTTL time.Duration
	// Now, if set, is the clock (tests).
	Now    func() time.Time
	Logger *slog.Logger
}

// Stats count the gateway's messages.
type Stats struct {
	Requests, Responses, Completes uint64 // sent, retransmissions included
	Dropped                        uint64 // received and dropped: malformed, forged, stale, unexpected
	Limited                        uint64 // probes not sent: peer probed within PeerInterval, or its prefix's rate
	Unpaid                         uint64 // probes not sent: the flow brought fewer bytes than the probe costs
	Completed                      uint64 // exchanges completed (either role)
}

// Gateway runs both roles of the probe exchange: G2, which probes the
// peer of a reply its protected host sends, and G1, which answers probes
// for its hosts. Safe for concurrent use.
type Gateway struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	probing   exchanges            // G2: by Nonce-R
	completed exchanges            // G2: by Nonce-R, awaiting IKE_SA_INIT
	peers     peerTable            // G2: whom we probed, within PeerInterval
	prefixes  prefixLimiter        // G2: probes per source prefix
	answered  lru[string, natSeen] // G1: by Nonce-I, what NAT-Detect said
	closed    bool

	requests, responses, completes, dropped, limited, unpaid, done atomic.Uint64
}

// natSeen is G1's note of a request's NAT-Detect, until the Complete.
type natSeen struct {
	nat     bool
	public  netip.AddrPort
	expires time.Time
}

// probeState is one of G2's exchanges.
type probeState struct {
	peer     netip.Addr // H1, the probed host
	frag     []byte
	msg      *Message // the request, then the complete
	wire     []byte   // msg, encoded
	gateway  netip.Addr
	sends    int
	timer    *time.Timer
	deadline time.Time
	elem     *list.Element // in its exchanges' order
}

// exchanges are G2's exchanges of one stage, by Nonce-R, in the order
// they expire (they are added with the same lifetime).
type exchanges struct {
	m     map[string]*probeState
	order list.List // of *probeState, first to expire first
}

func (x *exchanges) len() int                      { return len(x.m) }
func (x *exchanges) get(nonceR []byte) *probeState { return x.m[string(nonceR)] }

func (x *exchanges) add(s *probeState) {
	if x.m == nil {
		x.m = map[string]*probeState{}
	}
	x.m[string(s.msg.NonceR)] = s
	s.elem = x.order.PushBack(s)
}

// remove forgets s and stops its retransmission.
func (x *exchanges) remove(s *probeState) {
	if s.timer != nil {
		s.timer.Stop()
	}
	if x.m[string(s.msg.NonceR)] == s {
		delete(x.m, string(s.msg.NonceR))
		x.order.Remove(s.elem)
	}
}

// oldest returns the exchange that expires first.
func (x *exchanges) oldest() *probeState {
	if e := x.order.Front(); e != nil {
		return e.Value.(*probeState)
	}
	return nil
}

// prune forgets the exchanges expired at now.
func (x *exchanges) prune(now time.Time) {
	for s := x.oldest(); s != nil && now.After(s.deadline); s = x.oldest() {
		x.remove(s)
	}
}

// NewGateway creates a Gateway.
func NewGateway(cfg Config) *Gateway {
	if cfg.Nonces == nil {
		cfg.Nonces = &Nonces{Now: cfg.Now}
	}
	if cfg.Retransmit <= 0 {
		cfg.Retransmit = DefaultRetransmit
	}
	if cfg.PeerInterval <= 0 {
		cfg.PeerInterval = DefaultPeerInterval
	}
	if cfg.CompleteTTL <= 0 {
		cfg.CompleteTTL = DefaultCompleteTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Gateway{cfg: cfg, log: cfg.Logger}
}

func (g *Gateway) now() time.Time {
	if g.cfg.Now != nil {
		return g.cfg.Now()
	}
	return time.Now()
}

// Stats returns the counters.
func (g *Gateway) Stats() Stats {
	return Stats{Requests: g.requests.Load(), Responses: g.responses.Load(), Completes: g.completes.Load(),
		Dropped: g.dropped.Load(), Limited: g.limited.Load(), Unpaid: g.unpaid.Load(), Completed: g.done.Load()}
}

// Close stops the retransmissions.
func (g *Gateway) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for _, x := range []*exchanges{&g.probing, &g.completed} {
		for _, s := range x.m {
			if s.timer != nil {
				s.timer.Stop()
			}
		}
	}
}

// Errors of Probe.
var (
	// ErrLimited refuses a probe of a peer probed within the peer
	// interval, or of a source prefix over its rate.
	ErrLimited = errors.New("probe: peer probed recently")
	// ErrUnpaid refuses a probe that would send more bytes than the
	// flow that triggered it brought.
	ErrUnpaid = errors.New("probe: the flow is too small to pay for a probe")
)

// ProvenPeer, as Probe's paid, says that the peer host proved it
// receives at its address (it completed a TCP handshake with our host):
// a probe then reflects nothing onto anyone else, whatever its size.
const ProvenPeer = math.MaxInt

// minProbeCost and maxProbeCost bound what a probe costs, in bytes of IP
// packets sent maxSends times: the smallest IPv6 request (IP, UDP, the
// preamble, Version, Nonce-R and the 48-octet fragment), and the largest
// IPv4 one (IP, ICMP, the 128-octet original datagram, the extension
// header, Version, Nonce-R and NAT-Detect).
const (
	minProbeCost = maxSends * (40 + 8 + PreambleLen + 7 + 4 + MinNonce + 4 + 48)
	maxProbeCost = maxSends * (20 + icmpHeaderLen + minOriginal + 4 + 7 + 4 + MaxNonce + 4 + natDetectLen)
)

// Probe starts the exchange as G2 for reply, a packet our protected host
// sends to a peer host with no SA: a Probe Request goes to the peer host
// (ICMP for IPv4, UDP/4500 for IPv6), sent again up to twice until the
// peer's gateway answers.
//
// paid is the number of bytes (of IP packets) the peer host has sent us
// in the reply's flow, or ProvenPeer. A probe whose messages,
// retransmissions included, would cost as much or more is refused with
// ErrUnpaid: whoever triggers probes with spoofed sources gets fewer
// bytes reflected than it sent (a spoofed SYN alone never pays). A peer probed within the peer
// interval, or a source prefix over its token bucket, gets ErrLimited.
func (g *Gateway) Probe(reply []byte, paid int) error {
	if paid <= minProbeCost {
		g.unpaid.Add(1)
		return ErrUnpaid
	}
	frag, err := Original(reply)
	if err != nil {
		return err
	}
	// The fragment is of the peer host's (original) direction, as an ICMP
	// error about its packet would carry: NATs relate it to the
	// connection and translate it back to the host behind them.
	f, err := FlowOf(frag)
	if err != nil {
		return err
	}
	m := &Message{Type: Request, Fragment: frag}
	if f.Src.Is4() {
		// The peer host's address and port as we see them.
		m.NAT = &NATDetect{Addr: f.Src, Port: f.SrcPort}
	}
	if paid <= maxProbeCost {
		m.NonceR = make([]byte, 1+nonceMACLen) // sized for the cost; minted below
		if cost := maxSends * wireLen(f.Src, m); paid <= cost {
			g.unpaid.Add(1)
			return ErrUnpaid
		}
	}
	now := g.now()
	g.mu.Lock()
	if last, ok := g.peers.last(f.Src); ok && now.Sub(last) < g.cfg.PeerInterval || !g.prefixes.allow(f.Src, now) {
		g.mu.Unlock()
		g.limited.Add(1)
		return ErrLimited
	}
	g.pruneLocked(now)
	if g.probing.len()+g.completed.len() >= maxProbes && !g.evictProbeLocked() {
		g.mu.Unlock()
		g.limited.Add(1)
		return ErrLimited
	}
	g.peers.probed(f.Src, now, g.cfg.PeerInterval)
	m.NonceR = g.cfg.Nonces.Mint(f.Src, frag)
	s := &probeState{peer: f.Src, frag: frag, msg: m, deadline: now.Add(time.Duration(maxSends) * g.cfg.Retransmit)}
	g.probing.add(s)
	g.sendLocked(s)
	g.mu.Unlock()
	g.log.Info("AutoVPN: probing the peer of a reply", "peer", f.Src, "host", f.Dst)
	return nil
}

// wireLen is the size of m's packet to dst: IP header included.
func wireLen(dst netip.Addr, m *Message) int {
	if dst.Is4() {
		return 20 + len(m.AppendICMP(nil))
	}
	return 40 + 8 + len(m.AppendUDP(nil))
}

// evictProbeLocked makes room for a probe: the probe under way that
// expires first goes (completed ones, which the peer answered, stay),
// and its peer is forgotten too, so that its next reply probes it again
// rather than leaving it unprobed for the peer interval.
func (g *Gateway) evictProbeLocked() bool {
	s := g.probing.oldest()
	if s == nil {
		return false
	}
	g.probing.remove(s)
	g.peers.tried.remove(s.peer)
	return true
}

// sendLocked sends s.msg and arms its retransmission.
func (g *Gateway) sendLocked(s *probeState) {
	if g.closed {
		return
	}
	s.sends++
	to := s.peer
	if s.msg.Type == Complete {
		to = s.gateway
		g.completes.Add(1)
	} else {
		g.requests.Add(1)
	}
	// IPv4 carries the message in ICMP, IPv6 in UDP/4500 (see README).
	if to.Is4() {
		if s.wire == nil {
			s.wire = s.msg.AppendICMP(nil)
		}
		g.cfg.Sender.SendICMP(to, s.wire)
	} else {
		if s.wire == nil {
			s.wire = s.msg.AppendUDP(nil)
		}
		g.cfg.Sender.SendUDP(netip.AddrPortFrom(to, 4500), s.wire)
	}
	if s.sends < maxSends {
		s.timer = time.AfterFunc(g.cfg.Retransmit, func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if s.msg.Type == Request && g.probing.get(s.msg.NonceR) == s ||
				s.msg.Type == Complete && g.completed.get(s.msg.NonceR) == s {
				g.sendLocked(s)
			}
		})
	}
}

// pruneLocked forgets expired exchanges.
func (g *Gateway) pruneLocked(now time.Time) {
	g.probing.prune(now)
	g.completed.prune(now)
}

// HandleICMP takes an ICMPv4 message (from the ICMP header on) that came
// from src and was addressed to dst. It returns false for ICMP that is not
// a probe, which the caller passes on; probes are consumed, and dropped
// silently when unacceptable.
func (g *Gateway) HandleICMP(icmp []byte, src, dst netip.Addr) bool {
	m, err := ParseICMP(icmp)
	if errors.Is(err, ErrNotProbe) {
		return false
	}
	if err != nil {
		g.drop("malformed ICMP probe", src, err)
		return true
	}
	g.handle(m, netip.AddrPortFrom(src, 0), dst)
	return true
}

// HandleUDP takes a UDP/4500 probe message (preamble included) from src,
// addressed to dst.
func (g *Gateway) HandleUDP(msg []byte, src netip.AddrPort, dst netip.Addr) {
	m, err := ParseUDP(msg)
	if err != nil {
		g.drop("malformed UDP probe", src.Addr(), err)
		return
	}
	g.handle(m, src, dst)
}

func (g *Gateway) drop(why string, src netip.Addr, err error) {
	g.dropped.Add(1)
	g.log.Debug("AutoVPN: dropping "+why, "from", src, "err", err)
}

func (g *Gateway) handle(m *Message, src netip.AddrPort, dst netip.Addr) {
	switch m.Type {
	case Request:
		g.onRequest(m, src.Addr())
	case Response:
		g.onResponse(m, src, dst)
	case Complete:
		g.onComplete(m, src.Addr(), dst)
	}
}

// onRequest, as G1: a peer gateway probes one of our hosts. Answer with a
// Probe Response addressed to the peer host, statelessly.
func (g *Gateway) onRequest(m *Message, from netip.Addr) {
	f, err := FlowOf(m.Fragment)
	if err != nil {
		g.drop("probe request", from, err)
		return
	}
	if g.cfg.Live != nil && !g.cfg.Live(f) {
		g.drop("probe request for no live connection", from, nil)
		return
	}
	r := &Message{Type: Response, NonceI: g.cfg.Nonces.Mint(from, m.Fragment), NonceR: m.NonceR}
	// Remember the answer until its Complete (which must come once, for
	// a request we answered). NAT-Detect is what G2 saw as our host's
	// address and port; the fragment, rewritten by a NAT on the way, what
	// our host uses.
	{
		seen := natSeen{expires: g.now().Add(g.cfg.CompleteTTL)}
		if m.NAT != nil {
			seen.public = netip.AddrPortFrom(m.NAT.Addr, m.NAT.Port)
			seen.nat = m.NAT.Addr != f.Src || m.NAT.Port != f.SrcPort
		}
		g.mu.Lock()
		// Full: the oldest answer goes (they are added with the same
		// lifetime, so it is also the first to expire).
		if g.answered.len() >= maxProbes {
			k, _, _ := g.answered.oldest()
			g.answered.remove(k)
		}
		g.answered.put(string(r.NonceI), seen)
		g.mu.Unlock()
	}
	g.responses.Add(1)
	g.cfg.Sender.SendUDP(netip.AddrPortFrom(f.Dst, 4500), r.AppendUDP(nil))
	g.log.Info("AutoVPN: answering a probe", "gateway", from, "host", f.Src, "peer", f.Dst)
}

// onResponse, as G2: the peer's gateway answered our request (addressed
// to our host, dst). Check Nonce-R and send Probe Complete to it.
func (g *Gateway) onResponse(m *Message, from netip.AddrPort, dst netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.probing.get(m.NonceR)
	if s == nil {
		if c := g.completed.get(m.NonceR); c != nil && bytes.Equal(c.msg.NonceI, m.NonceI) && c.gateway == from.Addr() && c.sends < maxSends {
			g.sendLocked(c) // our Complete was lost: the response came again
			return
		}
		g.dropLocked("probe response with an unknown or stale Nonce-R", from.Addr())
		return
	}
	f, _ := FlowOf(s.frag)
	// The response must be addressed to our host (the reply's sender);
	// dst is unknown when it reached our own socket (host mode).
	if !g.cfg.Nonces.Valid(m.NonceR, s.peer, s.frag) || dst.IsValid() && f.Dst != dst.Unmap() {
		g.dropLocked("probe response with an invalid Nonce-R", from.Addr())
		return
	}
	g.probing.remove(s)
	g.peers.answer(s.peer)
	c := &probeState{peer: s.peer, frag: s.frag, gateway: from.Addr(), deadline: g.now().Add(g.cfg.CompleteTTL),
		msg: &Message{Type: Complete, NonceI: m.NonceI, NonceR: m.NonceR, Fragment: s.frag}}
	g.completed.add(c)
	g.sendLocked(c)
	g.log.Info("AutoVPN: probe answered; waiting for IKE", "gateway", from.Addr(), "peer", s.peer)
}

func (g *Gateway) dropLocked(why string, src netip.Addr) {
	g.dropped.Add(1)
	g.log.Debug("AutoVPN: dropping "+why, "from", src)
}

// onComplete, as G1: check our Nonce-I and start IKE.
func (g *Gateway) onComplete(m *Message, from, dst netip.Addr) {
	if !g.cfg.Nonces.Valid(m.NonceI, from, m.Fragment) {
		g.drop("probe complete with an invalid Nonce-I", from, nil)
		return
	}
	f, err := FlowOf(m.Fragment)
	if err != nil {
		g.drop("probe complete", from, err)
		return
	}
	g.mu.Lock()
	seen, ok := g.answered.get(string(m.NonceI))
	g.answered.remove(string(m.NonceI))
	g.mu.Unlock()
	if !ok || g.now().After(seen.expires) {
		g.drop("probe complete replayed, or for no request we answered", from, nil)
		return
	}
	g.done.Add(1)
	c := Completed{Gateway: from, NonceR: m.NonceR, Local: f.Src, Remote: f.Dst, Flow: f}
	if seen.nat {
		// Behind a NAT: the peer knows our host by the public address,
		// which is the one we proved we stand in front of.
		c.NAT, c.Public, c.Local = true, seen.public, seen.public.Addr()
	}
	if g.cfg.OnComplete != nil {
		g.cfg.OnComplete(c)
	}
}

// Lookup, as G2, checks the AutoVPN Nonce of an IKE_SA_INIT from gateway
// without spending it: it must be the Nonce-R of a probe completed with
// that gateway. It returns what the IKE SA may protect (Local: our host;
// Remote: the peer host). Accept spends the nonce, once the IKE_SA_INIT
// is otherwise acceptable.
func (g *Gateway) Lookup(nonceR []byte, gateway netip.Addr) (Completed, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.completedLocked(nonceR, gateway, false)
}

// Accept, as G2, spends the AutoVPN Nonce that Lookup found: a nonce is
// good for one IKE SA.
func (g *Gateway) Accept(nonceR []byte, gateway netip.Addr) (Completed, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.completedLocked(nonceR, gateway, true)
}

func (g *Gateway) completedLocked(nonceR []byte, gateway netip.Addr, spend bool) (Completed, bool) {
	c := g.completed.get(nonceR)
	if c == nil || c.gateway != gateway.Unmap() || g.now().After(c.deadline) {
		g.dropped.Add(1)
		return Completed{}, false
	}
	if spend {
		g.completed.remove(c)
		g.done.Add(1)
	}
	f, _ := FlowOf(c.frag)
	return Completed{Gateway: gateway, NonceR: bytes.Clone(nonceR), Local: f.Dst, Remote: f.Src,
		Flow: Flow{Src: f.Dst, Dst: f.Src, Proto: f.Proto, SrcPort: f.DstPort, DstPort: f.SrcPort}}, true
}
