package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
)

// Reload applies a changed configuration to a running node, as `wg
// syncconf` and `swanctl --load-all` do: the configured peers and the
// policy change in place, and a peer whose configuration is unchanged keeps
// its IKE and Child SAs (the same SPIs: its traffic does not notice).
// Settings the running device, sockets and services were made from cannot
// change (see ErrReloadRefused).

// ErrReloadRefused is wrapped by Reload's refusal of a setting that
// cannot change while the node runs; the message names it.
var ErrReloadRefused = errors.New("cannot change while running")

// ReloadReport says what Reload changed.
type ReloadReport struct {
	// Added, Removed and Changed are configured peers, by name; the
	// IKE SAs of removed and changed ones were deleted. Unchanged peers
	// kept theirs.
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
	Changed   []string `json:"changed"`
	Unchanged []string `json:"unchanged"`
	// Policy is set when the classes or exceptions changed; Flushed
	// opportunistic verdicts were then forgotten (decided under the old
	// policy) and Ended the opportunistic peers whose addresses the new
	// policy no longer lets them carry.
	Policy  bool     `json:"policy_changed"`
	Flushed int      `json:"shunts_flushed"`
	Ended   []string `json:"opportunistic_ended"`
	// Routes are the prefixes newly routed into the device (TUN mode).
	// Routes of removed peers and prefixes stay until a restart; no SA,
	// trap or class covers them any more, so oevpn drops their traffic.
	Routes []string `json:"routes_added"`
}

// Config returns the node's configuration as it runs now (after the last
// Reload), its peers' IKE configurations copied: the starting point of a
// change to pass to Reload.
func (n *Node) Config() NodeConfig {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	c := n.cfg
	c.Peers = clonePeers(n.configured())
	return c
}

// configured returns the configured peers; Reload replaces the slice,
// never its elements.
func (n *Node) configured() []Peer { return *n.peers.Load() }

// clonePeers copies the peers' IKE configurations. The node keeps copies
// made before the daemon has them (it writes its bookkeeping into its
// own), for Status, Config and the next Reload to read.
func clonePeers(ps []Peer) []Peer {
	out := slices.Clone(ps)
	for i := range out {
		c := *out[i].IKE
		out[i].IKE = &c
	}
	return out
}

// Reload applies cfg: peers added, removed or changed; the policy classes
// and exceptions. The device, its addresses and routes' table, the ports,
// static SAs, opportunism's and AutoVPN's configurations (pointers: pass
// the running ones, from Config) and the DNS server cannot change: a
// change to any is refused, naming it, and nothing is applied. Bind,
// ClearDial, Sequences and Logger are not used. Reload takes cfg's
// PeerConfigs over.
//
// It fails closed: the peer policy (identities, AUTH_NULL) is tightened
// before the IKE daemon changes, a removed or changed peer's SAs are
// deleted before Reload returns, and a policy change forgets the
// opportunistic verdicts decided under the old one, bars unauthenticated
// pairs whose addresses must now be authenticated and ends opportunistic
// peers whose addresses are no longer opportunistic.
func (n *Node) Reload(cfg NodeConfig) (ReloadReport, error) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	var rep ReloadReport
	old := n.cfg
	old.Peers = n.configured()
	if err := n.refuseReload(old, cfg); err != nil {
		return rep, err
	}
	pcs := make([]*ike.PeerConfig, len(cfg.Peers))
	for i, p := range cfg.Peers {
		p.IKE.AutoStart = p.Start == StartNow
		pcs[i] = p.IKE
	}
	if err := ike.CheckPeers(pcs); err != nil {
		return rep, err
	}
	peers := clonePeers(cfg.Peers) // before the daemon has them
	policyChanged := !reflect.DeepEqual(old.Policy, cfg.Policy)
	var classes *policy.Classes
	var err error
	if policyChanged {
		if classes, err = n.classesOf(cfg.Policy); err != nil {
			return rep, err
		}
	}

	// Routes first: the one step that may fail, undone by AddRoutes.
	added, err := n.addRoutes(old, cfg)
	if err != nil {
		return rep, err
	}

	// The classes, before the peers: a tightened policy applies at once
	// (routes and traps only add protection).
	oldClasses := n.eng.Classes()
	if policyChanged {
		rep.Policy = true
		n.eng.SetClasses(classes) // bars the unauthenticated pairs now private
		n.cfg.Policy = cfg.Policy
		rep.Flushed = n.Flush(netip.Addr{})
		rep.Ended = n.endOpportunistic(classes)
	}

	// The peers: policy, then the daemon, then the traps.
	oldAuthz := n.authz.Load()
	if n.ike != nil {
		n.authz.Store(peersPolicy(cfg.Peers))
		ch, err := n.ike.SetPeers(pcs)
		if err != nil {
			// Undone, but for what only protects: the verdicts
			// flushed and the opportunistic peers ended stay gone,
			// and the routes added stay (nothing covers them, so
			// their traffic is dropped; the next reload finds them).
			n.authz.Store(oldAuthz)
			if policyChanged {
				n.eng.SetClasses(oldClasses)
				n.cfg.Policy = old.Policy
			}
			for _, r := range added {
				n.routed[r.Prefix] = true
			}
			return ReloadReport{}, err
		}
		rep.Added, rep.Removed, rep.Changed, rep.Unchanged = ch.Added, ch.Removed, ch.Changed, ch.Unchanged
	}
	for _, r := range added {
		n.routed[r.Prefix] = true
		rep.Routes = append(rep.Routes, r.Prefix.String())
	}
	n.setPeers(old.Peers, peers, rep.Unchanged)

	for _, p := range peers {
		if p.Start == StartNow && !slices.Contains(rep.Unchanged, p.IKE.Name) {
			if err := n.ike.Initiate(p.IKE.Name); err != nil {
				n.log.Error("initiating", "peer", p.IKE.Name, "err", err)
			}
		}
	}
	n.log.Info("configuration reloaded", "added", rep.Added, "removed", rep.Removed, "changed", rep.Changed,
		"unchanged", rep.Unchanged, "policy_changed", rep.Policy, "routes_added", rep.Routes)
	return rep, nil
}

// addRoutes routes into the device the prefixes of cfg that old did not
// have, and returns them; on error it added none.
func (n *Node) addRoutes(old, cfg NodeConfig) ([]Route, error) {
	if n.dev == nil {
		return nil, nil
	}
	if n.routed == nil {
		n.routed = map[netip.Prefix]bool{}
		for _, r := range n.routesOf(old) {
			n.routed[r.Prefix.Masked()] = true
		}
	}
	var want []Route
	for _, r := range n.routesOf(cfg) {
		if !n.routed[r.Prefix.Masked()] {
			want = append(want, r)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	added, err := n.dev.AddRoutes(want)
	if err != nil {
		return nil, fmt.Errorf("routing the new peers' and prefixes' traffic into the device: %w", err)
	}
	return added, nil
}

// setPeers makes peers the node's configured peers in place of old, once
// the daemon has them: the traps of each (those of unchanged peers kept,
// as their *ike.PeerConfig, which the daemon kept), and the last errors
// of removed ones forgotten.
func (n *Node) setPeers(old, peers []Peer, unchanged []string) {
	oldByName := map[string]Peer{}
	for _, p := range old {
		oldByName[p.IKE.Name] = p
	}
	for i, p := range peers {
		q, had := oldByName[p.IKE.Name]
		same := slices.Contains(unchanged, p.IKE.Name)
		if same {
			peers[i].IKE = q.IKE
		}
		delete(oldByName, p.IKE.Name)
		switch {
		case p.Start == StartNever:
			n.eng.RemoveTrap(p.IKE.Name)
		case !had || q.Start == StartNever || !same:
			n.eng.SetTrap(p.IKE.Name, p.IKE.LocalTS, p.IKE.RemoteTS)
		}
	}
	for name := range oldByName {
		n.eng.RemoveTrap(name)
		n.statusMu.Lock()
		delete(n.errors, name)
		n.statusMu.Unlock()
	}
	n.peers.Store(&peers)
	n.cfg.Peers = peers
}

// refuseReload names the first setting that differs between old and cfg
// and cannot change while the node runs.
func (n *Node) refuseReload(old, cfg NodeConfig) error {
	checks := []struct {
		field string
		same  bool
	}{
		{"Netstack", old.Netstack == cfg.Netstack},
		{"Name", old.Name == cfg.Name},
		{"MTU", old.MTU == cfg.MTU},
		{"Addresses", slices.Equal(old.Addresses, cfg.Addresses)},
		{"IKEPort", old.IKEPort == cfg.IKEPort},
		{"NATTPort", old.NATTPort == cfg.NATTPort},
		{"Mark", old.Mark == cfg.Mark},
		{"Table", old.Table == cfg.Table},
		{"Outside", old.Outside == cfg.Outside},
		{"DNS", old.DNS == cfg.DNS},
		{"SAs", reflect.DeepEqual(old.SAs, cfg.SAs)},
		{"Opportunism", old.Opportunism == cfg.Opportunism},
		{"AutoVPN", old.AutoVPN == cfg.AutoVPN},
		{"AutoVPNHost", old.AutoVPNHost == cfg.AutoVPNHost},
		// Opportunism and the clear path are set up at start.
		{"Policy (opportunistic classes on or off)", old.Policy.opportunistic() == cfg.Policy.opportunistic()},
		{"Policy (clear prefixes without a clear path)", n.cfg.Netstack || len(cfg.Policy.Clear) == 0 ||
			len(old.Policy.Clear) > 0 || old.Policy.opportunistic() || n.autoVPN()},
		{"Peers (the node started without IKE)", n.ike != nil || len(cfg.Peers) == 0},
	}
	for _, c := range checks {
		if !c.same {
			return fmt.Errorf("%s: %w: restart the node to apply it", c.field, ErrReloadRefused)
		}
	}
	return nil
}

// peersPolicy is the policy for the configured peers: the identities each
// may prove, and whether AUTH_NULL is allowed.
func peersPolicy(peers []Peer) *policy.Peers {
	authz := &policy.Peers{}
	for _, p := range peers {
		var ids []string
		if p.IKE.RemoteID.Type != 0 {
			ids = append(ids, p.IKE.RemoteID.String())
		}
		authz.Allow(p.IKE.Name, ids, p.IKE.PeerAuth.Null)
	}
	return authz
}

// endOpportunistic deletes the IKE SAs of the opportunistic peers that
// carry an address which classes no longer make opportunistic (blocked,
// clear, or of no class), and returns their names.
func (n *Node) endOpportunistic(classes *policy.Classes) []string {
	if n.ike == nil || n.oe == nil {
		return nil
	}
	configured := map[string]bool{}
	for _, p := range n.configured() {
		configured[p.IKE.Name] = true
	}
	var ended []string
	for _, sa := range n.ike.SAs() {
		if configured[sa.Peer] || !strings.HasPrefix(sa.Peer, "oe-") || slices.Contains(ended, sa.Peer) {
			continue
		}
		if !slices.ContainsFunc(sa.Children, func(c *ike.ChildSA) bool {
			return slices.ContainsFunc(singles(c.Remote), func(a netip.Addr) bool { return !classes.ClassOf(a).Responds() })
		}) {
			continue
		}
		if _, err := n.ike.Down(sa.Peer); err == nil {
			ended = append(ended, sa.Peer)
			n.log.Info("opportunistic peer ended: the reloaded policy does not make its address opportunistic", "peer", sa.Peer)
		}
	}
	slices.Sort(ended)
	return ended
}

// RemoveTrap removes the named on-demand trap (a peer no longer
// configured, or no longer started by traffic); its held packets are
// dropped.
func (e *Engine) RemoveTrap(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.traps[name]
	if t == nil {
		return
	}
	delete(e.traps, name)
	e.setTrapsLocked()
	t.mu.Lock()
	t.held.retire()
	t.mu.Unlock()
}

// currentPeers is the node's peer policy as Reload last set it.
type currentPeers struct{ p *atomic.Pointer[policy.Peers] }

func (a currentPeers) AuthorizePeer(id ike.PeerIdentity) error {
	return peerAuthorizer{a.p.Load()}.AuthorizePeer(id)
}
