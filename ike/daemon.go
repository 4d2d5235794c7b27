package ike

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/policy"
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
	// InstallChild installs an established Child SA (using its reserved
	// inbound SPI) and sets c.Handle.
	InstallChild(c *ChildSA) error
	// RemoveChild removes an installed Child SA.
	RemoveChild(c *ChildSA)
	// ChildInPackets returns how many packets the Child SA accepted, for
	// dead-peer detection.
	ChildInPackets(c *ChildSA) uint64
	// SendKeepalive sends a NAT-keepalive (RFC 3948 §2.3) from the NAT-T
	// port.
	SendKeepalive(to netip.AddrPort) error
}

// PeerConfig is one configured peer (a "configured tunnel").
type PeerConfig struct {
	Name string
	// Addr is the peer's address; IKEPort and NATTPort its ports (500 and
	// 4500 unless set).
	Addr              netip.Addr
	IKEPort, NATTPort uint16
	// LocalID is sent as our identity; RemoteID must match the peer's
	// (a zero RemoteID accepts the peer's address as its identity, which
	// a certificate must then confirm; opportunistic peers excepted).
	LocalID, RemoteID Identity
	Auth              Credential
	PeerAuth          PeerAuth
	IKEProposals      []Proposal
	ESPProposals      []Proposal
	LocalTS, RemoteTS policy.Selectors

	// IKELifetime and ChildLifetime are when the IKE SA and each Child SA
	// are rekeyed (defaults 4h and 1h, minus up to 10% jitter).
	IKELifetime, ChildLifetime time.Duration
	// DPD is the interval of liveness checks when nothing was heard from
	// the peer (default 30s; negative disables them).
	DPD time.Duration
	// RetransmitBase and RetransmitTries bound retransmission: the first
	// retry after RetransmitBase (default 500ms), doubling, giving up
	// after RetransmitTries (default 6) sends.
	RetransmitBase  time.Duration
	RetransmitTries int
	// Keepalive is the NAT-keepalive interval while IKE uses the NAT-T
	// port (default 20s, RFC 3948 §4).
	Keepalive time.Duration
	// FragmentSize is the largest encrypted IKE message sent whole when
	// the peer supports fragmentation (default DefaultFragmentSize).
	FragmentSize int
	// AutoStart re-initiates the IKE SA after it failed or the peer died,
	// backing off exponentially while it keeps failing.
	AutoStart bool
	// restarts counts the failures since the peer last came up.
	restarts int
	// refusalLogged is when a refusal of the peer's proposals was last
	// logged at WARN (logRefusal).
	refusalLogged time.Time

	// Opportunistic marks a peer that opportunism made (AddPeer, or
	// Config.Responder): it is never found by the address of a configured
	// peer, the Authorizer is not asked (its key came from DNS, or it is
	// unauthenticated), and it is forgotten when its last IKE SA goes.
	Opportunistic bool
	// LookupKey, if set, finds the public key of a peer that
	// authenticates with a signature when PeerAuth pins none: the
	// reverse-zone check of an opportunistic initiator
	// (draft-richardson-ipsec-opportunistic §4.12.2). It runs on a
	// goroutine of its own and may block.
	LookupKey func(id Identity, addr netip.Addr) (crypto.PublicKey, error)
	// CheckNull, if set, is asked before a peer that authenticates with
	// AUTH_NULL from addr is accepted: an error refuses it (opportunism
	// refuses AUTH_NULL for an address that must be authenticated). It
	// runs on the daemon's goroutine and must not block.
	CheckNull func(addr netip.Addr) error

	// AutoVPN (draft-sheffer-autovpn §8): AutoVPNNonce, as initiator, is
	// the Nonce-R of the completed probe, sent in IKE_SA_INIT; Contact is
	// sent as Contact Details in IKE_AUTH; SendSharedSecret asks for a
	// shared secret with AUTOVPN_SHARED_SECRET in IKE_AUTH.
	AutoVPNNonce     []byte
	Contact          string
	SendSharedSecret bool
	// OnEstablished, if set, is told (on the daemon's goroutine; it must
	// not block) what the IKE_AUTH exchange revealed about the peer.
	OnEstablished func(EstablishedInfo)
	// OnIKERekey, if set, is told (on the daemon's goroutine; it must not
	// block) that the IKE SA was rekeyed, by either side: opportunism
	// checks then that the peer's key is still published.
	OnIKERekey func()
}

// EstablishedInfo is what an IKE SA's authentication said about the peer.
type EstablishedInfo struct {
	Peer   string
	Remote netip.AddrPort
	PeerID Identity
	// Cert is the certificate the peer sent (with a shared secret: the
	// one it now uses, perhaps a rolled one).
	Cert *x509.Certificate
	// BySharedSecret is set when the peer authenticated with the AutoVPN
	// shared secret.
	BySharedSecret bool
	// Contact is the peer's Contact Details, plain text.
	Contact string
	// SharedSecret is set when either side sent AUTOVPN_SHARED_SECRET:
	// prf+(SK_d, "shared secret for AutoVPN") of this IKE SA.
	SharedSecret []byte
}

func (p *PeerConfig) ikeAddr() netip.AddrPort { return netip.AddrPortFrom(p.Addr, or(p.IKEPort, 500)) }
func (p *PeerConfig) nattAddr() netip.AddrPort {
	return netip.AddrPortFrom(p.Addr, or(p.NATTPort, 4500))
}

func or(v, def uint16) uint16 {
	if v == 0 {
		return def
	}
	return v
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
	dynamic    map[string]*PeerConfig // opportunistic peers, by name
	wg         sync.WaitGroup
	once       sync.Once
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
		halfByAddr: map[netip.Addr]int{}, respByAddr: map[netip.Addr]int{}, cookies: newCookies(), dynamic: map[string]*PeerConfig{},
		ctl: controlQueue{wake: make(chan struct{}, 1)}, known: make(chan packet, packetQueueLen), inits: make(chan packet, packetQueueLen), bulk: make(chan packet, packetQueueLen),
		done: make(chan struct{}), halfOpenTimeout: halfOpenTimeout}
	d.publishHalf()
	d.after(watchTick, d.watchTraffic)
	d.wg.Add(1)
	go d.routineLoop()
	return d, nil
}

func (p *PeerConfig) setDefaults() error {
	if len(p.IKEProposals) == 0 {
		p.IKEProposals, _ = ParseProposals(DefaultIKEProposals, ProtoIKE)
	}
	if len(p.ESPProposals) == 0 {
		p.ESPProposals, _ = ParseProposals(DefaultESPProposals, ProtoESP)
	}
	if len(p.LocalTS) == 0 || len(p.RemoteTS) == 0 {
		return fmt.Errorf("ike: peer %s: traffic selectors missing", p.Name)
	}
	return nil
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
		for _, sa := range d.sas {
			if sa.peer.Name != name {
				continue
			}
			sa.stopped = true
			var why error
			switch {
			case sa.state == stateEstablished:
				d.sendDeleteIKE(sa)
			case !sa.rekeyed:
				why = ErrDown
			}
			d.teardown(sa, why)
			n++
		}
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
				if sa.state == stateEstablished && !sa.rekeyed && len(sa.children) == 0 {
					// The peer deleted the last Child SA: make a new one.
					d.createChild(sa)
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

func (d *Daemon) peerByName(name string) *PeerConfig {
	for _, p := range d.cfg.Peers {
		if p.Name == name {
			return p
		}
	}
	return d.dynamic[name]
}

// forgetIfUnused drops an opportunistic peer that has no IKE SA left.
func (d *Daemon) forgetIfUnused(p *PeerConfig) {
	if !p.Opportunistic || d.dynamic[p.Name] != p {
		return
	}
	for _, sa := range d.sas {
		if sa.peer == p {
			return
		}
	}
	delete(d.dynamic, p.Name)
}

func (d *Daemon) peerByAddr(a netip.Addr) *PeerConfig {
	for _, p := range d.cfg.Peers {
		if p.Addr == a.Unmap() {
			return p
		}
	}
	return nil
}

func randSPI() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if s := binary.BigEndian.Uint64(b[:]); s != 0 {
			return s
		}
	}
}

func randNonce() []byte {
	b := make([]byte, nonceLen)
	rand.Read(b)
	return b
}

// natHash is the NAT_DETECTION hash of §2.23: SHA-1(SPIi | SPIr | IP | port).
func natHash(spiI, spiR uint64, ap netip.AddrPort) []byte {
	h := sha1.New()
	binary.Write(h, binary.BigEndian, spiI)
	binary.Write(h, binary.BigEndian, spiR)
	h.Write(ap.Addr().Unmap().AsSlice())
	binary.Write(h, binary.BigEndian, ap.Port())
	return h.Sum(nil)
}

// natNotifies returns the NAT detection notifies. oevpn's datapath carries
// ESP in UDP only, so like strongSwan's encap=yes it sends a source hash
// that cannot match: the peer sees a NAT and encapsulates too (§2.23).
func natNotifies(spiI, spiR uint64, to netip.AddrPort) []Payload {
	bogus := make([]byte, sha1.Size)
	rand.Read(bogus)
	return []Payload{
		&NotifyPayload{NotifyType: NAT_DETECTION_SOURCE_IP, Data: bogus},
		&NotifyPayload{NotifyType: NAT_DETECTION_DESTINATION_IP, Data: natHash(spiI, spiR, to)},
	}
}

func sigHashNotify() *NotifyPayload {
	return &NotifyPayload{NotifyType: SIGNATURE_HASH_ALGORITHMS, Data: []byte{0, HashSHA2_256, 0, HashSHA2_384, 0, HashSHA2_512, 0, HashIdentity}}
}

// send transmits msg to the peer on its current port.
func (d *Daemon) send(sa *ikeSA, msgs ...[]byte) {
	to := sa.remote
	for _, msg := range msgs {
		if err := d.dp.SendIKE(msg, to, sa.natt); err != nil {
			d.log.Warn("sending IKE message failed", "peer", sa.peer.Name, "to", to, "err", err)
			return
		}
	}
}

// sendRequest sends a request and retransmits it with exponential backoff
// until answered or given up.
func (d *Daemon) sendRequest(sa *ikeSA, msgs [][]byte, id uint32, onResponse func(*ikeSA, *Message)) {
	if sa.pending != nil && sa.pending.timer != nil {
		sa.pending.timer.Stop()
	}
	r := &request{msgs: msgs, id: id, onResponse: onResponse}
	sa.pending = r
	d.send(sa, msgs...)
	var arm func(delay time.Duration)
	arm = func(delay time.Duration) {
		r.timer = time.AfterFunc(delay, func() {
			d.post(func() {
				if sa.pending != r || sa.state == stateDead {
					return
				}
				r.tries++
				if r.tries >= sa.retransmitTries() {
					d.log.Warn("peer does not answer; giving up", "peer", sa.peer.Name, "tries", r.tries)
					d.teardown(sa, errDeadPeer)
					return
				}
				d.log.Debug("retransmitting", "peer", sa.peer.Name, "message_id", id, "try", r.tries)
				d.send(sa, msgs...)
				arm(delay * 2)
			})
		})
	}
	arm(sa.peer.retransmitBase())
}

func (d *Daemon) answered(sa *ikeSA) {
	if sa.pending != nil && sa.pending.timer != nil {
		sa.pending.timer.Stop()
	}
	sa.pending = nil
	// The window (of one) is free: start the next queued request.
	if len(sa.queue) > 0 && sa.state == stateEstablished {
		next := sa.queue[0]
		sa.queue = sa.queue[1:]
		d.startRequest(sa, next)
	}
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
	for _, t := range []*time.Timer{sa.rekeyTimer, sa.dpdTimer, sa.keepaliveTimer} {
		if t != nil {
			t.Stop()
		}
	}
	for _, c := range sa.children {
		if c.rekeyTimer != nil {
			c.rekeyTimer.Stop()
		}
		d.dp.RemoveChild(c)
	}
	sa.children = nil
	if sa.childSPI != 0 {
		d.dp.ReleaseSPI(sa.childSPI)
		sa.childSPI = 0
	}
	d.deleteSA(sa.ourSPI())
	d.dropHalf(sa)
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
		d.onInitResponse(sa, m, from)
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
			d.onAuthResponse(sa, m)
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
		d.onAuthRequest(sa, m)
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

// onInformational handles Delete payloads and liveness checks.
func (d *Daemon) onInformational(sa *ikeSA, m *Message) []Payload {
	var resp []Payload
	if n := m.Notify(AUTHENTICATION_FAILED); n != nil {
		// §2.21.2: the initiator could not authenticate our IKE_AUTH
		// response, after we installed the first Child SA. The IKE SA
		// and its Child SAs are void.
		d.log.Warn("peer refused our authentication; removing the IKE SA and its Child SAs", "peer", sa.peer.Name,
			"auth", sa.peer.Auth.Method(), "local_id", ourID(sa.peer), "notify", n.NotifyType)
		sa.state = stateDeleting
		return nil
	}
	for _, p := range m.Payloads {
		del, ok := p.(*DeletePayload)
		if !ok {
			continue
		}
		switch del.Protocol {
		case ProtoIKE:
			d.log.Info("peer deleted the IKE SA", "peer", sa.peer.Name)
			d.promoteColliding(sa)
			sa.state = stateDeleting
			return nil
		case ProtoESP:
			var ours [][]byte
			owner := sa.current()
			for _, spi := range del.SPIs {
				for i, c := range owner.children {
					if len(spi) == 4 && binary.BigEndian.Uint32(spi) == c.Out.SPI {
						ours = append(ours, binary.BigEndian.AppendUint32(nil, c.In.SPI))
						d.dp.RemoveChild(c)
						owner.children = append(owner.children[:i], owner.children[i+1:]...)
						d.log.Info("peer deleted a Child SA", "peer", sa.peer.Name, "spi_out", fmt.Sprintf("%#08x", c.Out.SPI))
						break
					}
				}
			}
			if len(ours) > 0 {
				resp = append(resp, &DeletePayload{Protocol: ProtoESP, SPIs: ours})
			}
		}
	}
	return resp
}

func (d *Daemon) sendDeleteIKE(sa *ikeSA) {
	b, err := sa.encrypt(INFORMATIONAL, sa.nextMsgID, false, []Payload{&DeletePayload{Protocol: ProtoIKE}})
	if err == nil {
		sa.nextMsgID++
		d.send(sa, b)
	}
}

// ---- initiator ----

func (d *Daemon) startInitiator(p *PeerConfig) error {
	groups := dhGroups(p.IKEProposals)
	if len(groups) == 0 {
		return fmt.Errorf("ike: peer %s: no DH group in the IKE proposals", p.Name)
	}
	sa := &ikeSA{d: d, peer: p, initiator: true, spiI: randSPI(), remote: p.ikeAddr(), created: time.Now()}
	if p.ikeAddr() == p.nattAddr() {
		// Start on the NAT-T port, behind the non-ESP marker (RFC 7296 §2.23).
		sa.natt = true
	}
	d.putSA(sa.spiI, sa)
	d.log.Info("initiating IKE SA", "peer", p.Name, "remote", sa.remote)
	return d.sendInit(sa, groups[0])
}

// sendInit sends IKE_SA_INIT with a KE for group. A retry with a COOKIE
// keeps the nonce and KE the cookie was computed over (§2.6).
func (d *Daemon) sendInit(sa *ikeSA, group uint16) error {
	if sa.group == nil || sa.group.id() != group || sa.cookie == nil {
		g, err := newDH(group)
		if err != nil {
			return err
		}
		sa.group = g
		if sa.dhPriv, sa.ke, err = g.generate(); err != nil {
			return err
		}
		sa.nI = randNonce()
	}
	m := &Message{Header: Header{SPIi: sa.spiI, Exchange: IKE_SA_INIT, Flags: FlagInitiator}}
	if sa.cookie != nil {
		m.Payloads = append(m.Payloads, &NotifyPayload{NotifyType: COOKIE, Data: sa.cookie})
	}
	m.Payloads = append(m.Payloads, &SAPayload{Proposals: sa.peer.IKEProposals}, &KEPayload{Group: group, Data: sa.ke},
		&NoncePayload{Data: sa.nI})
	if sa.peer.AutoVPNNonce != nil {
		m.Payloads = append(m.Payloads, &AutoVPNNoncePayload{Nonce: sa.peer.AutoVPNNonce})
	}
	m.Payloads = append(m.Payloads, natNotifies(sa.spiI, 0, sa.remote)...)
	m.Payloads = append(m.Payloads, sigHashNotify(), &NotifyPayload{NotifyType: IKEV2_FRAGMENTATION_SUPPORTED})
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	sa.initReq = b
	sa.state = stateInitSent
	d.sendRequest(sa, [][]byte{b}, 0, nil)
	return nil
}

func (d *Daemon) onInitResponse(sa *ikeSA, m *Message, from netip.AddrPort) {
	if m.MessageID != 0 {
		return
	}
	if n := m.Notify(COOKIE); n != nil && sa.cookieTries < 3 {
		d.answered(sa)
		sa.cookieTries++
		sa.cookie = bytes.Clone(n.Data)
		d.sendInit(sa, sa.group.id())
		return
	}
	if n := m.Notify(INVALID_KE_PAYLOAD); n != nil && len(n.Data) == 2 {
		g := binary.BigEndian.Uint16(n.Data)
		if g == sa.group.id() {
			return // the same answer to a retransmission of the request before the switch
		}
		for _, ours := range dhGroups(sa.peer.IKEProposals) {
			if ours == g && g != sa.group.id() {
				d.answered(sa)
				d.log.Info("peer asks for another DH group", "peer", sa.peer.Name, "group", g)
				d.sendInit(sa, g)
				return
			}
		}
		d.teardown(sa, fmt.Errorf("peer wants DH group %d, which we do not offer", g))
		return
	}
	if n := m.ErrorNotify(); n != nil {
		d.teardown(sa, fmt.Errorf("peer refused IKE_SA_INIT: %s", n.NotifyType.String()))
		return
	}
	sap, ke, nr := Get[*SAPayload](m), Get[*KEPayload](m), Get[*NoncePayload](m)
	if sap == nil || ke == nil || nr == nil || m.SPIr == 0 || len(sap.Proposals) != 1 {
		d.log.Debug("IKE_SA_INIT response without SA, KE or nonce", "peer", sa.peer.Name)
		return
	}
	d.answered(sa)
	chosen := sap.Proposals[0]
	if _, ok := intersectExact(&chosen, sa.peer.IKEProposals); !ok {
		d.teardown(sa, errors.New("peer chose an IKE proposal we did not offer"))
		return
	}
	suite, err := suiteOf(&chosen)
	if err != nil || suite.DH != sa.group.id() || ke.Group != suite.DH {
		d.teardown(sa, fmt.Errorf("peer's DH group does not match: %v", err))
		return
	}
	shared, err := sa.group.shared(sa.dhPriv, ke.Data)
	if err != nil {
		d.teardown(sa, err)
		return
	}
	sa.suite, sa.spiR, sa.nR, sa.initResp = suite, m.SPIr, bytes.Clone(nr.Data), bytes.Clone(m.Raw())
	sa.fragOK = m.Notify(IKEV2_FRAGMENTATION_SUPPORTED) != nil
	if err := sa.deriveKeys(shared); err != nil {
		d.teardown(sa, err)
		return
	}
	sa.dhPriv = nil
	// Our NAT_DETECTION_SOURCE_IP is bogus, so there is always a "NAT":
	// move to the NAT-T port (§2.23).
	sa.natt = true
	sa.remote = sa.peer.nattAddr()
	sa.nextMsgID = 1
	d.sendAuth(sa)
}

// intersectExact checks that chosen has one transform per type, each
// offered by one of ours.
func intersectExact(chosen *Proposal, ours []Proposal) (*Proposal, bool) {
	for i := range ours {
		if ours[i].Protocol != chosen.Protocol {
			continue
		}
		ok := true
		seen := map[TransformType]bool{}
		for _, t := range chosen.Transforms {
			if seen[t.Type] || !offers(&ours[i], t) {
				ok = false
				break
			}
			seen[t.Type] = true
		}
		if ok {
			return &ours[i], true
		}
	}
	return nil, false
}

// firstContact reports whether sa is the only IKE SA with its peer's address.
func (d *Daemon) firstContact(sa *ikeSA) bool {
	for _, other := range d.sas {
		if other != sa && other.state != stateDead && other.peer.Addr == sa.peer.Addr {
			return false
		}
	}
	return true
}

func (d *Daemon) localID(p *PeerConfig, local netip.Addr) Identity {
	if p.LocalID.Type != 0 {
		return p.LocalID
	}
	return IdentityOf(local)
}

func (d *Daemon) sendAuth(sa *ikeSA) {
	p := sa.peer
	spi, err := d.dp.ReserveSPI()
	if err != nil {
		d.teardown(sa, err)
		return
	}
	sa.childSPI = spi
	id := ourID(p).payload(true)
	auth, err := makeAuth(sa.prf, &p.Auth, signedOctets(sa.prf, sa.initReq, sa.nR, sa.skPi, id))
	if err != nil {
		d.teardown(sa, err)
		return
	}
	props := make([]Proposal, len(p.ESPProposals))
	for i, pr := range p.ESPProposals {
		pr.SPI = binary.BigEndian.AppendUint32(nil, spi)
		pr.Transforms = withoutDH(pr.Transforms) // no KE in IKE_AUTH (§1.2)
		props[i] = pr
	}
	payloads := append(append([]Payload{id}, certPayloads(p)...), certReqPayloads(&p.PeerAuth)...)
	if d.firstContact(sa) {
		// §2.4: only when we hold no other IKE SA with this peer, or the
		// peer would drop SAs that are still in use.
		payloads = append(payloads, &NotifyPayload{NotifyType: INITIAL_CONTACT})
	}
	if p.RemoteID.Type != 0 {
		payloads = append(payloads, p.RemoteID.payload(false))
	}
	payloads = append(payloads, autovpnPayloads(sa)...)
	payloads = append(payloads, auth, &SAPayload{Proposals: props},
		&TSPayload{Initiator: true, Selectors: wireSelectors(p.LocalTS)},
		&TSPayload{Initiator: false, Selectors: wireSelectors(p.RemoteTS)})
	b, err := sa.encryptFrags(IKE_AUTH, 1, false, payloads)
	if err != nil {
		d.teardown(sa, err)
		return
	}
	sa.state = stateAuthSent
	sa.nextMsgID = 2
	d.sendRequest(sa, b, 1, nil)
}

func (d *Daemon) onAuthResponse(sa *ikeSA, m *Message) {
	p := sa.peer
	idr, auth := m.ID(false), Get[*AuthPayload](m)
	refused := m.ErrorNotify()
	if idr == nil || auth == nil {
		err := fmt.Errorf("%w: IKE_AUTH response without IDr or AUTH", ErrMissing)
		if refused != nil {
			err = fmt.Errorf("peer refused IKE_AUTH: %s", refused.NotifyType.String())
			if refused.NotifyType == AUTHENTICATION_FAILED && p.Auth.Null {
				err = fmt.Errorf("%w (we authenticated with AUTH_NULL, RFC 7619, which the peer may not implement)", err)
			}
		}
		d.teardown(sa, err)
		return
	}
	peerID := Identity{Type: idr.IDType, Data: idr.Data}
	if !d.acceptID(p, peerID) {
		d.sendDeleteIKE(sa) // the responder thinks the SA is up (§2.21.2)
		d.teardown(sa, fmt.Errorf("%w: peer identity %v is not %s", ErrAuth, peerID, expectedID(p)))
		return
	}
	if err := d.verifyPeer(sa, m, peerID, auth, signedOctets(sa.prf, sa.initResp, sa.nI, sa.skPr, idr)); err != nil {
		d.sendDeleteIKE(sa) // the responder thinks the SA is up (§2.21.2)
		d.teardown(sa, err)
		return
	}
	// The IKE SA is authenticated; the first Child SA may still have been
	// refused (§1.2). An IKE SA without the Child SA it was made for is
	// useless to a configured tunnel: delete it at the peer too, so that
	// it does not linger there, and let the restart back off.
	if err := d.firstChild(sa, m, refused); err != nil {
		d.log.Warn("the peer refused the Child SA; deleting the IKE SA", "peer", p.Name, "err", err)
		d.sendDeleteIKE(sa)
		d.teardown(sa, err)
		return
	}
	sa.peerIDSeen = peerID
	readAutoVPN(sa, m)
	d.established(sa)
	p.restarts = 0
	d.reportEstablished(sa)
	d.log.Info("IKE SA established", "peer", p.Name, "remote", sa.remote, "peer_id", peerID, "auth", authMethodName(auth.Method),
		"spi_i", fmt.Sprintf("%016x", sa.spiI), "spi_r", fmt.Sprintf("%016x", sa.spiR))
	if d.cfg.OnChange != nil {
		d.cfg.OnChange(p.Name, true, nil)
	}
	if d.installChild(sa, sa.firstProp, sa.nI, sa.nR, nil, sa.childSPI, true, sa.firstTS[0], sa.firstTS[1]) == nil {
		d.dp.ReleaseSPI(sa.childSPI)
	}
	sa.childSPI, sa.firstProp, sa.firstTS = 0, nil, [2][]TrafficSelector{}
	d.dropDuplicate(sa)
	d.coverSelectors(sa)
}

// ErrChildRefused is wrapped when the peer refused, or answered
// unacceptably, the Child SA negotiated with the IKE SA.
var ErrChildRefused = errors.New("ike: Child SA refused")

// firstChild checks the Child SA of an IKE_AUTH response (whose error
// notify, if any, is refused) and keeps what installChild needs.
func (d *Daemon) firstChild(sa *ikeSA, m *Message, refused *NotifyPayload) error {
	p := sa.peer
	if refused != nil {
		return fmt.Errorf("%w: %s (we offered ESP %s, selectors %s === %s)", ErrChildRefused, refused.NotifyType,
			proposalsString(p.ESPProposals), p.LocalTS, p.RemoteTS)
	}
	sap, tsi, tsr := Get[*SAPayload](m), m.TS(true), m.TS(false)
	if sap == nil || tsi == nil || tsr == nil || len(sap.Proposals) != 1 {
		return fmt.Errorf("%w: the response has no Child SA (notifies %v)", ErrChildRefused, notifyList(m))
	}
	chosen := sap.Proposals[0]
	if _, ok := intersectExact(&chosen, p.ESPProposals); !ok || len(chosen.SPI) != 4 {
		return fmt.Errorf("%w: the peer chose an ESP proposal we did not offer", ErrChildRefused)
	}
	if !within(tsi.Selectors, wireSelectors(p.LocalTS)) || !within(tsr.Selectors, wireSelectors(p.RemoteTS)) {
		return fmt.Errorf("%w: the peer's traffic selectors %s === %s exceed ours", ErrChildRefused,
			selectors(tsi.Selectors), selectors(tsr.Selectors))
	}
	sa.firstProp, sa.firstTS = &chosen, [2][]TrafficSelector{tsi.Selectors, tsr.Selectors}
	return nil
}

func notifyList(m *Message) []string {
	var l []string
	for _, p := range m.Payloads {
		if n, ok := p.(*NotifyPayload); ok {
			l = append(l, n.NotifyType.String())
		}
	}
	return l
}

// installChild keys and installs a Child SA of sa negotiated with chosen
// (whose SPI is the peer's), the exchange's nonces and, with PFS, the new
// shared secret. tsi and tsr are the exchange's final selectors.
func (d *Daemon) installChild(via *ikeSA, chosen *Proposal, nI, nR, shared []byte, ourSPI uint32, weInitiated bool, tsi, tsr []TrafficSelector) *ChildSA {
	return d.installChildDeferred(via, chosen, nI, nR, shared, ourSPI, weInitiated, tsi, tsr, false)
}

func (d *Daemon) installChildDeferred(via *ikeSA, chosen *Proposal, nI, nR, shared []byte, ourSPI uint32, weInitiated bool, tsi, tsr []TrafficSelector, deferred bool) *ChildSA {
	// Keys come from the IKE SA the exchange ran in; the Child SA belongs
	// to the one that replaced it, if it was rekeyed meanwhile.
	sa := via
	cs, err := childSuiteOf(chosen)
	if err != nil {
		d.log.Warn("bad ESP proposal", "peer", sa.peer.Name, "err", err)
		return nil
	}
	peerSPI := binary.BigEndian.Uint32(chosen.SPI)
	out, in, err := sa.childKeys(cs, nI, nR, shared, ourSPI, peerSPI, weInitiated)
	if err != nil {
		d.log.Warn("keying Child SA", "peer", sa.peer.Name, "err", err)
		return nil
	}
	// The hard lifetime is a backstop: rekeying happens at the soft one.
	life := sa.peer.childLifetime()
	hard := esp.Lifetime{Time: life + life/10 + 30*time.Second}
	soft := esp.Lifetime{}
	if !cs.ESN {
		soft.Packets = 1<<32 - 1<<24 // rekey well before the 32-bit sequence number runs out
	}
	out.Soft, out.Hard, in.Hard = soft, hard, hard
	local, remote := tsi, tsr
	if !weInitiated {
		local, remote = tsr, tsi
	}
	c := &ChildSA{ike: sa, Peer: sa.peer.nattAddr(), Local: selectors(local), Remote: selectors(remote), Out: out, In: in, Suite: cs,
		nonce: minNonce(nI, nR), Deferred: deferred, peerAuth: sa.peerAuthMethod()}
	if sa.natt {
		// Where the peer's authenticated messages come from, as a NAT
		// in front of it maps its port 4500 (RFC 7296 §2.23, RFC 3948).
		c.Peer = sa.remote
	}
	if err := d.dp.InstallChild(c); err != nil {
		d.log.Warn("installing Child SA", "peer", sa.peer.Name, "err", err)
		return nil
	}
	owner := via.current()
	c.ike = owner
	owner.children = append(owner.children, c)
	d.scheduleChildRekey(c)
	d.log.Info("Child SA installed", "peer", sa.peer.Name, "transform", out.Transform, "esn", cs.ESN,
		"spi_in", fmt.Sprintf("%#08x", in.SPI), "spi_out", fmt.Sprintf("%#08x", out.SPI), "local", c.Local, "remote", c.Remote)
	return c
}

// withoutDH drops DH transforms: a Child SA created in IKE_AUTH has no
// KE payload, so no PFS.
func withoutDH(ts []Transform) []Transform {
	out := make([]Transform, 0, len(ts))
	for _, t := range ts {
		if t.Type != TransformDH {
			out = append(out, t)
		}
	}
	return out
}

func minNonce(a, b []byte) []byte {
	if bytes.Compare(a, b) < 0 {
		return a
	}
	return b
}

func (d *Daemon) acceptID(p *PeerConfig, id Identity) bool {
	if p.RemoteID.Type != 0 {
		return p.RemoteID.Equal(id)
	}
	// A configured peer must be its address: with certificates, the
	// certificate must then name the address (checked with the AUTH
	// payload), so that a CA's certificate for another identity does
	// not do. An opportunistic peer's key came from its address's
	// reverse zone: the key, not the name, speaks for the address; an
	// AutoVPN peer's certificate is for the trust store to judge.
	return IdentityOf(p.Addr).Equal(id) || (p.PeerAuth.Null && id.Type == IDNull) || p.PeerAuth.LeapOfFaith != nil ||
		(p.Opportunistic && p.PeerAuth.PublicKey != nil)
}

// expectedID describes the identity acceptID wants, for error messages.
func expectedID(p *PeerConfig) string {
	if p.RemoteID.Type != 0 {
		return "the configured " + p.RemoteID.String()
	}
	return "the peer's address " + p.Addr.String() + " (the default remote ID)"
}

// Authorizer decides whether an authenticated peer is acceptable.
type Authorizer interface {
	AuthorizePeer(policy.PeerIdentity) error
}

// verifyPeer checks the peer's AUTH payload over octets with the key its
// configuration or certificate gives, then asks the Authorizer.
func (d *Daemon) verifyPeer(sa *ikeSA, m *Message, id Identity, auth *AuthPayload, octets []byte) error {
	var sent []*CertPayload
	for _, p := range m.Payloads {
		if c, ok := p.(*CertPayload); ok && !c.Request {
			sent = append(sent, c)
		}
	}
	pa := sa.peer.PeerAuth
	if sa.lookedUp != nil {
		pa.PublicKey = sa.lookedUp
	}
	if auth.Method == AuthPSK && pa.PSK == nil && pa.SharedSecret != nil {
		// AutoVPN: the shared secret authenticates the peer, whatever
		// certificate it now presents (§9.2), which is kept for a roll.
		var cert *x509.Certificate
		for _, c := range sent {
			if pc, err := x509.ParseCertificate(c.Data); err == nil && c.Encoding == CertX509Signature && certConfirms(pc, id) {
				cert = pc
				break
			}
		}
		if pa.PSK = pa.SharedSecret(id, cert); pa.PSK == nil {
			return fmt.Errorf("%w: peer used a shared secret, and none is kept (or usable) for %v", ErrAuth, id)
		}
		if err := verifyAuth(sa.prf, &pa, auth, octets); err != nil {
			return err
		}
		sa.bySecret = true
		sa.authSecret = pa.PSK
		sa.peerCert = cert
		return nil
	}
	key, cert, err := peerKeyCert(&pa, id, sent)
	if err != nil {
		return err
	}
	pa.PublicKey = key
	if err := verifyAuth(sa.prf, &pa, auth, octets); err != nil {
		return err
	}
	sa.peerCert = cert
	sa.peerNull = auth.Method == AuthNULL
	if d.cfg.Authorizer == nil || sa.peer.Opportunistic {
		return nil
	}
	method := "signature"
	switch auth.Method {
	case AuthPSK:
		method, key = "psk", nil
	case AuthNULL:
		method, key = "null", nil
	}
	if err := d.cfg.Authorizer.AuthorizePeer(policy.PeerIdentity{Peer: sa.peer.Name, Identity: id.String(), Key: key, Method: method}); err != nil {
		return fmt.Errorf("%w: %w", ErrAuth, err)
	}
	return nil
}

// ourID returns the identity we use with p.
func ourID(p *PeerConfig) Identity {
	switch {
	case p.LocalID.Type != 0:
		return p.LocalID
	case p.Auth.Cert != nil:
		return CertIdentity(p.Auth.Cert)
	}
	return Identity{Type: IDNull}
}

// certPayloads returns our CERT payloads: our certificate and the
// intermediate CA certificates after it, if we have a certificate. They are
// sent whether or not the peer asked with a CERTREQ (§3.6 allows it), as
// a peer with strongSwan's send_cert = ifasked would ask anyway.
func certPayloads(p *PeerConfig) []Payload {
	if p.Auth.Cert == nil {
		return nil
	}
	out := []Payload{&CertPayload{Encoding: CertX509Signature, Data: p.Auth.Cert.Raw}}
	for _, c := range p.Auth.Chain {
		out = append(out, &CertPayload{Encoding: CertX509Signature, Data: c.Raw})
	}
	return out
}

// ---- AutoVPN (draft-sheffer-autovpn §8) ----

// sharedSecretLabel is the prf+ seed of the AutoVPN shared secret (§9.2).
const sharedSecretLabel = "shared secret for AutoVPN"

// autovpnPayloads returns our Contact Details and AUTOVPN_SHARED_SECRET
// for an IKE_AUTH message, as the peer's configuration asks.
func autovpnPayloads(sa *ikeSA) []Payload {
	var out []Payload
	if sa.peer.Contact != "" {
		out = append(out, &ContactDetailsPayload{Text: sa.peer.Contact})
	}
	if sa.peer.SendSharedSecret {
		sa.sentSecretReq = true
		out = append(out, &NotifyPayload{NotifyType: AUTOVPN_SHARED_SECRET})
	}
	return out
}

// readAutoVPN notes the AutoVPN payloads of the peer's IKE_AUTH message.
func readAutoVPN(sa *ikeSA, m *Message) {
	if c := Get[*ContactDetailsPayload](m); c != nil {
		sa.peerContact = c.Text
	}
	if m.Notify(AUTOVPN_SHARED_SECRET) != nil {
		sa.sentSecretReq = true
	}
}

// reportEstablished tells the peer's OnEstablished what IKE_AUTH revealed,
// and forgets the peer's certificate and Contact Details: nothing else
// needs them, and a parsed certificate is the largest part of an
// established IKE SA.
func (d *Daemon) reportEstablished(sa *ikeSA) {
	p := sa.peer
	cert, contact := sa.peerCert, sa.peerContact
	sa.peerCert, sa.peerContact = nil, ""
	if p.OnEstablished == nil {
		return
	}
	info := EstablishedInfo{Peer: p.Name, Remote: sa.remote, PeerID: sa.peerIDSeen, Cert: cert,
		BySharedSecret: sa.bySecret, Contact: contact}
	if sa.sentSecretReq {
		info.SharedSecret = sa.prf.plus(sa.skD, []byte(sharedSecretLabel), sa.prf.size)
	}
	p.OnEstablished(info)
}

// ---- responder ----

func (d *Daemon) onInitRequest(m *Message, from netip.AddrPort, to netip.Addr, natt bool) {
	key := halfKey{m.SPIi, from}
	if sa := d.half[key]; sa != nil {
		if bytes.Equal(m.Raw(), sa.initReq) && sa.initResp != nil {
			d.send(sa, sa.initResp) // retransmitted request
		}
		return
	}
	sap, ke, ni := Get[*SAPayload](m), Get[*KEPayload](m), Get[*NoncePayload](m)
	if sap == nil || ke == nil || ni == nil || m.MessageID != 0 {
		d.log.Debug("IKE_SA_INIT without SA, KE or nonce", "from", from)
		return
	}
	// Bound what remote input makes us keep (limits.go): beyond the caps,
	// drop before any DH work.
	addr := from.Addr()
	switch {
	case len(m.Raw()) > MaxInitRequest:
		d.log.Debug("IKE_SA_INIT too large: dropped", "from", from, "octets", len(m.Raw()))
		return
	case d.halfByAddr[addr] >= MaxHalfOpenPerAddr:
		d.log.Debug("too many half-open IKE SAs from this address: dropped", "from", from)
		return
	case len(d.half) >= MaxHalfOpen:
		d.log.Debug("too many half-open IKE SAs: dropped", "from", from)
		return
	}
	reply := func(n *NotifyPayload) {
		r := &Message{Header: Header{SPIi: m.SPIi, Exchange: IKE_SA_INIT, Flags: FlagResponse}, Payloads: []Payload{n}}
		if b, err := r.Marshal(); err == nil {
			d.dp.SendIKE(b, from, natt)
		}
	}
	if d.underAttack() || d.halfByAddr[addr] >= cookieThresholdPerAddr {
		// §2.6: with many half-open SAs (from this address), make the
		// initiator prove that it receives at its address before
		// spending DH work on it (or using up an AutoVPN probe, or the
		// address's allowance of half-open SAs).
		c := m.Notify(COOKIE)
		if c == nil || !d.cookies.valid(c.Data, ni.Data, addr, m.SPIi) {
			reply(&NotifyPayload{NotifyType: COOKIE, Data: d.cookies.make(ni.Data, addr, m.SPIi)})
			return
		}
	}
	if d.ikeSAsAt(addr) >= MaxIKESAsPerAddr {
		d.log.Debug("too many IKE SAs with this address: IKE_SA_INIT dropped", "from", from)
		return
	}
	p := d.peerByAddr(from.Addr())
	var avNonce []byte // AutoVPN: spent only once the request is acceptable
	if p == nil && d.cfg.Responder != nil {
		if av := Get[*AutoVPNNoncePayload](m); av != nil {
			avNonce = av.Nonce
		}
		p = d.responderPeer(from, to, avNonce)
	}
	if p == nil {
		d.log.Debug("IKE_SA_INIT from an address with no configured peer", "from", from)
		return
	}
	defer d.forgetIfUnused(p) // an opportunistic peer that got no SA
	chosen, err := choose(sap.Proposals, p.IKEProposals, ProtoIKE)
	if err != nil {
		d.logRefusal(p, "no acceptable IKE proposal", "from", from,
			"offered", proposalsString(sap.Proposals), "configured", proposalsString(p.IKEProposals))
		reply(&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN})
		return
	}
	suite, err := suiteOf(chosen)
	if err != nil {
		reply(&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN})
		return
	}
	if ke.Group != suite.DH {
		// §1.2: tell the initiator which group we want.
		reply(&NotifyPayload{NotifyType: INVALID_KE_PAYLOAD, Data: binary.BigEndian.AppendUint16(nil, suite.DH)})
		return
	}
	g, err := newDH(suite.DH)
	if err != nil {
		reply(&NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN})
		return
	}
	if avNonce != nil && d.cfg.ClaimAutoVPNNonce != nil && !d.cfg.ClaimAutoVPNNonce(from, avNonce) {
		d.log.Info("IKE_SA_INIT with an AutoVPN nonce already spent", "from", from)
		return
	}
	// Keep exact copies of what AUTH needs, not the received datagram
	// they point into.
	sa := &ikeSA{d: d, peer: p, spiI: m.SPIi, spiR: randSPI(), remote: from, natt: natt, suite: suite, group: g,
		nI: bytes.Clone(ni.Data), nR: randNonce(), initReq: bytes.Clone(m.Raw()), created: time.Now(), peerMsgID: 1,
		fragOK: m.Notify(IKEV2_FRAGMENTATION_SUPPORTED) != nil}
	priv, pub, err := g.generate()
	if err != nil {
		return
	}
	shared, err := g.shared(priv, ke.Data)
	if err != nil {
		d.log.Debug("bad KE in IKE_SA_INIT", "from", from, "err", err)
		reply(&NotifyPayload{NotifyType: INVALID_SYNTAX})
		return
	}
	if err := sa.deriveKeys(shared); err != nil {
		d.log.Warn("deriving IKE keys", "err", err)
		return
	}
	r := &Message{Header: Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: IKE_SA_INIT, Flags: FlagResponse}}
	r.Payloads = append(r.Payloads, &SAPayload{Proposals: []Proposal{*chosen}}, &KEPayload{Group: suite.DH, Data: pub},
		&NoncePayload{Data: sa.nR})
	r.Payloads = append(r.Payloads, certReqPayloads(&p.PeerAuth)...) // §3.7: in the IKE_SA_INIT response
	r.Payloads = append(r.Payloads, natNotifies(sa.spiI, sa.spiR, from)...)
	r.Payloads = append(r.Payloads, sigHashNotify())
	if sa.fragOK {
		r.Payloads = append(r.Payloads, &NotifyPayload{NotifyType: IKEV2_FRAGMENTATION_SUPPORTED})
	}
	b, err := r.Marshal()
	if err != nil {
		return
	}
	sa.initResp = b
	sa.state = stateInitDone
	d.putSA(sa.spiR, sa)
	d.addHalf(key, sa)
	d.after(d.halfOpenTimeout, func() {
		if sa.state == stateInitDone {
			d.teardown(sa, errors.New("initiator did not complete IKE_AUTH"))
		}
	})
	d.send(sa, b)
}

// responderPeer asks Config.Responder for the opportunistic peer to answer
// an initiator as.
func (d *Daemon) responderPeer(from netip.AddrPort, to netip.Addr, nonce []byte) *PeerConfig {
	p := d.cfg.Responder(from, to, nonce)
	if p == nil {
		return nil
	}
	if old := d.dynamic[p.Name]; old != nil {
		return old
	}
	p.Opportunistic = true
	if err := p.setDefaults(); err != nil {
		d.log.Warn("opportunistic responder", "from", from, "err", err)
		return nil
	}
	d.dynamic[p.Name] = p
	return p
}

func (d *Daemon) onAuthRequest(sa *ikeSA, m *Message) {
	p := sa.peer
	fail := func(n NotifyType, err error) {
		d.respond(sa, m, []Payload{&NotifyPayload{NotifyType: n}})
		d.teardown(sa, err)
	}
	idi, auth := m.ID(true), Get[*AuthPayload](m)
	if idi == nil || auth == nil {
		fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: IKE_AUTH without IDi or AUTH", ErrMissing))
		return
	}
	peerID := Identity{Type: idi.IDType, Data: idi.Data}
	if p.LookupKey != nil && p.PeerAuth.PublicKey == nil && auth.Method != AuthNULL && sa.lookedUp == nil {
		// Find the initiator's key (§4.12.2) off the daemon's goroutine;
		// retransmissions meanwhile are ignored.
		if sa.lookingUp {
			return
		}
		sa.lookingUp = true
		from := sa.remote.Addr()
		go func() {
			key, err := p.LookupKey(peerID, from)
			d.call(func() {
				sa.lookingUp = false
				if sa.state != stateInitDone {
					return
				}
				if err != nil {
					fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: no key for opportunistic initiator %v at %v: %w", ErrAuth, peerID, from, err))
					return
				}
				sa.lookedUp = key
				d.onAuthRequest(sa, m)
			})
		}()
		return
	}
	if p.CheckNull != nil && auth.Method == AuthNULL {
		if err := p.CheckNull(sa.remote.Addr()); err != nil {
			fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: %w", ErrAuth, err))
			return
		}
	}
	// A key looked up for the identity speaks for it; otherwise the
	// identity must be the configured one.
	if sa.lookedUp == nil && !d.acceptID(p, peerID) {
		fail(AUTHENTICATION_FAILED, fmt.Errorf("%w: peer identity %v is not %s", ErrAuth, peerID, expectedID(p)))
		return
	}
	if err := d.verifyPeer(sa, m, peerID, auth, signedOctets(sa.prf, sa.initReq, sa.nR, sa.skPi, idi)); err != nil {
		fail(AUTHENTICATION_FAILED, err)
		return
	}
	sa.peerIDSeen = peerID
	readAutoVPN(sa, m)
	id := ourID(p).payload(false)
	cred := &p.Auth
	switch {
	case sa.bySecret:
		cred = &Credential{PSK: sa.authSecret, Cert: p.Auth.Cert} // answer with the secret the peer used
	case p.PeerAuth.SharedSecret != nil:
		// AutoVPN: a shared secret with this peer is used in preference
		// to our certificate (§9.2), so that we may roll ours.
		if secret := p.PeerAuth.SharedSecret(peerID, sa.peerCert); secret != nil {
			cred = &Credential{PSK: secret, Cert: p.Auth.Cert}
		}
	}
	ourAuth, err := makeAuth(sa.prf, cred, signedOctets(sa.prf, sa.initResp, sa.nI, sa.skPr, id))
	if err != nil {
		fail(AUTHENTICATION_FAILED, err)
		return
	}
	resp := append(append(append([]Payload{id}, certPayloads(p)...), autovpnPayloads(sa)...), ourAuth)
	childOK := false
	sap, tsi, tsr := Get[*SAPayload](m), m.TS(true), m.TS(false)
	if sap != nil && tsi != nil && tsr != nil {
		resp, childOK = d.respondChild(sa, resp, sap, tsi, tsr)
	}
	if m.Notify(INITIAL_CONTACT) != nil {
		d.initialContact(sa)
	}
	d.established(sa)
	p.restarts = 0
	d.respond(sa, m, resp)
	d.reportEstablished(sa)
	d.dropHalf(sa)
	d.log.Info("IKE SA established", "peer", p.Name, "remote", sa.remote, "peer_id", peerID, "auth", authMethodName(auth.Method),
		"spi_i", fmt.Sprintf("%016x", sa.spiI), "spi_r", fmt.Sprintf("%016x", sa.spiR), "child", childOK)
	if d.cfg.OnChange != nil {
		d.cfg.OnChange(p.Name, true, nil)
	}
	d.dropDuplicate(sa)
}

// respondChild negotiates the first Child SA as responder and appends the
// payloads (or error notify) to resp.
func (d *Daemon) respondChild(sa *ikeSA, resp []Payload, sap *SAPayload, tsi, tsr *TSPayload) ([]Payload, bool) {
	p := sa.peer
	theirs := make([]Proposal, len(sap.Proposals))
	for i, pr := range sap.Proposals {
		pr.Transforms = withoutDH(pr.Transforms) // no KE in IKE_AUTH (§1.2)
		theirs[i] = pr
	}
	chosen, err := chooseDH(theirs, p.ESPProposals, ProtoESP, false)
	if err != nil || len(chosen.SPI) != 4 {
		d.logRefusal(p, "no acceptable ESP proposal",
			"offered", proposalsString(theirs), "configured", proposalsString(p.ESPProposals))
		return append(resp, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}), false
	}
	ni := narrow(tsi.Selectors, p.RemoteTS)
	nr := narrow(tsr.Selectors, p.LocalTS)
	if len(ni) == 0 || len(nr) == 0 {
		d.logRefusal(p, "traffic selectors unacceptable", "tsi", selectors(tsi.Selectors), "tsr", selectors(tsr.Selectors),
			"local", p.LocalTS, "remote", p.RemoteTS)
		return append(resp, &NotifyPayload{NotifyType: TS_UNACCEPTABLE}), false
	}
	spi, err := d.dp.ReserveSPI()
	if err != nil {
		return append(resp, &NotifyPayload{NotifyType: TEMPORARY_FAILURE}), false
	}
	peerProp := *chosen
	if d.installChild(sa, &peerProp, sa.nI, sa.nR, nil, spi, false, ni, nr) == nil {
		d.dp.ReleaseSPI(spi)
		return append(resp, &NotifyPayload{NotifyType: NO_PROPOSAL_CHOSEN}), false
	}
	ours := *chosen
	ours.SPI = binary.BigEndian.AppendUint32(nil, spi)
	return append(resp, &SAPayload{Proposals: []Proposal{ours}},
		&TSPayload{Initiator: true, Selectors: ni}, &TSPayload{Initiator: false, Selectors: nr}), true
}
