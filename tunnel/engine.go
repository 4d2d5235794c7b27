package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/esp"
	conn "github.com/oevpn/oevpn/internal/wgconn"
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
	// Control is the control plane, which the engine hands IKE messages,
	// probes, acquires and SA events to; nil means none (see SetControl).
	Control Control
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
	// Helped counts ESP packets sealed or opened by a helper core (see
	// cryptWorkers) rather than by the routine that sends or receives
	// them.
	Helped uint64
}

type stats struct {
	txPackets, rxPackets, noSA, malformed, unknownSPI, decryptErrors,
	selectorDrops, sealErrors, sendErrors, controlDropped, keepalives, blocked, clear,
	nullRefused, nullDrops, helped atomic.Uint64
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

	ctl     atomic.Pointer[controlRef] // never nil: see SetControl
	classes atomic.Pointer[policy.Classes]
	oe      sync.Map // netip.Addr → *oeDest: opportunistic destinations without an SA
	oeHeld  atomic.Int64
	oeDests atomic.Int64
	autovpn atomic.Pointer[AutoVPN]
	nat     atomic.Pointer[natTable] // AutoVPN behind a NAT: translations of the hosts' traffic
	clear   ClearPath

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
	e.SetControl(cfg.Control)
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
		NullRefused: s.nullRefused.Load(), NullDrops: s.nullDrops.Load(), Helped: s.helped.Load(),
	}
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
			e.control().SAEvent(ev.pair, ev.ev)
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
