package ike

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The daemon's work comes from three places, served in this order:
//
//   - control work: timers (retransmission, rekey, DPD, half-open expiry,
//     keepalives, restarts) and local requests (Acquire, Down, the API).
//     It is never dropped: a lost timer is a tunnel that silently stops
//     rekeying or never notices a dead peer. Every source of it is bounded
//     by local state (one timer per SA and purpose, one acquire per trap),
//     so the queue is a list that grows as needed.
//   - packets for IKE SAs we hold (by SPI): a bounded queue.
//   - IKE_SA_INIT requests with a valid COOKIE, from configured peers, or
//     retransmitted for a half-open IKE SA: a bounded queue.
//   - everything else (other IKE_SA_INIT, unknown SPIs, malformed
//     messages, ESP with unknown SPIs): a bounded queue.
//
// Packets beyond a bounded queue are dropped and counted. The stateless
// cookie check runs before the queues, on the receiving goroutine
// (HandlePacket), so that a flood of spoofed IKE_SA_INIT costs the daemon's
// goroutine nothing once cookies are demanded; it reads only state the
// daemon publishes atomically (the cookie secrets, the half-open counts, the
// set of our IKE SPIs).

// packetQueueLen is the length of each bounded packet queue.
const packetQueueLen = 256

// Stats are the IKE daemon's counters.
type Stats struct {
	// PacketsDropped counts IKE messages dropped because their queue
	// was full: KnownDropped of them for IKE SAs we hold, InitDropped
	// IKE_SA_INIT with a valid COOKIE or from configured peers.
	PacketsDropped uint64 `json:"packets_dropped"`
	KnownDropped   uint64 `json:"known_dropped"`
	InitDropped    uint64 `json:"init_dropped"`
	// CookiesSent counts COOKIE demands sent before the queue, and
	// InitsDropped the IKE_SA_INIT requests dropped there (too large,
	// over the half-open caps, or from an address that is no configured
	// peer's when opportunism and AutoVPN are off).
	CookiesSent  uint64 `json:"cookies_sent"`
	InitsDropped uint64 `json:"inits_dropped"`
	// InvalidIKESPISent and InvalidSPISent count the unprotected
	// INVALID_IKE_SPI and INVALID_SPI notifies sent for messages and ESP
	// packets with SPIs we do not know; NotifiesLimited those not sent
	// because of the rate limits.
	InvalidIKESPISent uint64 `json:"invalid_ike_spi_sent"`
	InvalidSPISent    uint64 `json:"invalid_spi_sent"`
	NotifiesLimited   uint64 `json:"notifies_rate_limited"`
	// LivenessHints counts liveness checks started at once because the
	// peer said it did not know our SPIs.
	LivenessHints uint64 `json:"liveness_hints"`
}

type stats struct {
	dropped, knownDropped, initDropped, cookies, initsDropped, invalidIKESPI, invalidSPI, limited, hints atomic.Uint64
}

// Stats returns a snapshot of the daemon's counters.
func (d *Daemon) Stats() Stats {
	s := &d.stats
	return Stats{PacketsDropped: s.dropped.Load(), KnownDropped: s.knownDropped.Load(), InitDropped: s.initDropped.Load(), CookiesSent: s.cookies.Load(),
		InitsDropped: s.initsDropped.Load(), InvalidIKESPISent: s.invalidIKESPI.Load(), InvalidSPISent: s.invalidSPI.Load(),
		NotifiesLimited: s.limited.Load(), LivenessHints: s.hints.Load()}
}

// packet is an IKE message waiting in a packet queue.
type packet struct {
	b      []byte
	from   netip.AddrPort
	to     netip.Addr // the local address it reached, if the transport tells
	natt   bool
	esp    bool   // not an IKE message: an ESP packet with an unknown SPI came
	espSPI uint32 // with that SPI
}

func (d *Daemon) receivePacket(p packet) {
	if p.esp {
		d.sendInvalidSPI(p.espSPI, p.from)
		return
	}
	d.receive(p.b, p.from, p.to, p.natt)
}

// controlQueue is the never-dropping queue of control work.
type controlQueue struct {
	mu   sync.Mutex
	q    []func()
	wake chan struct{} // one token: there is work
}

func (c *controlQueue) push(f func()) {
	c.mu.Lock()
	c.q = append(c.q, f)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take returns the queued work, in order, and empties the queue into spare.
func (c *controlQueue) take(spare []func()) []func() {
	c.mu.Lock()
	q := c.q
	c.q = spare[:0]
	c.mu.Unlock()
	return q
}

func (d *Daemon) routineLoop() {
	defer d.wg.Done()
	var spare []func()
	runControl := func() {
		q := d.ctl.take(spare)
		for i, f := range q {
			f()
			q[i] = nil
		}
		spare = q
	}
	for {
		// Control work first, then known SAs, then the rest.
		select {
		case <-d.ctl.wake:
			runControl()
			continue
		case <-d.done:
			return
		default:
		}
		select {
		case p := <-d.known:
			d.receivePacket(p)
			continue
		default:
		}
		select {
		case p := <-d.inits:
			d.receivePacket(p)
			continue
		default:
		}
		select {
		case <-d.ctl.wake:
			runControl()
		case p := <-d.known:
			d.receivePacket(p)
		case p := <-d.inits:
			d.receivePacket(p)
		case p := <-d.bulk:
			d.receivePacket(p)
		case <-d.done:
			return
		}
	}
}

// post runs f on the daemon's goroutine. Control work is never dropped;
// it reports false only once the daemon is closed.
func (d *Daemon) post(f func()) bool {
	select {
	case <-d.done:
		return false
	default:
	}
	d.ctl.push(f)
	return true
}

// call runs f on the daemon's goroutine and waits for it.
func (d *Daemon) call(f func()) {
	ch := make(chan struct{})
	if !d.post(func() { f(); close(ch) }) {
		return
	}
	select {
	case <-ch:
	case <-d.done:
	}
}

// after runs f on the daemon's goroutine after delay: a timer that cannot
// be lost.
func (d *Daemon) after(delay time.Duration, f func()) *time.Timer {
	return time.AfterFunc(delay, func() { d.post(f) })
}

// HandlePacket takes an IKE message from the transport (without the non-ESP
// marker). It copies msg and returns at once. The stateless checks run
// here, on the caller's goroutine: a request to start an IKE SA that must
// carry a COOKIE and does not is answered with one without queueing.
func (d *Daemon) HandlePacket(msg []byte, from netip.AddrPort, natt bool) {
	d.HandlePacketTo(msg, from, netip.Addr{}, natt)
}

// HandlePacketTo is HandlePacket for a transport that tells the local
// address the message was sent to (Config.Responder is given it).
func (d *Daemon) HandlePacketTo(msg []byte, from netip.AddrPort, to netip.Addr, natt bool) {
	h, err := ParseHeader(msg)
	q := d.bulk
	if err == nil {
		if h.Exchange == IKE_SA_INIT && !h.IsResponse() && h.SPIr == 0 {
			prio, ok := d.gateInit(msg, from, natt, h.SPIi)
			if !ok {
				return
			}
			if prio {
				q = d.inits
			}
		} else {
			ours := h.SPIi
			if h.IsInitiator() {
				ours = h.SPIr
			}
			if _, known := d.spis.Load(ours); known {
				q = d.known
			}
		}
	}
	select {
	case q <- packet{b: append([]byte(nil), msg...), from: from, to: to, natt: natt}:
	default:
		d.stats.dropped.Add(1)
		switch q {
		case d.known:
			d.stats.knownDropped.Add(1)
		case d.inits:
			d.stats.initDropped.Add(1)
		}
	}
}

// halfSnapshot is the published view of the half-open IKE SAs, for the
// checks before the queue.
type halfSnapshot struct {
	total  int
	byAddr map[netip.Addr]int
	keys   map[halfKey]struct{}
}

// publishHalf publishes the half-open counts (on the daemon's goroutine,
// after each change: at most MaxHalfOpen entries, and each change cost a
// DH computation).
func (d *Daemon) publishHalf() {
	s := &halfSnapshot{total: len(d.half), byAddr: make(map[netip.Addr]int, len(d.halfByAddr)), keys: make(map[halfKey]struct{}, len(d.half))}
	for a, n := range d.halfByAddr {
		s.byAddr[a] = n
	}
	for k := range d.half {
		s.keys[k] = struct{}{}
	}
	d.halfSnap.Store(s)
}

// gateInit applies the stateless checks to an IKE_SA_INIT request before
// it is queued: the size and half-open caps, and the COOKIE when one is
// required (RFC 7296 §2.6). It reports whether the request goes to the
// queue of IKE_SA_INIT that proved their source (or come from a configured
// peer's address), and whether it is queued at all.
func (d *Daemon) gateInit(msg []byte, from netip.AddrPort, natt bool, spiI uint64) (prio, ok bool) {
	s := d.halfSnap.Load()
	addr := from.Addr()
	if _, again := s.keys[halfKey{spiI, from}]; again {
		return true, true // a retransmission: the daemon resends its answer
	}
	configured := d.peerByAddr(addr) != nil
	switch {
	case len(msg) > MaxInitRequest, s.byAddr[addr] >= MaxHalfOpenPerAddr, s.total >= MaxHalfOpen,
		!configured && d.cfg.Responder == nil: // nobody would answer it
		d.stats.initsDropped.Add(1)
		return false, false
	}
	if !d.underAttackAt(s.total) && s.byAddr[addr] < cookieThresholdPerAddr {
		return configured, true
	}
	m, err := Parse(msg)
	if err != nil {
		return false, true // the daemon answers what deserves an answer
	}
	ni := Get[*NoncePayload](m)
	if ni == nil {
		return false, false
	}
	if c := m.Notify(COOKIE); c != nil && d.cookies.valid(c.Data, ni.Data, addr, spiI) {
		return true, true
	}
	r := &Message{Header: Header{SPIi: spiI, Exchange: IKE_SA_INIT, Flags: FlagResponse},
		Payloads: []Payload{&NotifyPayload{NotifyType: COOKIE, Data: d.cookies.make(ni.Data, addr, spiI)}}}
	if b, err := r.Marshal(); err == nil {
		d.dp.SendIKE(b, from, natt)
		d.stats.cookies.Add(1)
	}
	return false, false
}

// putSA records sa under our SPI spi, and publishes the SPI for the
// checks before the queue.
func (d *Daemon) putSA(spi uint64, sa *ikeSA) {
	if old := d.sas[spi]; old != sa {
		d.countResponder(old, -1)
		d.countResponder(sa, 1)
		d.indexAddr(old, false)
		d.indexAddr(sa, true)
	}
	d.sas[spi] = sa
	d.spis.Store(spi, struct{}{})
}

// deleteSA forgets our SPI spi.
func (d *Daemon) deleteSA(spi uint64) {
	d.countResponder(d.sas[spi], -1)
	d.indexAddr(d.sas[spi], false)
	delete(d.sas, spi)
	d.spis.Delete(spi)
}

// setRemote moves sa to the peer address from, keeping the count of
// responder SAs by address.
func (d *Daemon) setRemote(sa *ikeSA, from netip.AddrPort) {
	in := d.sas[sa.ourSPI()] == sa
	if in {
		d.countResponder(sa, -1)
		d.indexAddr(sa, false)
	}
	sa.remote = from
	if in {
		d.countResponder(sa, 1)
		d.indexAddr(sa, true)
	}
}

// countResponder adds n to the count of sa's address in respByAddr if sa
// was made as responder.
func (d *Daemon) countResponder(sa *ikeSA, n int) {
	if sa == nil || sa.initiator {
		return
	}
	a := sa.remote.Addr()
	if d.respByAddr[a] += n; d.respByAddr[a] <= 0 {
		delete(d.respByAddr, a)
	}
}

// ---- rate limits for notifies sent in answer to unprotected input ----

// Rates of the unprotected INVALID_IKE_SPI and INVALID_SPI notifies (RFC
// 7296 §2.21.4: a node must limit the rate of its answers to unprotected
// messages): per source address and in all.
const (
	notifyPerSource      = 2 // per second
	notifyPerSourceBurst = 4
	notifyTotal          = 100 // per second
	notifyTotalBurst     = 100
	notifyBuckets        = 256 // sources hash into these; colliding ones share
)

// gcra is a lock-free token bucket (the generic cell rate algorithm): tat
// is the theoretical arrival time, in nanoseconds, of the next conforming
// event.
type gcra struct{ tat atomic.Int64 }

func (g *gcra) allow(now int64, interval, burst int64) bool {
	for {
		old := g.tat.Load()
		tat := max(old, now)
		if tat-now > interval*(burst-1) {
			return false
		}
		if g.tat.CompareAndSwap(old, tat+interval) {
			return true
		}
	}
}

// notifyLimiter bounds the notifies sent in answer to unprotected input.
// It neither allocates nor locks: it runs for ESP packets too.
type notifyLimiter struct {
	total  gcra
	source [notifyBuckets]gcra
}

func (l *notifyLimiter) allow(from netip.Addr) bool {
	now := time.Now().UnixNano()
	b := from.Unmap().As16()
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return l.source[h%notifyBuckets].allow(now, int64(time.Second)/notifyPerSource, notifyPerSourceBurst) &&
		l.total.allow(now, int64(time.Second)/notifyTotal, notifyTotalBurst)
}
