package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	conn "github.com/oevpn/oevpn/internal/wgconn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// Implementation constants.
const (
	// maxPacket is the largest IP packet or UDP datagram.
	maxPacket = 65535
	// maxDatagram is the largest outer datagram (ESP, or IKE on either
	// port) received whole; longer ones are cut short, and dropped as
	// they fail to decrypt or parse. ESP packets are about the peer's
	// MTU; longer IKE messages come fragmented (RFC 7383).
	maxDatagram = 16 << 10
	// groSlots is the number of receive buffers at the end of a batch
	// that take the coalesced datagrams of UDP GRO (up to maxPacket):
	// the transport reads into them and splits into the others.
	groSlots = 2
	// writeOffset is where packets start in the buffers handed to
	// tun.Device.Write: room for the virtio-net header of Linux TUN
	// offloads.
	writeOffset = 16
	// tickInterval is how often time-based SA lifetimes are checked.
	tickInterval = time.Second
)

// Config configures an Engine.
type Config struct {
	// Device is the packet device; the engine owns it and closes it.
	Device tun.Device
	// IKEPort and NATTPort are the UDP ports to listen on (500 and 4500
	// in production); 0 picks a free port (tests).
	IKEPort, NATTPort uint16
	// Outside is applied to the outer sockets (IKE, ESP) so that they
	// stay out of the TUN; the zero value applies nothing.
	Outside Outside
	// Logger receives the engine's log; nil discards it.
	Logger *slog.Logger
	// NewBind creates the UDP transport for one port; nil means
	// conn.NewStdNetBind.
	NewBind func() conn.Bind
	// OnIKE, if set, receives each IKE message (without the non-ESP
	// marker), the address it came from and the local address it was
	// sent to (invalid if the transport does not tell); natt tells
	// whether it came on the NAT-T port. msg is only valid during the
	// call.
	OnIKE func(msg []byte, from netip.AddrPort, to netip.Addr, natt bool)
	// Clear, if set, sends packets that leave in the clear (the engine
	// closes it); without it they are dropped and counted as NoSA.
	Clear ClearPath
	// ForwardDial, if set and Clear is not, makes the clear path a
	// forwarder: TCP and UDP flows are terminated in a userspace stack and
	// re-originated with ForwardDial (netstack mode, or where raw sockets
	// are unavailable).
	ForwardDial DialFunc
	// Bypass, if set, routes destinations around the device while the
	// negative cache sends them in the clear (an OSDevice does).
	Bypass interface {
		AddBypass(netip.Addr) error
		RemoveBypass(netip.Addr) error
	}
	// OnSAEvent, if set, is told of lifetime events. It runs on the
	// engine's timer goroutine, never on the datapath. After a hard
	// expiry the engine removes the pair itself.
	OnSAEvent func(*SAPair, esp.Event)
}

// PairConfig describes an SA pair to install: one outbound and one inbound
// SA with the same peer and traffic selectors.
type PairConfig struct {
	// Peer is the peer's outer address and UDP port (4500).
	Peer netip.AddrPort
	// Local and Remote are the traffic selectors: outbound packets from
	// Local to Remote use the pair; inbound packets must come from Remote
	// and go to Local, or they are dropped.
	Local, Remote policy.Selectors
	Out, In       esp.Config
	// Deferred keeps outbound traffic on an older pair with the same
	// selectors until a packet arrives on this one (or the older one
	// goes): the responder of a rekey, whose peer installs its inbound SA
	// only when our answer arrives, must not send first (RFC 7296 §2.8).
	Deferred bool
	// Unauthenticated marks a pair whose peer did not authenticate
	// (AUTH_NULL): it carries traffic only for addresses that
	// MayBeUnauthenticated allows, and is refused or barred for the
	// others. For a private-or-clear address it carries outbound traffic
	// only once opportunism decided that the address would go clear
	// (Decide): only then is it better than the alternative.
	Unauthenticated bool
	// Owner becomes the pair's Owner, set before the pair is published.
	Owner any
}

// SAPair is an installed pair of SAs.
type SAPair struct {
	// What the datapath reads for every packet comes first, within the
	// first two cache lines: with many pairs, a packet meets a cold one.
	ready atomic.Bool // may carry outbound traffic (see PairConfig.Deferred)
	// barred is set, once and for good, on an unauthenticated pair
	// whose remote address came to need authentication: it carries
	// nothing more, either way.
	barred atomic.Bool
	peer4  bool // the peer's outer address is IPv4
	unauth bool // PairConfig.Unauthenticated

	Out, In       *esp.SA
	Remote, Local policy.Selectors
	ep            conn.Endpoint
	Peer          netip.AddrPort

	// Owner is the control plane's object for the pair (an *ike.ChildSA).
	Owner any

	// admitted is set on an unauthenticated pair for a private-or-clear
	// address once Decide sent that address clear: it may then carry
	// the address's outbound traffic.
	admitted atomic.Bool
	seq      uint64 // install order: newer pairs win outbound (make-before-break)
	removed  atomic.Bool
	routed   bool // in the route table; guarded by Engine.mu
	// heard is when (UnixNano, read once per received batch) In last
	// accepted a packet: dead-peer detection times its checks from it.
	heard atomic.Int64
}

// Stats are the engine's packet counters (per-SA counters are on the SAs).
type Stats struct {
	TxPackets      uint64 // ESP packets sent
	RxPackets      uint64 // ESP packets decrypted and delivered
	NoSA           uint64 // outbound packets without an SA, dropped
	Clear          uint64 // outbound packets sent in the clear by policy
	Malformed      uint64 // packets from the device or peers that failed to parse
	UnknownSPI     uint64 // ESP packets for no installed SA
	DecryptErrors  uint64 // ESP packets that failed Open (replay, integrity, …)
	SelectorDrops  uint64 // decrypted packets outside the SA's selectors
	SealErrors     uint64 // outbound packets the SA refused (expired, …)
	SendErrors     uint64 // failed batch sends
	ControlDropped uint64 // IKE or probe messages with no handler
	Blocked        uint64 // outbound packets dropped by policy (block, or private without an SA)
	Keepalives     uint64 // NAT keepalives received
	// NullRefused counts unauthenticated peers (AUTH_NULL) refused for an
	// address that must be authenticated (see MayBeUnauthenticated): by
	// the opportunistic responder, at installation, or barred later.
	NullRefused uint64
	// NullDrops counts packets, either way, on an unauthenticated SA
	// barred because its address came to need authentication.
	NullDrops uint64
}

type stats struct {
	txPackets, rxPackets, noSA, malformed, unknownSPI, decryptErrors,
	selectorDrops, sealErrors, sendErrors, controlDropped, keepalives, blocked, clear,
	nullRefused, nullDrops atomic.Uint64
}

// Engine runs the datapath.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	dev    tun.Device
	ike    conn.Bind
	natt   conn.Bind
	ports  [2]uint16
	spis   esp.Table[*SAPair]
	routes atomic.Pointer[routeTable]
	stats  stats
	events chan saEvent

	mu    sync.Mutex // control plane: guards the fields below; never taken by the datapath
	pairs map[*SAPair]struct{}
	// unauth indexes the unauthenticated pairs by the single addresses
	// of their remote selectors.
	unauth  map[netip.Addr][]*SAPair
	traps   map[string]*trap
	nextSeq uint64

	onIKE     atomic.Pointer[func(msg []byte, from netip.AddrPort, to netip.Addr, natt bool)]
	onSAEvent atomic.Pointer[func(*SAPair, esp.Event)]
	onAcquire atomic.Pointer[func(name string)]
	classes   atomic.Pointer[policy.Classes]
	onOE      atomic.Pointer[func(src, dst netip.Addr, class policy.Class)]
	keyed     atomic.Pointer[func(netip.Addr) bool] // see SetKeyed
	oe        sync.Map                              // netip.Addr → *oeDest: opportunistic destinations without an SA
	oeHeld    atomic.Int64
	oeDests   atomic.Int64
	onProbe   atomic.Pointer[func(msg []byte, from netip.AddrPort, to netip.Addr)]
	autovpn   atomic.Pointer[AutoVPN]
	nat       atomic.Pointer[natTable] // AutoVPN behind a NAT: translations of the hosts' traffic
	clear     ClearPath

	// onUnknownSPI is told of ESP packets for SPIs never allocated.
	onUnknownSPI atomic.Pointer[func(spi uint32, from netip.AddrPort)]

	closeOnce sync.Once
	closing   chan struct{}
	wg        sync.WaitGroup
	// inbound counts the routines that write decrypted packets to the
	// device, and devMu guards the forwarder's writes: the device is
	// closed only when no write is under way (a netstack device panics
	// on a packet it answers while closing).
	inbound sync.WaitGroup
	devMu   sync.RWMutex
}

type saEvent struct {
	pair *SAPair
	ev   esp.Event
}

// writeDevice writes one packet to the device (the clear forwarder's
// answers); it is not on the fast path.
func (e *Engine) writeDevice(pkt []byte) {
	buf := make([]byte, writeOffset+len(pkt))
	copy(buf[writeOffset:], pkt)
	e.devMu.RLock()
	defer e.devMu.RUnlock()
	if e.closed() {
		return
	}
	if _, err := e.dev.Write([][]byte{buf}, writeOffset); err != nil {
		e.log.Debug("writing a forwarded packet to the device failed", "err", err)
	}
}

// ErrClosed is returned by operations on a closed engine.
var ErrClosed = errors.New("tunnel: engine closed")

// New opens the transport and starts the datapath.
func New(cfg Config) (*Engine, error) {
	if cfg.Device == nil {
		return nil, errors.New("tunnel: no device")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NewBind == nil {
		cfg.NewBind = conn.NewStdNetBind
	}
	e := &Engine{
		cfg:     cfg,
		log:     cfg.Logger,
		dev:     cfg.Device,
		ike:     cfg.NewBind(),
		natt:    cfg.NewBind(),
		events:  make(chan saEvent, 1024),
		pairs:   make(map[*SAPair]struct{}),
		unauth:  make(map[netip.Addr][]*SAPair),
		traps:   make(map[string]*trap),
		closing: make(chan struct{}),
		clear:   cfg.Clear,
	}
	e.routes.Store(&routeTable{})
	// fail undoes what New did so far; the engine owns Clear.
	fail := func(err error) (*Engine, error) {
		e.ike.Close()
		e.natt.Close()
		if e.clear != nil {
			e.clear.Close()
		}
		return nil, err
	}
	if e.clear == nil && cfg.ForwardDial != nil {
		mtu, err := cfg.Device.MTU()
		if err != nil || mtu <= 0 {
			mtu = 1420
		}
		fwd, err := newForwarder(mtu, cfg.ForwardDial, e.writeDevice)
		if err != nil {
			return fail(err)
		}
		e.clear = fwd
	}
	if cfg.OnIKE != nil {
		e.onIKE.Store(&cfg.OnIKE)
	}
	if cfg.OnSAEvent != nil {
		e.onSAEvent.Store(&cfg.OnSAEvent)
	}
	ikeFns, ikePort, err := e.ike.Open(cfg.IKEPort)
	if err != nil {
		return fail(fmt.Errorf("tunnel: listening on IKE port %d: %w", cfg.IKEPort, err))
	}
	nattFns, nattPort, err := e.natt.Open(cfg.NATTPort)
	if err != nil {
		return fail(fmt.Errorf("tunnel: listening on NAT-T port %d: %w", cfg.NATTPort, err))
	}
	e.ports = [2]uint16{ikePort, nattPort}
	if err := cfg.Outside.applyBinds(e.ike, e.natt); err != nil {
		return fail(fmt.Errorf("tunnel: outer sockets: %w", err))
	}
	e.inbound.Add(len(ikeFns) + len(nattFns))
	for _, fn := range ikeFns {
		e.start(func() { defer e.inbound.Done(); e.routineInbound(fn, e.ike, false) })
	}
	for _, fn := range nattFns {
		e.start(func() { defer e.inbound.Done(); e.routineInbound(fn, e.natt, true) })
	}
	e.start(e.routineOutbound)
	e.start(e.routineTimers)
	e.start(e.routineDeviceEvents)
	e.log.Info("datapath up", "ike_port", ikePort, "natt_port", nattPort, "batch", e.dev.BatchSize())
	return e, nil
}

func (e *Engine) start(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

// Ports returns the UDP ports the engine listens on: IKE and NAT-T.
func (e *Engine) Ports() (ike, natt uint16) { return e.ports[0], e.ports[1] }

// Close stops the datapath, closes the sockets and the device, and waits
// for every goroutine to finish. The device is closed last, once nothing
// writes to it any more.
func (e *Engine) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.devMu.Lock()
		close(e.closing)
		e.devMu.Unlock()
		err = errors.Join(e.ike.Close(), e.natt.Close())
		e.inbound.Wait()
		err = errors.Join(err, e.dev.Close())
		if e.clear != nil {
			e.clear.Close()
		}
		e.wg.Wait()
	})
	return err
}

func (e *Engine) closed() bool {
	select {
	case <-e.closing:
		return true
	default:
		return false
	}
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	s := &e.stats
	return Stats{
		TxPackets: s.txPackets.Load(), RxPackets: s.rxPackets.Load(), NoSA: s.noSA.Load(), Clear: s.clear.Load(),
		Malformed: s.malformed.Load(), UnknownSPI: s.unknownSPI.Load(), DecryptErrors: s.decryptErrors.Load(),
		SelectorDrops: s.selectorDrops.Load(), SealErrors: s.sealErrors.Load(), SendErrors: s.sendErrors.Load(),
		ControlDropped: s.controlDropped.Load(), Keepalives: s.keepalives.Load(), Blocked: s.blocked.Load(),
		NullRefused: s.nullRefused.Load(), NullDrops: s.nullDrops.Load(),
	}
}

// Install keys and installs an SA pair. The inbound SPI must be free.
func (e *Engine) Install(pc PairConfig) (*SAPair, error) {
	if e.closed() {
		return nil, ErrClosed
	}
	if !pc.Peer.IsValid() {
		return nil, errors.New("tunnel: SA pair without a peer address")
	}
	if len(pc.Local) == 0 || len(pc.Remote) == 0 {
		return nil, errors.New("tunnel: SA pair without traffic selectors")
	}
	p := &SAPair{Peer: pc.Peer, Local: pc.Local, Remote: pc.Remote, unauth: pc.Unauthenticated, Owner: pc.Owner}
	p.ready.Store(!pc.Deferred)
	onEvent := func(_ *esp.SA, ev esp.Event) {
		select {
		case e.events <- saEvent{p, ev}:
		default:
			go func() { e.events <- saEvent{p, ev} }()
		}
	}
	pc.Out.OnEvent, pc.In.OnEvent = onEvent, onEvent
	var err error
	if p.Out, err = esp.NewSA(pc.Out); err != nil {
		return nil, fmt.Errorf("tunnel: outbound SA: %w", err)
	}
	if p.In, err = esp.NewSA(pc.In); err != nil {
		return nil, fmt.Errorf("tunnel: inbound SA: %w", err)
	}
	peer := netip.AddrPortFrom(pc.Peer.Addr().Unmap(), pc.Peer.Port())
	p.peer4 = peer.Addr().Is4()
	if p.ep, err = e.natt.ParseEndpoint(peer.String()); err != nil {
		return nil, fmt.Errorf("tunnel: peer %v: %w", pc.Peer, err)
	}
	routed, err := e.insert(p)
	if err != nil {
		return nil, err
	}
	if routed {
		// Not an unauthenticated pair that waits: held packets are never
		// sent where the datapath would not send them.
		e.flushHeld(p)
	}
	e.log.Info("SA pair installed", "peer", p.Peer, "spi_in", fmt.Sprintf("%#08x", p.In.SPI()),
		"spi_out", fmt.Sprintf("%#08x", p.Out.SPI()), "transform", p.Out.Transform(), "local", p.Local, "remote", p.Remote)
	return p, nil
}

// insert adds p to the tables; it reports whether p carries outbound
// traffic (an unauthenticated pair may have to wait).
func (e *Engine) insert(p *SAPair) (routed bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p.unauth {
		if a, ok := e.refusesUnauth(p); ok {
			e.stats.nullRefused.Add(1)
			return false, fmt.Errorf("%w: %v", ErrMustAuthenticate, a)
		}
	}
	insert := e.spis.Insert
	if old, ok := e.spis.Lookup(p.In.SPI()); ok && old == nil {
		insert = e.spis.Replace // an SPI the control plane reserved
	}
	if err := insert(p.In.SPI(), p); err != nil {
		return false, fmt.Errorf("tunnel: inbound SA: %w", err)
	}
	e.nextSeq++
	p.seq = e.nextSeq
	e.pairs[p] = struct{}{}
	if !p.unauth {
		e.routeLocked(p)
		// Unauthenticated pairs for the addresses p carries may carry
		// them no more.
		e.reviewUnauthLocked(p.Remote)
		return true, nil
	}
	for _, a := range singles(p.Remote) {
		e.unauth[a] = append(e.unauth[a], p)
	}
	e.reviewLocked(p)
	return p.routed, nil
}

// routeLocked adds p to the route table.
func (e *Engine) routeLocked(p *SAPair) {
	if !p.routed {
		p.routed = true
		e.routes.Store(e.routes.Load().with(p))
	}
}

// unrouteLocked removes p from the route table.
func (e *Engine) unrouteLocked(p *SAPair) {
	if p.routed {
		p.routed = false
		e.routes.Store(e.routes.Load().without(p))
	}
}

// singles returns the addresses of the selectors of ss that cover one.
func singles(ss policy.Selectors) []netip.Addr {
	var l []netip.Addr
	for _, s := range ss {
		if a, ok := s.Single(); ok {
			l = append(l, a.Unmap())
		}
	}
	return l
}

// Remove uninstalls an SA pair; it reports whether the pair was installed.
func (e *Engine) Remove(p *SAPair) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.pairs[p]; !ok {
		return false
	}
	delete(e.pairs, p)
	p.removed.Store(true)
	e.spis.Remove(p.In.SPI())
	e.unrouteLocked(p)
	if p.unauth {
		for _, a := range singles(p.Remote) {
			l := slices.DeleteFunc(slices.Clone(e.unauth[a]), func(q *SAPair) bool { return q == p })
			if len(l) == 0 {
				delete(e.unauth, a)
			} else {
				e.unauth[a] = l
			}
		}
	}
	e.log.Info("SA pair removed", "peer", p.Peer, "spi_in", fmt.Sprintf("%#08x", p.In.SPI()))
	return true
}

// Pairs returns the installed SA pairs.
func (e *Engine) Pairs() []*SAPair {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := make([]*SAPair, 0, len(e.pairs))
	for p := range e.pairs {
		l = append(l, p)
	}
	return l
}

// ErrMustAuthenticate refuses an unauthenticated SA pair for an address
// that must be authenticated.
var ErrMustAuthenticate = errors.New("tunnel: an unauthenticated peer may not carry traffic for this address")

// SetKeyed sets the function that tells whether an address is known to
// publish a key (opportunism remembers them): such an address is never
// carried by an unauthenticated SA. Call Reconsider when it changes its
// answer for an address.
func (e *Engine) SetKeyed(f func(netip.Addr) bool) { e.keyed.Store(&f) }

// MayBeUnauthenticated reports whether an unauthenticated peer (AUTH_NULL)
// may carry traffic to and from a. It is the one place that decides, for
// every path that accepts such a peer (the opportunistic responder, the
// installation of an SA pair, the outbound lookup): it may not if a is of
// the private class (by prefix or by an exception), is known to publish a
// key, or is covered by an authenticated SA pair or a configured tunnel's
// trap.
func (e *Engine) MayBeUnauthenticated(a netip.Addr) bool {
	return e.mayBeUnauth(a.Unmap(), e.routes.Load())
}

// mayBeUnauth is MayBeUnauthenticated against the route table rt.
func (e *Engine) mayBeUnauth(a netip.Addr, rt *routeTable) bool {
	if c := e.classes.Load(); c != nil && c.RequiresAuth(a) {
		return false
	}
	if f := e.keyed.Load(); f != nil && *f != nil && (*f)(a) {
		return false
	}
	if rt.authenticated(a) {
		return false
	}
	for _, t := range rt.traps {
		if t.remote.Contains(a) {
			return false
		}
	}
	return true
}

// refusesUnauth returns an address of the unauthenticated pair p's remote
// selectors that may not be unauthenticated. Only single addresses are
// checked: an opportunistic pair has no other, and a configured tunnel's
// wider selectors are the operator's choice.
func (e *Engine) refusesUnauth(p *SAPair) (netip.Addr, bool) {
	rt := e.routes.Load()
	for _, a := range singles(p.Remote) {
		if !e.mayBeUnauth(a, rt) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// reviewLocked decides again about the unauthenticated pair p: it bars p
// for good if one of its addresses must now be authenticated, and routes
// outbound traffic to it once it need not wait any more.
func (e *Engine) reviewLocked(p *SAPair) {
	if p.barred.Load() {
		return
	}
	if a, refused := e.refusesUnauth(p); refused {
		p.barred.Store(true)
		e.unrouteLocked(p)
		e.stats.nullRefused.Add(1)
		e.log.Warn("unauthenticated SA pair barred: its address must be authenticated", "peer", p.Peer, "addr", a,
			"spi_in", fmt.Sprintf("%#08x", p.In.SPI()))
		return
	}
	if !e.unauthWaits(p) {
		e.routeLocked(p)
	}
}

// reviewUnauthLocked reviews the unauthenticated pairs with an address in
// ss: by address if the ranges are smaller than the index, or else all.
func (e *Engine) reviewUnauthLocked(ss policy.Selectors) {
	if len(e.unauth) == 0 {
		return
	}
	var addrs []netip.Addr
	for _, s := range ss {
		a := s.Start.Unmap()
		for ; len(addrs) <= len(e.unauth); a = a.Next() {
			addrs = append(addrs, a)
			if a == s.End.Unmap() {
				break
			}
		}
	}
	if len(addrs) > len(e.unauth) {
		e.reviewAllUnauthLocked()
		return
	}
	for _, a := range addrs {
		for _, p := range e.unauth[a] {
			e.reviewLocked(p)
		}
	}
}

// reviewAllUnauthLocked reviews every unauthenticated pair.
func (e *Engine) reviewAllUnauthLocked() {
	for _, l := range e.unauth {
		for _, p := range l {
			e.reviewLocked(p)
		}
	}
}

// Reconsider bars the unauthenticated SA pairs that carry a if a may no
// longer be unauthenticated (it was found to publish a key).
func (e *Engine) Reconsider(a netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.unauth[a.Unmap()] {
		e.reviewLocked(p)
	}
}

// admitUnauth admits the unauthenticated pairs for dst, which opportunism
// sends clear, to carry its outbound traffic, and returns the newest, or
// nil if there is none that may.
func (e *Engine) admitUnauth(dst netip.Addr) *SAPair {
	e.mu.Lock()
	defer e.mu.Unlock()
	var newest *SAPair
	for _, p := range e.unauth[dst] {
		if a, ok := singleRemote(p); ok && a == dst && !p.barred.Load() {
			p.admitted.Store(true)
			if newest == nil || p.seq > newest.seq {
				newest = p
			}
		}
	}
	if newest == nil {
		return nil
	}
	for _, p := range e.unauth[dst] {
		e.reviewLocked(p)
	}
	if newest.barred.Load() {
		return nil
	}
	return newest
}

// singleRemote returns the address of a pair whose remote selectors are
// one address.
func singleRemote(p *SAPair) (netip.Addr, bool) {
	if len(p.Remote) != 1 {
		return netip.Addr{}, false
	}
	a, ok := p.Remote[0].Single()
	return a.Unmap(), ok
}

// unauthWaits reports whether the unauthenticated pair p, allowed for its
// address, must still wait before it carries outbound traffic: its
// address is private-or-clear (opportunism looks it up first: it may
// publish a key) and Decide has not sent it clear. A pair rekeying an
// admitted one is admitted.
func (e *Engine) unauthWaits(p *SAPair) bool {
	a, ok := singleRemote(p)
	if !ok || p.admitted.Load() {
		return false
	}
	for _, q := range e.unauth[a] {
		if b, ok := singleRemote(q); ok && b == a && q.admitted.Load() {
			p.admitted.Store(true)
			return false
		}
	}
	c := e.classes.Load()
	return c != nil && c.ClassOf(a).Initiates()
}

// newBuffers returns n packet buffers with ESP head- and tailroom around
// size octets of packet; the last big ones have room for maxPacket.
func newBuffers(n, size, big int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		if i >= n-big {
			size = maxPacket
		}
		bufs[i] = make([]byte, esp.Headroom+size+esp.Tailroom)
	}
	return bufs
}

// newOutboundBuffers returns n buffers as newBuffers does, laid end to end
// in one allocation, each with the capacity up to the end of the last: the
// bind appends the sealed packets that follow one, moving each back behind
// the one before, and sends them as one UDP GSO datagram. (Apart, each
// buffer has no room behind its packet, and every packet went alone.)
func newOutboundBuffers(n, size int) [][]byte {
	stride := esp.Headroom + size + esp.Tailroom
	arena := make([]byte, n*stride)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = arena[i*stride : (i+1)*stride]
	}
	return bufs
}

// outboundSize returns the largest packet a device read brings: one of at
// most the MTU. A device with offloads (a batch size above 1) splits
// super-packets into segments itself.
func (e *Engine) outboundSize() int {
	mtu, err := e.dev.MTU()
	if err != nil || mtu <= 0 || mtu > maxPacket {
		return maxPacket
	}
	return max(mtu, 1500)
}

func (e *Engine) routineOutbound() {
	batch := e.dev.BatchSize()
	size := e.outboundSize()
	bufs := newOutboundBuffers(batch, size)
	sizes := make([]int, batch)
	send := make([][]byte, 0, batch)
	for {
		n, err := e.dev.Read(bufs, sizes, esp.Headroom)
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			if e.closed() {
				return
			}
			if s := e.outboundSize(); s > size {
				// The MTU grew: the packet did not fit.
				e.log.Info("device MTU grew: larger buffers", "mtu", s, "err", err)
				size, bufs = s, newOutboundBuffers(batch, s)
				continue
			}
			e.log.Error("reading from the device failed; outbound datapath stopped", "err", err)
			return
		}
		rt := e.routes.Load()
		var cur *SAPair
		for i := 0; i < n; i++ {
			pkt := bufs[i][esp.Headroom : esp.Headroom+sizes[i]]
			p, err := ipview.Parse(pkt)
			if err != nil {
				e.stats.malformed.Add(1)
				continue
			}
			pair := rt.lookup(&p)
			if pair == nil {
				// AutoVPN behind a NAT: the SA is for the public address.
				if nt := e.nat.Load(); nt != nil {
					if q, ok := nt.outboundView(&p); ok {
						if pair = rt.lookup(&q); pair != nil {
							nt.natOutbound(pkt, &p)
						}
					}
				}
			}
			if pair == nil {
				if t := rt.trapFor(&p); t != nil {
					e.hold(t, pkt[:p.Len])
				} else {
					e.outboundNoSA(&p, pkt[:p.Len])
				}
				continue
			}
			if pair != cur && len(send) > 0 {
				e.send(cur, send)
				send = send[:0]
			}
			cur = pair
			nh := byte(ipview.ProtoIPv4)
			if ipview.Version(pkt) == 6 {
				nh = ipview.ProtoIPv6
			}
			out, err := pair.Out.Seal(bufs[i], esp.Headroom, p.Len, nh)
			if err != nil {
				e.stats.sealErrors.Add(1)
				continue
			}
			send = append(send, out)
		}
		if len(send) > 0 {
			e.send(cur, send)
			send = send[:0]
		}
	}
}

func (e *Engine) send(p *SAPair, bufs [][]byte) {
	if err := e.natt.Send(bufs, p.ep); err != nil {
		e.stats.sendErrors.Add(1)
		if !e.closed() {
			e.log.Debug("send failed", "peer", p.Peer, "err", err)
		}
		return
	}
	e.stats.txPackets.Add(uint64(len(bufs)))
}

func (e *Engine) routineInbound(recv conn.ReceiveFunc, bind conn.Bind, natt bool) {
	batch := bind.BatchSize()
	bufs := newBuffers(batch, maxDatagram, groSlots)
	pkts := make([][]byte, batch)
	for i := range pkts {
		pkts[i] = bufs[i][esp.Headroom:]
	}
	sizes := make([]int, batch)
	eps := make([]conn.Endpoint, batch)
	write := make([][]byte, 0, batch)
	for {
		n, err := recv(pkts, sizes, eps)
		if err != nil {
			if e.closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Debug("receive failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now().UnixNano()
		for i := 0; i < n; i++ {
			d := pkts[i][:sizes[i]]
			if !natt {
				e.deliverIKE(d, eps[i], false)
				continue
			}
			switch classify(d) {
			case esp.KindIKE:
				e.deliverIKE(d[esp.NonESPMarkerLen:], eps[i], true)
				continue
			case kindProbe:
				e.deliverProbe(d, eps[i])
				continue
			case esp.KindKeepalive:
				e.stats.keepalives.Add(1)
				continue
			case esp.KindESP:
			default:
				e.stats.malformed.Add(1)
				continue
			}
			spi := esp.Header(d).SPI()
			pair, ok := e.spis.Lookup(spi)
			if !ok || pair == nil {
				e.stats.unknownSPI.Add(1)
				if f := e.onUnknownSPI.Load(); !ok && f != nil && *f != nil {
					(*f)(spi, addrPortOf(eps[i])) // the peer may have restarted us: it rate-limits
				}
				continue
			}
			if pair.barred.Load() {
				e.stats.nullDrops.Add(1)
				continue
			}
			if addrPortOf(eps[i]).Addr().Unmap().Is4() != pair.peer4 {
				// An SA is opened by the routine of its peer's address
				// family only: esp.SA.Open is single-threaded per SA.
				e.stats.unknownSPI.Add(1)
				continue
			}
			inner, nh, err := pair.In.Open(bufs[i], esp.Headroom, sizes[i])
			if err != nil {
				e.stats.decryptErrors.Add(1)
				continue
			}
			if pair.heard.Load() != now {
				pair.heard.Store(now) // once per batch and pair
			}
			p, err := ipview.Parse(inner)
			if err != nil || (nh == ipview.ProtoIPv4) != (ipview.Version(inner) == 4) {
				e.stats.malformed.Add(1)
				continue
			}
			if !pair.Remote.MatchSrc(&p) || !pair.Local.MatchDst(&p) {
				e.stats.selectorDrops.Add(1)
				continue
			}
			if !pair.ready.Load() {
				pair.ready.Store(true) // the peer uses it: so may we
			}
			if nt := e.nat.Load(); nt != nil {
				nt.natInbound(inner, &p)
			}
			start := cap(bufs[i]) - cap(inner)
			write = append(write, bufs[i][start-writeOffset:start+p.Len])
		}
		if len(write) > 0 {
			if _, err := e.dev.Write(write, writeOffset); err != nil && !e.closed() {
				e.log.Debug("writing to the device failed", "err", err)
			}
			e.stats.rxPackets.Add(uint64(len(write)))
			write = write[:0]
		}
	}
}

func addrPortOf(ep conn.Endpoint) netip.AddrPort {
	if se, ok := ep.(*conn.StdNetEndpoint); ok {
		return se.AddrPort
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return ap
}

// SetClasses sets the connection classes for traffic no SA or trap covers
// (and bars the unauthenticated pairs of addresses now private).
func (e *Engine) SetClasses(c *policy.Classes) {
	e.classes.Store(c)
	e.mu.Lock()
	e.reviewAllUnauthLocked()
	e.mu.Unlock()
}

// Classes returns the connection classes, or nil.
func (e *Engine) Classes() *policy.Classes { return e.classes.Load() }

// SetSAEventHandler sets (or replaces) the receiver of SA lifetime events.
func (e *Engine) SetSAEventHandler(f func(*SAPair, esp.Event)) { e.onSAEvent.Store(&f) }

// SetIKEHandler sets (or replaces) the receiver of IKE messages, for a
// control plane created after the engine.
func (e *Engine) SetIKEHandler(f func(msg []byte, from netip.AddrPort, to netip.Addr, natt bool)) {
	e.onIKE.Store(&f)
}

func (e *Engine) deliverIKE(msg []byte, ep conn.Endpoint, natt bool) {
	f := e.onIKE.Load()
	if f == nil || *f == nil {
		e.stats.controlDropped.Add(1)
		return
	}
	(*f)(msg, addrPortOf(ep), ep.SrcIP().Unmap(), natt)
}

func (e *Engine) deliverProbe(msg []byte, ep conn.Endpoint) {
	f := e.onProbe.Load()
	if f == nil || *f == nil {
		e.stats.controlDropped.Add(1)
		return
	}
	(*f)(msg, addrPortOf(ep), ep.SrcIP())
}

// SetUnknownSPIHandler sets the receiver of ESP packets whose SPI is not
// allocated (not an SA being negotiated either): the SPI and the sender. It
// is called on the datapath for each such packet and must neither block
// nor allocate (ike.Daemon.UnknownESP rate-limits first).
func (e *Engine) SetUnknownSPIHandler(f func(spi uint32, from netip.AddrPort)) {
	e.onUnknownSPI.Store(&f)
}

// SetProbeHandler sets the receiver of AutoVPN probe datagrams that reach
// the NAT-T port (preamble included; msg is valid during the call only):
// the sender and the local address they were sent to.
func (e *Engine) SetProbeHandler(f func(msg []byte, from netip.AddrPort, to netip.Addr)) {
	e.onProbe.Store(&f)
}

// sendNATT sends one datagram from the NAT-T port.
func (e *Engine) sendNATT(msg []byte, to netip.AddrPort) error {
	ep, err := e.natt.ParseEndpoint(netip.AddrPortFrom(to.Addr().Unmap(), to.Port()).String())
	if err != nil {
		return err
	}
	return e.natt.Send([][]byte{msg}, ep)
}

// SendIKE sends an IKE message to a peer from the IKE port, or from the
// NAT-T port behind the non-ESP marker when natt is set (RFC 3948 §2.2).
func (e *Engine) SendIKE(msg []byte, to netip.AddrPort, natt bool) error {
	bind := e.ike
	if natt {
		bind = e.natt
		msg = append(make([]byte, esp.NonESPMarkerLen, esp.NonESPMarkerLen+len(msg)), msg...)
	}
	ep, err := bind.ParseEndpoint(netip.AddrPortFrom(to.Addr().Unmap(), to.Port()).String())
	if err != nil {
		return err
	}
	return bind.Send([][]byte{msg}, ep)
}

func (e *Engine) routineTimers() {
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-e.closing:
			return
		case now := <-t.C:
			for _, p := range e.Pairs() {
				p.Out.Tick(now)
				p.In.Tick(now)
			}
			e.sweepOE(now)
		case ev := <-e.events:
			if ev.pair.removed.Load() {
				continue
			}
			e.log.Info("SA lifetime event", "peer", ev.pair.Peer, "event", ev.ev,
				"spi_in", fmt.Sprintf("%#08x", ev.pair.In.SPI()))
			if f := e.onSAEvent.Load(); f != nil && *f != nil {
				(*f)(ev.pair, ev.ev)
			}
			if ev.ev == esp.EventHardExpire {
				e.Remove(ev.pair)
			}
		}
	}
}

func (e *Engine) routineDeviceEvents() {
	for {
		select {
		case <-e.closing:
			return
		case ev, ok := <-e.dev.Events():
			if !ok {
				return
			}
			if ev&tun.EventMTUUpdate != 0 {
				mtu, _ := e.dev.MTU()
				e.log.Info("device MTU changed", "mtu", mtu)
			}
			if ev&tun.EventDown != 0 {
				e.log.Warn("device went down")
			}
		}
	}
}
