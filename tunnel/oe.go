package tunnel

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
)

// OEConfig configures opportunistic encryption.
type OEConfig struct {
	// Resolver finds destinations' gateways and keys in DNS.
	Resolver *dnsoe.Resolver
	// Auth is how we authenticate to opportunistic peers: a private key
	// whose public key we publish (Signer), or AUTH_NULL (Null).
	Auth ike.Credential
	// Timeout bounds one opportunistic IKE negotiation (default 2s):
	// a peer that does not answer falls back per the class.
	Timeout time.Duration
	// ShuntTTL is how long a failure is remembered (default 15m).
	ShuntTTL time.Duration
	// Lifespan and ExtendedLifespan are the §5.1 lifespans (defaults 1m
	// and 20m).
	Lifespan, ExtendedLifespan time.Duration
	// IKELifetime is when opportunistic IKE SAs are rekeyed (default 4h).
	IKELifetime time.Duration
	Logger      *slog.Logger
	// Outside is how oevpn's own sockets leave (routing lookups for our
	// address).
	Outside Outside
	// Source, if set, is our address for traffic to a destination (in
	// netstack mode the stack's own, which no host route knows); nil asks
	// the host's routing through Outside.
	Source func(dst netip.Addr) netip.Addr
	// ID is our identity with a raw key when it is not our address (an
	// FQDN that our records name as gateway).
	ID ike.Identity
	// DNSListen, if set, is the address of the DNS-triggered stub (a Node
	// starts it): answers for names whose addresses are opportunistic
	// wait up to DNSWait for the negotiation.
	DNSListen string
	DNSWait   time.Duration
}

// localID is the identity we send: none with AUTH_NULL (ID_NULL), else the
// configured one or the address our key is published for, which src
// returns (asked only then).
func (o *Opportunism) localID(src func() netip.Addr) ike.Identity {
	switch {
	case o.cfg.Auth.Signer == nil:
		return ike.Identity{}
	case o.cfg.ID.Type != 0:
		return o.cfg.ID
	}
	if a := src(); a.IsValid() {
		return ike.IdentityOf(a)
	}
	return ike.Identity{}
}

// Opportunism runs opportunistic encryption on an engine: for traffic of
// the private and private-or-clear classes without an SA it looks the
// destination up in DNS, negotiates with the gateway found (failing over
// to the next one), and otherwise sets the fallback verdict; it answers
// opportunistic initiators; it tears idle tunnels down at the end of
// their lifespan.
type Opportunism struct {
	cfg  OEConfig
	eng  *Engine
	log  *slog.Logger
	ike  *ike.Daemon
	stop chan struct{}
	wg   sync.WaitGroup
	// goMu orders the goroutines started (go) against Close's wait: once
	// stop is closed, none starts.
	goMu sync.Mutex

	mu      sync.Mutex
	tunnels map[string]*oeTunnel // by IKE peer name

	// Destinations that published a key: those we looked up, and,
	// apart so that remote initiators cannot crowd the first out, those
	// whose initiators signed with a published key.
	keys, peerKeys keyedSet
	notes          oeNotes // record kinds and fallback reasons, for Status
}

// Retry times of verdicts given when DNS could not answer.
const (
	// failClosedRetry is how long a destination is dropped when it must
	// not go clear and DNS failed (or answered falsely): short, so that
	// it is asked again soon.
	failClosedRetry = 5 * time.Second
	// resolverRetry is how long a private-or-clear destination with no
	// known key goes clear when the resolver failed.
	resolverRetry = 30 * time.Second
)

// maxFailuresShown is how many gateways' failures a fallback's reason
// names.
const maxFailuresShown = 3

// oeTunnel is one opportunistic peer, negotiating or up.
type oeTunnel struct {
	name      string
	src, dst  netip.Addr
	class     policy.Class
	gateways  []dnsoe.Gateway // not yet tried, for failover
	gateway   netip.Addr      // the one being tried
	failures  []string        // why the gateways tried failed, from IKE
	initiator bool
	up        bool
	life      policy.Lifespan
	packets   uint64 // packets through its SAs at the last check
	traffic   time.Time
	keyExpiry time.Time // when the DNS answer that gave the key runs out
	key       crypto.PublicKey
}

// Peer names of opportunistic tunnels: by whom initiated, and the address.
func initiatorName(dst netip.Addr) string { return "oe-out-" + dst.String() }
func responderName(src netip.Addr) string { return "oe-in-" + src.String() }

// NewOpportunism creates the manager. Call Start with the IKE daemon,
// whose Config.Responder and Config.OnChange must lead to Responder and
// OnChange, and the engine's Control to the manager (NewNode wires all
// three).
func NewOpportunism(eng *Engine, cfg OEConfig) *Opportunism {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.ShuntTTL <= 0 {
		cfg.ShuntTTL = 15 * time.Minute
	}
	if cfg.Lifespan <= 0 {
		cfg.Lifespan = policy.InitialLifespan
	}
	if cfg.ExtendedLifespan <= 0 {
		cfg.ExtendedLifespan = policy.ExtendedLifespan
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o := &Opportunism{cfg: cfg, eng: eng, log: cfg.Logger, stop: make(chan struct{}), tunnels: map[string]*oeTunnel{}}
	return o
}

// learnKey remembers that dst published a key in an answer valid until
// expires, and bars the unauthenticated SAs that carried it.
func (o *Opportunism) learnKey(dst netip.Addr, expires time.Time) {
	o.keys.learn(dst, expires, time.Now())
	o.eng.Reconsider(dst)
}

// keyed reports whether a is known to publish a key.
func (o *Opportunism) keyed(a netip.Addr) bool {
	now := time.Now()
	return o.keys.known(a, now) || o.peerKeys.known(a, now)
}

// forgetKey forgets that dst published a key: DNS says it no longer does.
func (o *Opportunism) forgetKey(dst netip.Addr) {
	o.keys.forget(dst)
	o.peerKeys.forget(dst)
}

// Start starts the lifespan checks. The node's control plane hands the
// manager the engine's opportunistic acquires (acquire) and asks it which
// addresses publish keys (keyed).
func (o *Opportunism) Start(d *ike.Daemon) {
	o.ike = d
	interval := min(o.cfg.Lifespan/4, 5*time.Second)
	o.spawn(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-o.stop:
				return
			case now := <-t.C:
				o.checkLifespans(now)
			}
		}
	})
}

// Close stops the lifespan checks.
func (o *Opportunism) Close() {
	o.goMu.Lock()
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	o.goMu.Unlock()
	o.wg.Wait()
}

// spawn runs f on a goroutine of its own that Close waits for, unless
// Close has begun (the datapath may still ask for discovery then).
func (o *Opportunism) spawn(f func()) {
	o.goMu.Lock()
	defer o.goMu.Unlock()
	select {
	case <-o.stop:
		return
	default:
	}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		f()
	}()
}

// acquire is the engine's call for a destination without an SA.
func (o *Opportunism) acquire(src, dst netip.Addr, class policy.Class) {
	o.spawn(func() {
		o.discover(src, dst, class)
	})
}

// discover looks dst up and starts IKE with its best gateway, or decides
// the fallback.
func (o *Opportunism) discover(src, dst netip.Addr, class policy.Class) {
	start := time.Now()
	res := o.cfg.Resolver.Lookup(context.Background(), dst)
	o.notes.lookedUp(res)
	if res.Err != nil || len(res.Gateways) == 0 {
		o.lookupFailed(dst, class, res, start)
		return
	}
	o.learnKey(dst, res.Expires)
	t := &oeTunnel{name: initiatorName(dst), src: src, dst: dst, class: class, gateways: res.Gateways, initiator: true, keyExpiry: res.Expires}
	o.mu.Lock()
	if old, busy := o.tunnels[t.name]; busy {
		o.mu.Unlock()
		if old.up {
			o.ike.Acquire(t.name) // its IKE SA lost its Child SA: make one
		}
		return
	}
	o.tunnels[t.name] = t
	o.mu.Unlock()
	o.log.Info("opportunistic peer found in DNS", "dst", dst, "gateways", len(res.Gateways), "validated", res.Validated,
		"lookup", time.Since(start).Round(time.Microsecond))
	o.tryNext(t)
}

// lookupFailed decides the verdict of a destination whose lookup found no
// gateway. Only a denial of existence (which DNSSEC validates, in the
// modes that validate) lets a private-or-clear destination go clear for
// long, and it forgets a key the destination published. A forged answer
// (ErrBogus) drops. A resolver failure, or an unvalidated answer, drops a
// destination known to publish a key; it sends a private-or-clear one
// without a known key in the clear for a short time (resolverRetry). A
// private destination always drops. Drops after a failure are short
// (failClosedRetry): DNS is asked again soon.
func (o *Opportunism) lookupFailed(dst netip.Addr, class policy.Class, res dnsoe.Result, start time.Time) {
	err := res.Err
	if err == nil {
		err = dnsoe.ErrNoRecord
	}
	// The reason, for the log, status and check, says how to fix it.
	why := err.Error()
	if h := dnsoe.Hint(err); h != "" {
		why += "; to fix: " + h
	}
	switch {
	case errors.Is(err, dnsoe.ErrNoRecord):
		o.forgetKey(dst)
		ttl := o.cfg.ShuntTTL
		if !res.Expires.IsZero() && res.Expires.Sub(start) < ttl {
			ttl = max(res.Expires.Sub(start), time.Second) // a record may appear after the negative TTL
		}
		o.fallback(dst, class, false, ttl, why)
	case errors.Is(err, dnsoe.ErrBogus):
		o.fallback(dst, class, true, failClosedRetry, why)
	case errors.Is(err, dnsoe.ErrUnusableKey):
		o.fallback(dst, class, true, o.cfg.ShuntTTL, why) // it asked for encryption: hard fail
	case o.keyed(dst):
		o.fallback(dst, class, true, failClosedRetry, "the destination published a key, and DNS now fails: "+why)
	case errors.Is(err, dnsoe.ErrUnvalidated):
		o.fallback(dst, class, false, o.cfg.ShuntTTL, why)
	case class.FailsOpen():
		o.fallback(dst, class, false, min(o.cfg.ShuntTTL, resolverRetry), why)
	default:
		o.fallback(dst, class, false, failClosedRetry, why)
	}
}

// tryNext starts IKE with the tunnel's next gateway; with none left, the
// destination published a key and we could not reach it: hard fail, drop.
func (o *Opportunism) tryNext(t *oeTunnel) {
	for {
		o.mu.Lock()
		if len(t.gateways) == 0 {
			delete(o.tunnels, t.name)
			reason := "no gateway answered"
			if f := t.failures; len(f) > 0 {
				// The first ones tell; a long list would only be long.
				if len(f) > maxFailuresShown {
					f = append(f[:maxFailuresShown:maxFailuresShown], fmt.Sprintf("and %d more", len(f)-maxFailuresShown))
				}
				reason = "IKE failed with " + strings.Join(f, "; ")
			}
			o.mu.Unlock()
			o.fallback(t.dst, t.class, true, o.cfg.ShuntTTL, reason)
			return
		}
		g := t.gateways[0]
		t.gateways = t.gateways[1:]
		t.key, t.gateway = g.Key, g.Addr
		o.mu.Unlock()
		o.notes.tried(t.dst, g.Source)
		pc, err := o.initiatorPeer(t, g)
		if err == nil {
			err = o.ike.AddPeer(pc)
		}
		if err == nil {
			o.log.Info("negotiating opportunistically", "dst", t.dst, "gateway", pc.Addr, "source", g.Source, "auth", o.cfg.Auth.Method())
			time.AfterFunc(3*o.cfg.Timeout, func() { o.checkStuck(t) })
			return
		}
		if errors.Is(err, ike.ErrPeerExists) {
			return // an earlier negotiation still runs
		}
		o.log.Warn("opportunistic gateway unusable", "dst", t.dst, "gateway", g.Addr, "err", err)
		o.mu.Lock()
		t.failures = append(t.failures, fmt.Sprintf("gateway %v: unusable: %v", g.Addr, err))
		o.mu.Unlock()
	}
}

func (o *Opportunism) initiatorPeer(t *oeTunnel, g dnsoe.Gateway) (*ike.PeerConfig, error) {
	if !g.Addr.IsValid() {
		return nil, fmt.Errorf("gateway %q has no address", g.Name)
	}
	pc := &ike.PeerConfig{Name: t.name, Addr: g.Addr, Auth: o.cfg.Auth, PeerAuth: ike.PeerAuth{PublicKey: g.Key},
		LocalTS:  policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(t.src, t.src.BitLen()))},
		RemoteTS: policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(t.dst, t.dst.BitLen()))},
		// Short retransmissions: sends at 0, T/15, 3T/15 and 7T/15, and
		// the peer is given up at T (the doubling backoff sums to 15).
		RetransmitBase: o.cfg.Timeout / 15, RetransmitTries: 4}
	pc.LocalID = o.localID(func() netip.Addr { return t.src })
	pc.IKELifetime = o.cfg.IKELifetime
	pc.OnIKERekey = func() {
		// The key is checked again at every IKE SA rekey.
		o.spawn(func() {
			o.log.Info("IKE SA rekeyed: checking that the peer's key is still published", "dst", t.dst)
			o.recheckKey(t)
		})
	}
	if g.Name != "" {
		id, err := ike.ParseIdentity(g.Name)
		if err != nil {
			return nil, err
		}
		pc.RemoteID = id
	}
	if g.Proposals != "" {
		props, err := ike.ParseProposals(g.Proposals, ike.ProtoIKE)
		if err != nil {
			return nil, fmt.Errorf("gateway's AutoSEC algorithms: %w", err)
		}
		pc.IKEProposals = props
	}
	return pc, nil
}

// checkStuck ends a negotiation whose IKE SA came up without a Child SA
// for the destination: it published a key, so its traffic is dropped.
func (o *Opportunism) checkStuck(t *oeTunnel) {
	o.mu.Lock()
	up := t.up
	o.mu.Unlock()
	if v, _, ok := o.eng.VerdictFor(t.dst); ok && v == VerdictPending && up {
		o.fallback(t.dst, t.class, true, o.cfg.ShuntTTL, "the IKE SA came up, but no Child SA for the destination")
	}
}

// fallback decides what dst's traffic gets after opportunism failed: by
// its class, except that a destination that published a key never gets
// plaintext (hard fail).
func (o *Opportunism) fallback(dst netip.Addr, class policy.Class, published bool, ttl time.Duration, reason string) {
	v := VerdictDrop
	if class.FailsOpen() && !published {
		v = VerdictClear
	}
	o.log.Info("opportunism failed: falling back", "dst", dst, "class", class, "verdict", v, "for", ttl, "reason", reason)
	o.notes.failed(dst, v, reason)
	o.eng.Decide(dst, v, time.Now().Add(ttl))
}

// Responder is the IKE daemon's Config.Responder: an initiator whose
// address's class answers opportunistic peers gets a host-to-host tunnel
// between its own address and the local address it reached (local; when
// the transport does not tell, the address we reach it from), and
// nothing wider (draft-richardson-ipsec-opportunistic §4.1). It may
// authenticate with a key its reverse zone publishes (§4.12.2), or with
// AUTH_NULL where checkNull allows.
func (o *Opportunism) Responder(from netip.AddrPort, local netip.Addr) *ike.PeerConfig {
	a := from.Addr().Unmap()
	c := o.eng.Classes()
	if c == nil || !c.ClassOf(a).Responds() {
		return nil
	}
	if local = local.Unmap(); !local.IsValid() {
		local = o.source(a)
	}
	if !local.IsValid() || local.Is4() != a.Is4() {
		return nil
	}
	id := o.localID(func() netip.Addr { return local })
	return &ike.PeerConfig{Name: responderName(a), Addr: a, Auth: o.cfg.Auth, LocalID: id,
		// AUTH_NULL is refused at once for an address that must be
		// authenticated; checkNull asks again, with DNS, at IKE_AUTH.
		PeerAuth: ike.PeerAuth{Null: o.eng.MayBeUnauthenticated(a)}, LookupKey: o.lookupKey, CheckNull: o.checkNull,
		LocalTS:  policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(local, local.BitLen()))},
		RemoteTS: policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(a, a.BitLen()))}}
}

// ErrNullRefused is returned when an initiator authenticated with
// AUTH_NULL for an address that must be authenticated.
var ErrNullRefused = errors.New("tunnel: AUTH_NULL refused: the address must be authenticated")

// checkNull is the responder's PeerConfig.CheckNull: may an initiator that
// authenticated with AUTH_NULL speak for addr? The engine decides
// (MayBeUnauthenticated): not if addr is private, known to publish a key,
// or carried by an authenticated SA. Each refusal is counted
// (Stats.NullRefused). An address that publishes a key we do not know of
// yet is caught later without holding up IKE: the unauthenticated SA
// carries none of a private-or-clear address's outbound traffic before
// opportunism has looked it up and would send it clear (Engine.Decide),
// and finding a key bars the SA (learnKey).
func (o *Opportunism) checkNull(addr netip.Addr) error {
	addr = addr.Unmap()
	if o.eng.MayBeUnauthenticated(addr) {
		return nil
	}
	o.eng.stats.nullRefused.Add(1)
	o.log.Info("AUTH_NULL initiator refused: its address must be authenticated", "addr", addr)
	return fmt.Errorf("%w (%v)", ErrNullRefused, addr)
}

// ErrNotDelegated is returned when an initiator's reverse zone does not
// name it as a gateway for its address.
var ErrNotDelegated = errors.New("tunnel: the reverse zone does not name this initiator")

// lookupKey finds the key of an opportunistic initiator that claims to
// speak for addr: addr's reverse zone must name it (by address or FQDN).
func (o *Opportunism) lookupKey(id ike.Identity, addr netip.Addr) (crypto.PublicKey, error) {
	res := o.cfg.Resolver.LookupResponder(context.Background(), addr)
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Gateways) > 0 {
		o.peerKeys.learn(addr, res.Expires, time.Now())
		o.eng.Reconsider(addr)
	}
	for _, g := range res.Gateways {
		if g.Addr == addr && id.Equal(ike.IdentityOf(addr)) {
			return g.Key, nil
		}
		if g.Name != "" {
			if gid, err := ike.ParseIdentity(g.Name); err == nil && gid.Equal(id) {
				return g.Key, nil
			}
		}
	}
	return nil, fmt.Errorf("%w (identity %v, address %v)", ErrNotDelegated, id, addr)
}

// OnChange is to be called from the IKE daemon's Config.OnChange (on its
// goroutine: it must not call the daemon back synchronously).
func (o *Opportunism) OnChange(peer string, up bool, err error) {
	o.mu.Lock()
	t := o.tunnels[peer]
	if t == nil {
		if !up {
			o.mu.Unlock()
			return
		}
		// An initiator's tunnel (or one that rekeyed into being).
		var a netip.Addr
		if s, ok := strings.CutPrefix(peer, "oe-in-"); ok {
			a, _ = netip.ParseAddr(s)
		}
		if !a.IsValid() {
			o.mu.Unlock()
			return
		}
		t = &oeTunnel{name: peer, dst: a}
		o.tunnels[peer] = t
	}
	switch {
	case up:
		if !t.up {
			t.up, t.life, t.traffic = true, policy.NewLifespanOf(time.Now(), o.cfg.Lifespan, o.cfg.ExtendedLifespan), time.Now()
		}
		// The verdict of a destination we now talk to is forgotten by
		// the engine when it installs a pair that may carry it (not on
		// IKE alone: an unauthenticated IKE SA clears nothing).
		o.mu.Unlock()
	case t.up || !t.initiator:
		delete(o.tunnels, peer)
		o.mu.Unlock()
		if err != nil {
			o.log.Info("opportunistic IKE SA lost", "dst", t.dst, "err", err)
		}
	case errors.Is(err, ike.ErrDown):
		// Stopped by the operator: not a failure, so no shunt; the
		// next packet starts again.
		delete(o.tunnels, peer)
		o.mu.Unlock()
		o.log.Info("opportunistic negotiation stopped", "dst", t.dst)
		o.eng.Abandon(t.dst)
	default:
		// The cause is the daemon's: no answer, a refusal with its
		// notify, authentication, proposals (ike.ErrNoAnswer,
		// ike.RefusedError, ...).
		t.failures = append(t.failures, fmt.Sprintf("gateway %v: %v", t.gateway, err))
		o.mu.Unlock()
		o.log.Info("opportunistic negotiation failed", "dst", t.dst, "gateway", t.gateway, "err", err)
		// Not on the daemon's goroutine, which is calling us.
		o.spawn(func() {
			o.tryNext(t)
		})
	}
}

// checkLifespans tears down the tunnels whose lifespan ended without
// traffic in its last half (§5.1, §5.2), and those whose DNS key ran out
// and is no longer published.
func (o *Opportunism) checkLifespans(now time.Time) {
	counts := map[netip.Addr]uint64{}
	for _, p := range o.eng.Pairs() {
		for _, s := range p.Remote {
			if a, ok := s.Single(); ok {
				counts[a] += p.In.Counters().Packets + p.Out.Counters().Packets
			}
		}
	}
	var down, recheck []*oeTunnel
	o.mu.Lock()
	for _, t := range o.tunnels {
		if !t.up {
			continue
		}
		if n := counts[t.dst]; n != t.packets {
			t.packets, t.traffic = n, now
		}
		extended := false
		if t.life.Due(now) {
			next, keep := t.life.Next(now, t.traffic)
			if !keep {
				down = append(down, t)
				continue
			}
			t.life, extended = next, true
		}
		// The key is checked again when its TTL runs out, and at every
		// extension (more often than the IKE SA is rekeyed).
		if t.initiator && !t.keyExpiry.IsZero() && (now.After(t.keyExpiry) || extended) {
			t.keyExpiry = time.Time{} // one re-check at a time
			recheck = append(recheck, t)
		}
	}
	o.mu.Unlock()
	for _, t := range down {
		o.log.Info("opportunistic tunnel idle at the end of its lifespan: deleting", "peer", t.name, "dst", t.dst)
		o.ike.Down(t.name)
	}
	for _, t := range recheck {
		o.spawn(func() {
			o.recheckKey(t)
		})
	}
}

// recheckKey looks the tunnel's key up again after its TTL: a key that is
// no longer published ends the tunnel.
func (o *Opportunism) recheckKey(t *oeTunnel) {
	res := o.cfg.Resolver.Lookup(context.Background(), t.dst)
	for _, g := range res.Gateways {
		if k, ok := g.Key.(interface{ Equal(crypto.PublicKey) bool }); ok && k.Equal(t.key) {
			o.mu.Lock()
			t.keyExpiry = res.Expires
			o.mu.Unlock()
			o.learnKey(t.dst, res.Expires)
			return
		}
	}
	switch {
	case len(res.Gateways) > 0:
		o.learnKey(t.dst, res.Expires) // another key: the next tunnel uses it
	case errors.Is(res.Err, dnsoe.ErrNoRecord):
		o.forgetKey(t.dst)
	case !errors.Is(res.Err, dnsoe.ErrBogus) && !errors.Is(res.Err, dnsoe.ErrUnvalidated):
		// The resolver failed: DNS said nothing new. The tunnel, with a
		// key DNS gave, carries on; the key is checked again soon.
		o.log.Info("opportunistic peer's key could not be checked: keeping the tunnel", "peer", t.name, "dst", t.dst, "err", res.Err)
		o.mu.Lock()
		t.keyExpiry = time.Now().Add(failClosedRetry)
		o.mu.Unlock()
		return
	}
	o.log.Warn("opportunistic peer's key is no longer published: deleting", "peer", t.name, "dst", t.dst, "err", res.Err)
	o.ike.Down(t.name)
}

// Trigger starts opportunism for dst without waiting for a packet (the
// DNS-triggered mode) and returns, at the latest when ctx is done, whether
// an application may be given the address: Withhold when its traffic would
// be dropped (a published key but no tunnel, or private with no key).
func (o *Opportunism) Trigger(ctx context.Context, dst netip.Addr) dnsoe.Verdict {
	dst = dst.Unmap()
	c := o.eng.Classes()
	if c == nil {
		return dnsoe.Proceed
	}
	class := c.ClassOf(dst)
	if !class.Initiates() {
		return dnsoe.Proceed // not routed to us: nothing to set up
	}
	started := false
	for {
		if o.eng.HasSA(dst) {
			return dnsoe.Proceed
		}
		if v, _, ok := o.eng.VerdictFor(dst); ok && v != VerdictPending {
			if v == VerdictDrop {
				return dnsoe.Withhold
			}
			return dnsoe.Proceed
		}
		if !started {
			started = true
			src := o.source(dst)
			if !src.IsValid() {
				return dnsoe.Proceed // no route: the application will find out
			}
			o.spawn(func() {
				o.discover(src, dst, class)
			})
		}
		select {
		case <-ctx.Done():
			return dnsoe.Proceed // still negotiating: the datapath holds the first packets
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// source is our address for traffic to dst.
func (o *Opportunism) source(dst netip.Addr) netip.Addr {
	if o.cfg.Source != nil {
		return o.cfg.Source(dst)
	}
	return o.cfg.Outside.SourceFor(dst)
}
