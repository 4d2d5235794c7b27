package tunnel

import (
	"cmp"
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
	// bufSize is the size of every packet buffer: room for the largest
	// IP packet (a TUN GRO super-packet) plus ESP head- and tailroom.
	bufSize = esp.Headroom + 65535 + esp.Tailroom
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
	// marker) and the address it came from; natt tells whether it came
	// on the NAT-T port. msg is only valid during the call.
	OnIKE func(msg []byte, from netip.AddrPort, natt bool)
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
}

// SAPair is an installed pair of SAs.
type SAPair struct {
	Peer          netip.AddrPort
	Local, Remote policy.Selectors
	Out, In       *esp.SA

	// Owner is the control plane's object for the pair (an *ike.ChildSA).
	Owner any

	ep      conn.Endpoint
	ready   atomic.Bool // may carry outbound traffic (see PairConfig.Deferred)
	peer4   bool        // the peer's outer address is IPv4
	seq     uint64      // install order: newer pairs win outbound (make-before-break)
	removed atomic.Bool
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
}

type stats struct {
	txPackets, rxPackets, noSA, malformed, unknownSPI, decryptErrors,
	selectorDrops, sealErrors, sendErrors, controlDropped, keepalives, blocked, clear atomic.Uint64
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

	mu      sync.Mutex // control plane: guards pairs; never taken by the datapath
	pairs   map[*SAPair]struct{}
	traps   map[string]*trap
	nextSeq uint64

	onIKE     atomic.Pointer[func(msg []byte, from netip.AddrPort, natt bool)]
	onSAEvent atomic.Pointer[func(*SAPair, esp.Event)]
	onAcquire atomic.Pointer[func(name string)]
	classes   atomic.Pointer[policy.Classes]
	onOE      atomic.Pointer[func(src, dst netip.Addr, class policy.Class)]
	oe        sync.Map // netip.Addr → *oeDest: opportunistic destinations without an SA
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
	p := &SAPair{Peer: pc.Peer, Local: pc.Local, Remote: pc.Remote}
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
	if err := e.insert(p); err != nil {
		return nil, err
	}
	e.flushHeld(p)
	e.log.Info("SA pair installed", "peer", p.Peer, "spi_in", fmt.Sprintf("%#08x", p.In.SPI()),
		"spi_out", fmt.Sprintf("%#08x", p.Out.SPI()), "transform", p.Out.Transform(), "local", p.Local, "remote", p.Remote)
	return p, nil
}

func (e *Engine) insert(p *SAPair) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	insert := e.spis.Insert
	if old, ok := e.spis.Lookup(p.In.SPI()); ok && old == nil {
		insert = e.spis.Replace // an SPI the control plane reserved
	}
	if err := insert(p.In.SPI(), p); err != nil {
		return fmt.Errorf("tunnel: inbound SA: %w", err)
	}
	e.nextSeq++
	p.seq = e.nextSeq
	e.pairs[p] = struct{}{}
	e.rebuildRoutesLocked()
	return nil
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
	e.rebuildRoutesLocked()
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

// routeTable maps outbound packets to SA pairs. It is immutable once
// published; the control plane replaces it whole.
type routeTable struct {
	hosts  map[netip.Addr][]*SAPair // pairs whose remote selector is one address
	others []*SAPair
	traps  []*trap
}

func (e *Engine) rebuildRoutesLocked() {
	rt := &routeTable{hosts: make(map[netip.Addr][]*SAPair)}
	ordered := make([]*SAPair, 0, len(e.pairs))
	for p := range e.pairs {
		ordered = append(ordered, p)
	}
	// Newest first: a rekeyed SA takes over the traffic at once, while the
	// old one still accepts what is in flight.
	slices.SortFunc(ordered, func(a, b *SAPair) int { return cmp.Compare(b.seq, a.seq) })
	for _, p := range ordered {
		for _, s := range p.Remote {
			if a, ok := s.Single(); ok {
				rt.hosts[a] = append(rt.hosts[a], p)
			} else {
				rt.others = append(rt.others, p)
				break
			}
		}
	}
	for _, t := range e.traps {
		rt.traps = append(rt.traps, t)
	}
	e.routes.Store(rt)
}

// lookup returns the newest pair that covers the packet and may carry
// outbound traffic, or else the newest that covers it.
func (rt *routeTable) lookup(p *ipview.Packet) *SAPair {
	var fallback *SAPair
	for _, list := range [2][]*SAPair{rt.hosts[p.Dst], rt.others} {
		for _, pair := range list {
			if pair.Remote.MatchDst(p) && pair.Local.MatchSrc(p) {
				if pair.ready.Load() {
					return pair
				}
				if fallback == nil {
					fallback = pair
				}
			}
		}
	}
	return fallback
}

func newBuffers(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	return bufs
}

func (e *Engine) routineOutbound() {
	batch := e.dev.BatchSize()
	bufs := newBuffers(batch)
	sizes := make([]int, batch)
	send := make([][]byte, 0, batch)
	for {
		n, err := e.dev.Read(bufs, sizes, esp.Headroom)
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			if !e.closed() {
				e.log.Error("reading from the device failed; outbound datapath stopped", "err", err)
			}
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
	bufs := newBuffers(batch)
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
		for i := 0; i < n; i++ {
			d := pkts[i][:sizes[i]]
			if !natt {
				e.deliverIKE(d, eps[i], false)
				continue
			}
			kind, _ := esp.Classify(d)
			switch kind {
			case esp.KindIKE:
				e.deliverIKE(d[esp.NonESPMarkerLen:], eps[i], true)
				continue
			case esp.KindProbe:
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

// SetClasses sets the connection classes for traffic no SA or trap covers.
func (e *Engine) SetClasses(c *policy.Classes) { e.classes.Store(c) }

// Classes returns the connection classes, or nil.
func (e *Engine) Classes() *policy.Classes { return e.classes.Load() }

// SetSAEventHandler sets (or replaces) the receiver of SA lifetime events.
func (e *Engine) SetSAEventHandler(f func(*SAPair, esp.Event)) { e.onSAEvent.Store(&f) }

// SetIKEHandler sets (or replaces) the receiver of IKE messages, for a
// control plane created after the engine.
func (e *Engine) SetIKEHandler(f func(msg []byte, from netip.AddrPort, natt bool)) {
	e.onIKE.Store(&f)
}

func (e *Engine) deliverIKE(msg []byte, ep conn.Endpoint, natt bool) {
	f := e.onIKE.Load()
	if f == nil || *f == nil {
		e.stats.controlDropped.Add(1)
		return
	}
	(*f)(msg, addrPortOf(ep), natt)
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
