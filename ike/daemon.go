package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Implementation constants.
const (
	nonceLen        = 32
	retransmitBase  = 500 * time.Millisecond
	retransmitTries = 6 // about 30 s in all for configured peers
	halfOpenTimeout = 30 * time.Second
)

// Datapath is what the daemon needs from the packet engine; tunnel
// implements it.
type Datapath interface {
	// SendIKE sends an IKE message from the IKE port, or from the NAT-T
	// port behind the non-ESP marker when natt is set. It is called
	// concurrently: HandlePacket sends COOKIE demands on its caller's
	// goroutine.
	SendIKE(msg []byte, to netip.AddrPort, natt bool) error
	// ReserveSPI allocates an unused inbound ESP SPI.
	ReserveSPI() (uint32, error)
	// ReleaseSPI frees a reserved SPI that was not installed.
	ReleaseSPI(spi uint32)
	// InstallChild installs an established Child SA, described by c's
	// exported fields (it keeps no reference to c). From then on the
	// daemon and the datapath name it by its inbound SPI, c.In.SPI, which
	// ReserveSPI gave.
	InstallChild(c *ChildSA) error
	// RemoveChild removes the installed Child SA whose inbound SPI is
	// spi, if there is one.
	RemoveChild(spi uint32)
	// RetireChild removes the Child SA whose inbound SPI is spi, which a
	// rekey replaced: it carries no outbound traffic from now on, and its
	// inbound SA is uninstalled after linger, so that packets the peer
	// sent on it before switching are still accepted.
	RetireChild(spi uint32, linger time.Duration)
	// ChildInPackets returns how many packets the Child SA whose inbound
	// SPI is spi accepted, for dead-peer detection.
	ChildInPackets(spi uint32) uint64
	// SendKeepalive sends a NAT-keepalive (RFC 3948 §2.3) from the NAT-T
	// port.
	SendKeepalive(to netip.AddrPort) error
}

// Config configures a Daemon.
type Config struct {
	Datapath Datapath
	Peers    []*PeerConfig
	Logger   *slog.Logger
	// Authorizer, if set, has the last word on every authenticated peer
	// (package policy implements it); a refusal fails the exchange with
	// AUTHENTICATION_FAILED.
	Authorizer Authorizer
	// CookieThreshold is the number of half-open IKE SAs above which
	// IKE_SA_INIT requests must carry a COOKIE (default 32; negative:
	// always).
	CookieThreshold int
	// OnChange, if set, is called (on the daemon's goroutine) when an IKE
	// SA is established or torn down.
	OnChange func(peer string, up bool, err error)
	// Responder, if set, is asked for the peer to answer as when an
	// IKE_SA_INIT comes from an address no configured peer has, with the
	// local address the request reached (invalid if the transport does
	// not tell) and the AutoVPN Nonce it carried (nil if none); nil
	// ignores the request. It runs on the daemon's goroutine and must not
	// block. The peer it returns is added as opportunistic. Responder
	// only checks an AutoVPN nonce: it is spent by ClaimAutoVPNNonce.
	Responder func(from netip.AddrPort, local netip.Addr, autovpnNonce []byte) *PeerConfig
	// ClaimAutoVPNNonce, if set, spends the AutoVPN nonce of an
	// IKE_SA_INIT that Responder answered, once the request is otherwise
	// acceptable (proposal and KE group chosen), so that the initiator's
	// retry after INVALID_KE_PAYLOAD still finds its nonce; false drops
	// the request. It runs on the daemon's goroutine.
	ClaimAutoVPNNonce func(from netip.AddrPort, autovpnNonce []byte) bool
}

// Daemon runs IKEv2 for the configured peers. All protocol state lives on
// its one goroutine; the exported methods post work to it.
type Daemon struct {
	cfg  Config
	log  *slog.Logger
	dp   Datapath
	sas  map[uint64]*ikeSA // by our SPI; written only by putSA and deleteSA
	half map[halfKey]*ikeSA
	// halfByAddr counts the half-open IKE SAs by source address.
	halfByAddr map[netip.Addr]int
	// respByAddr counts the IKE SAs in sas made as responder by the
	// address of their peer (ikeSAsAt).
	respByAddr map[netip.Addr]int
	// byAddr are the IKE SAs in sas by the address of their peer
	// (indexAddr).
	byAddr  map[netip.Addr][]*ikeSA
	peers   atomic.Pointer[[]*PeerConfig] // the configured peers (configured, SetPeers)
	dynamic map[string]*PeerConfig        // opportunistic peers, by name
	wg      sync.WaitGroup
	once    sync.Once
	// halfOpenTimeout is how long a half-open IKE SA waits for IKE_AUTH.
	halfOpenTimeout time.Duration

	// The queues (queue.go), and what the checks before them read.
	ctl                controlQueue
	known, inits, bulk chan packet
	done               chan struct{}
	cookies            *cookies
	halfSnap           atomic.Pointer[halfSnapshot]
	spis               sync.Map // our IKE SPIs (uint64), as in sas
	limiter            notifyLimiter
	stats              stats
}

type halfKey struct {
	spiI uint64
	from netip.AddrPort
}

// New starts a daemon.
func New(cfg Config) (*Daemon, error) {
	if cfg.Datapath == nil {
		return nil, errors.New("ike: no datapath")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, p := range cfg.Peers {
		if err := p.setDefaults(); err != nil {
			return nil, err
		}
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, dp: cfg.Datapath, sas: map[uint64]*ikeSA{}, half: map[halfKey]*ikeSA{},
		halfByAddr: map[netip.Addr]int{}, respByAddr: map[netip.Addr]int{}, byAddr: map[netip.Addr][]*ikeSA{}, cookies: newCookies(), dynamic: map[string]*PeerConfig{},
		ctl: controlQueue{wake: make(chan struct{}, 1)}, known: make(chan packet, packetQueueLen), inits: make(chan packet, packetQueueLen), bulk: make(chan packet, packetQueueLen),
		done: make(chan struct{}), halfOpenTimeout: halfOpenTimeout}
	peers := append([]*PeerConfig(nil), cfg.Peers...)
	d.peers.Store(&peers)
	d.cfg.Peers = nil // configured() has them
	d.publishHalf()
	d.after(watchTick, d.watchTraffic)
	d.wg.Add(1)
	go d.routineLoop()
	return d, nil
}

// Close sends Delete for every established IKE SA, removes their Child SAs
// and stops the daemon.
func (d *Daemon) Close() {
	d.once.Do(func() {
		d.call(func() {
			for _, sa := range d.sas {
				if sa.state == stateEstablished {
					d.sendDeleteIKE(sa)
				}
				sa.stopped = true
				d.teardown(sa, nil)
			}
		})
		close(d.done)
		d.wg.Wait()
	})
}

// Initiate starts an IKE SA with the named peer, unless one exists.
func (d *Daemon) Initiate(name string) error {
	var err error
	d.call(func() {
		p := d.peerByName(name)
		if p == nil {
			err = fmt.Errorf("ike: no peer named %q", name)
			return
		}
		for _, sa := range d.sas {
			if sa.peer == p && sa.state != stateDead {
				return
			}
		}
		err = d.startInitiator(p)
	})
	return err
}

// ErrPeerExists is returned by AddPeer for a name in use.
var ErrPeerExists = errors.New("ike: a peer with this name exists")

// AddPeer adds an opportunistic peer and starts an IKE SA with it. The
// peer is forgotten when its last IKE SA goes (OnChange tells of it).
func (d *Daemon) AddPeer(p *PeerConfig) error {
	p.Opportunistic = true
	if err := p.setDefaults(); err != nil {
		return err
	}
	var err error
	d.call(func() {
		if d.peerByName(p.Name) != nil {
			err = fmt.Errorf("%w: %q", ErrPeerExists, p.Name)
			return
		}
		d.dynamic[p.Name] = p
		if err = d.startInitiator(p); err != nil {
			delete(d.dynamic, p.Name)
		}
	})
	return err
}

// ErrNoSuchPeer is returned for a peer name that is not configured.
var ErrNoSuchPeer = errors.New("ike: no such peer")

// ErrDown is what OnChange is told when Down ends a negotiation that had
// not come up: it did not fail, and nothing retries it, but whoever waits
// for it (held packets) must stop waiting.
var ErrDown = errors.New("ike: negotiation stopped by Down")

// Down deletes the named peer's IKE SAs (sending Delete) and their Child SAs,
// and stops its negotiations. It reports how many IKE SAs it deleted.
func (d *Daemon) Down(name string) (int, error) {
	n := 0
	var err error
	d.call(func() {
		if d.peerByName(name) == nil {
			err = fmt.Errorf("%w %q", ErrNoSuchPeer, name)
			return
		}
		n = d.deleteSAs(func(sa *ikeSA) bool { return sa.peer.Name == name })
	})
	return n, err
}

// Acquire starts an IKE SA with the named peer because traffic needs it,
// unless one exists or is being negotiated. It never blocks: the datapath
// calls it.
func (d *Daemon) Acquire(name string) {
	d.post(func() {
		p := d.peerByName(name)
		if p == nil {
			return
		}
		for _, sa := range d.sas {
			if sa.peer == p && sa.state != stateDead {
				if sa.state == stateEstablished && !sa.rekeyed {
					// The peer deleted a Child SA: make a new one.
					d.restoreChildren(sa)
				}
				return
			}
		}
		d.log.Info("traffic for peer: negotiating", "peer", name)
		if err := d.startInitiator(p); err != nil {
			d.log.Warn("initiating on traffic", "peer", name, "err", err)
		}
	})
}

// SAInfo describes an IKE SA for status displays.
type SAInfo struct {
	Peer      string
	Remote    netip.AddrPort
	Initiator bool
	State     string
	SPIi      uint64
	SPIr      uint64
	Suite     Suite
	LocalID   string
	PeerID    string
	Auth      string
	Created   time.Time
	Children  []*ChildSA
	// RekeyAt is when the IKE SA is next rekeyed (zero: not scheduled),
	// LastHeard when the peer last sent an authenticated message, and
	// ChildRekeyAt when each of Children is next rekeyed.
	RekeyAt, LastHeard time.Time
	ChildRekeyAt       []time.Time
}

// SAs returns the IKE SAs.
func (d *Daemon) SAs() []SAInfo {
	var out []SAInfo
	d.call(func() {
		for _, sa := range d.sas {
			state := sa.state.String()
			if sa.rekeyed && sa.state == stateEstablished {
				state = "rekeyed" // replaced, or the redundant one of a collision
			}
			out = append(out, SAInfo{Peer: sa.peer.Name, Remote: sa.remote, Initiator: sa.initiator, State: state,
				SPIi: sa.spiI, SPIr: sa.spiR, Suite: sa.suite, LocalID: ourID(sa.peer).String(), PeerID: sa.peerIDSeen.String(), Auth: sa.peer.Auth.Method(),
				Created: sa.created, Children: append([]*ChildSA(nil), sa.children...), RekeyAt: sa.rekeyAt, LastHeard: sa.lastHeard})
			for _, c := range sa.children {
				out[len(out)-1].ChildRekeyAt = append(out[len(out)-1].ChildRekeyAt, c.rekeyAt)
			}
		}
	})
	return out
}

// teardown removes an IKE SA and its Child SAs locally.
func (d *Daemon) teardown(sa *ikeSA, err error) {
	if sa.state == stateDead {
		return
	}
	// (stateDeleting: the peer deleted it.)
	wasUp := (sa.state == stateEstablished || sa.state == stateDeleting) && !sa.rekeyed
	sa.state = stateDead
	d.answered(sa)
	sa.queue = nil
	for _, t := range []*time.Timer{sa.rekeyTimer, sa.dpdTimer, sa.keepaliveTimer, sa.restoreTimer} {
		if t != nil {
			t.Stop()
		}
	}
	for _, c := range sa.children {
		if c.rekeyTimer != nil {
			c.rekeyTimer.Stop()
		}
		d.dp.RemoveChild(c.In.SPI)
	}
	sa.children = nil
	d.endLingering(sa)
	if hs := sa.ihs; hs != nil && hs.childSPI != 0 {
		d.dp.ReleaseSPI(hs.childSPI)
		hs.childSPI = 0
	}
	d.deleteSA(sa.ourSPI())
	d.dropHalf(sa)
	if sa.rekeyed && err != nil {
		// Replaced (rekeyed, a duplicate, or dropped on INITIAL_CONTACT):
		// another IKE SA carries the peer's traffic, and a peer that
		// already forgot this one does not answer its Delete. Not a
		// failure of the peer.
		d.log.Debug("replaced IKE SA gone without the peer's answer", "peer", sa.peer.Name, "err", err)
		err = nil
	}
	failed := err != nil && !errors.Is(err, ErrDown)
	if failed {
		d.log.Warn("IKE SA failed", "peer", sa.peer.Name, "err", err)
	} else {
		d.log.Info("IKE SA down", "peer", sa.peer.Name)
	}
	d.forgetIfUnused(sa.peer)
	if d.cfg.OnChange != nil && (wasUp || err != nil) {
		d.cfg.OnChange(sa.peer.Name, false, err)
	}
	// A peer configured to start is kept up: after a failure, and after
	// the peer deleted the IKE SA (it stopped or restarted), but not
	// after Down or Close, or when the SA was replaced.
	if sa.peer.AutoStart && !sa.rekeyed && !sa.stopped && (failed || wasUp) {
		d.scheduleRestart(sa.peer)
	}
}

// receive dispatches one message.
func (d *Daemon) receive(b []byte, from netip.AddrPort, to netip.Addr, natt bool) {
	m, err := Parse(b)
	var ce *CriticalError
	if errors.As(err, &ce) {
		if h, herr := ParseHeader(b); herr == nil && h.Exchange == IKE_SA_INIT && !h.IsResponse() && h.SPIr == 0 && d.peerByAddr(from.Addr()) != nil {
			// §2.5: refuse an IKE_SA_INIT with a critical payload we lack.
			r := &Message{Header: Header{SPIi: h.SPIi, Exchange: IKE_SA_INIT, Flags: FlagResponse},
				Payloads: []Payload{&NotifyPayload{NotifyType: UNSUPPORTED_CRITICAL_PAYLOAD, Data: []byte{byte(ce.Type)}}}}
			if out, err := r.Marshal(); err == nil {
				d.dp.SendIKE(out, from, natt)
			}
		}
		d.log.Debug("unsupported critical payload", "from", from, "type", ce.Type)
		return
	}
	if err != nil {
		d.log.Debug("dropping malformed IKE message", "from", from, "err", err)
		return
	}
	if m.IsInitiator() {
		// From the original initiator: we are the responder.
		if m.Exchange == IKE_SA_INIT && !m.IsResponse() && m.SPIr == 0 {
			d.onInitRequest(m, from, to, natt)
			return
		}
		sa := d.sas[m.SPIr]
		if sa == nil || sa.initiator || sa.spiI != m.SPIi {
			d.unknownIKESPI(m, from, natt)
			return
		}
		d.onMessage(sa, m, from, natt)
		return
	}
	sa := d.sas[m.SPIi]
	if sa == nil || !sa.initiator {
		d.unknownIKESPI(m, from, natt)
		return
	}
	if m.Exchange == IKE_SA_INIT && m.IsResponse() && sa.state == stateInitSent {
		if sa.ihs != nil {
			sa.ihs.processInitResponse(m)
		}
		return
	}
	d.onMessage(sa, m, from, natt)
}

// onMessage handles an encrypted message of an IKE SA past IKE_SA_INIT.
func (d *Daemon) onMessage(sa *ikeSA, m *Message, from netip.AddrPort, natt bool) {
	if m.IsResponse() {
		if sa.pending == nil || m.MessageID != sa.pending.id {
			return // late or duplicate response
		}
		if !m.Encrypted() && m.Notify(INVALID_IKE_SPI) != nil {
			if sa.state == stateDeleting {
				// What our Delete asked for: the peer has no such
				// IKE SA (or someone says so; either way it goes).
				d.teardown(sa, nil)
				return
			}
			// The peer lost this IKE SA (it restarted), or someone
			// says so: check at once, and give up sooner (§2.21.4).
			d.livenessHint(sa, "INVALID_IKE_SPI")
			return
		}
		if m = d.open(sa, m); m == nil {
			return
		}
		sa.lastHeard, sa.suspect = time.Now(), false
		r := sa.pending
		sa.pending = nil
		if r.timer != nil {
			r.timer.Stop()
		}
		switch {
		case m.Exchange == IKE_AUTH && sa.state == stateAuthSent:
			sa.ihs.processAuthResponse(m)
		case m.Exchange == INFORMATIONAL && sa.state == stateDeleting:
			d.teardown(sa, nil)
		case r.onResponse != nil:
			r.onResponse(sa, m)
		}
		if sa.pending == nil {
			d.answered(sa)
		}
		return
	}
	// A request: retransmission, or the next one in the window of 1.
	switch {
	case m.MessageID+1 == sa.peerMsgID && sa.lastResp != nil:
		// A retransmission (for a fragmented request, its first fragment
		// only triggers the resend, RFC 7383 §2.6.1).
		if (m.skType != PayloadSKF || fragNumber(m) == 1) && sa.retransmitted(m) {
			d.send(sa, sa.lastResp...)
		}
		return
	case m.MessageID != sa.peerMsgID:
		return
	}
	if full, err := d.openErr(sa, m); err != nil {
		var ce *CriticalError
		if errors.As(err, &ce) {
			d.respond(sa, m, []Payload{&NotifyPayload{NotifyType: UNSUPPORTED_CRITICAL_PAYLOAD, Data: []byte{byte(ce.Type)}}})
		}
		return
	} else if m = full; m == nil {
		return
	}
	if natt && !sa.natt {
		sa.natt = true
	}
	d.setRemote(sa, from)
	sa.lastHeard, sa.suspect = time.Now(), false
	var resp []Payload
	switch m.Exchange {
	case IKE_AUTH:
		if sa.state != stateInitDone {
			return
		}
		sa.rhs.processAuth(m)
		return
	case INFORMATIONAL:
		resp = d.onInformational(sa, m)
	case CREATE_CHILD_SA:
		if sa.state != stateEstablished {
			return
		}
		resp = d.onCreateChildSA(sa, m)
	default:
		return
	}
	d.respond(sa, m, resp)
	if sa.state == stateDeleting {
		d.teardown(sa, nil)
	}
}

// open decrypts m, or adds it to the message being reassembled from
// fragments; it returns the whole decrypted message, or nil.
func (d *Daemon) open(sa *ikeSA, m *Message) *Message {
	full, _ := d.openErr(sa, m)
	return full
}

// openErr is open, with the reason for a nil message (nil while fragments
// are missing).
func (d *Daemon) openErr(sa *ikeSA, m *Message) (*Message, error) {
	if m.skType == PayloadSKF {
		full, err := sa.reassemble(m)
		if err != nil {
			d.log.Debug("dropping IKE fragment", "peer", sa.peer.Name, "err", err)
		}
		return full, err
	}
	if err := sa.decrypt(m); err != nil {
		d.log.Debug("dropping message that does not decrypt", "peer", sa.peer.Name, "err", err)
		return nil, err
	}
	return m, nil
}

// retransmitted reports whether m, with the ID of the request last
// answered, is that request again: the same octets (for a fragmented
// request, the same first fragment), or one the peer authenticated (it
// refragmented, RFC 7383 §2.5.2). Anything else, such as a forged packet
// with the right SPIs and message ID, gets no cached response.
func (sa *ikeSA) retransmitted(m *Message) bool {
	if m.sum() == sa.lastReq {
		return true
	}
	body := m.skOff + payloadHeaderLen
	if m.skType == PayloadSKF {
		body += skfExtraLen
	}
	if !m.Encrypted() || len(m.raw) < body {
		return false
	}
	_, err := sa.in.open(m.raw, body)
	return err == nil
}

func fragNumber(m *Message) int {
	if len(m.raw) < m.skOff+payloadHeaderLen+2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(m.raw[m.skOff+payloadHeaderLen:]))
}

// respond sends and caches the encrypted response to request m.
func (d *Daemon) respond(sa *ikeSA, m *Message, payloads []Payload) {
	b, err := sa.encryptFrags(m.Exchange, m.MessageID, true, payloads)
	if err != nil {
		d.log.Error("building response", "peer", sa.peer.Name, "err", err)
		return
	}
	sa.peerMsgID = m.MessageID + 1
	sa.lastResp = b
	sa.lastReq = m.sum()
	d.send(sa, b...)
}

// Authorizer decides whether an authenticated peer is acceptable.
type Authorizer interface {
	AuthorizePeer(PeerIdentity) error
}
