package tunnel

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
)

// childSPIs returns the SPIs (in, out) of the Child SAs of peer's
// established IKE SAs on n, and the IKE SAs' initiator SPIs.
func childSPIs(n *Node, peer string) []string {
	var out []string
	for _, p := range n.Status().Peers {
		if p.Name != peer {
			continue
		}
		for _, sa := range p.IKESAs {
			if sa.State != "established" {
				continue
			}
			out = append(out, "ike "+sa.SPIi)
			for _, c := range sa.ChildSAs {
				out = append(out, c.SPIIn+"/"+c.SPIOut)
			}
		}
	}
	return out
}

// upPair is nodePair with the IKE SA and its Child SA up.
func upPair(t *testing.T) (a, b *Node, spis []string) {
	a, b = nodePair(t)
	waitFor(t, func() bool { return len(childSPIs(a, "b")) == 2 && len(childSPIs(b, "a")) == 2 }, "IKE and Child SA up")
	return a, b, childSPIs(a, "b")
}

// copyPeers returns cfg with fresh copies of its peers' IKE
// configurations, as a configuration file read again makes them.
func copyPeers(cfg NodeConfig) NodeConfig {
	cfg.Peers = slices.Clone(cfg.Peers)
	for i, p := range cfg.Peers {
		c := *p.IKE
		c.IKEProposals, c.ESPProposals = nil, nil
		cfg.Peers[i].IKE = &c
	}
	return cfg
}

// TestNodeReload reloads a running node with each kind of change: an
// unchanged peer keeps its SAs and their SPIs, an added one is only
// configured (and trapped), a removed or changed one loses its SAs, and a
// setting that cannot change live is refused by name with nothing applied.
func TestNodeReload(t *testing.T) {
	c := netip.MustParseAddr("10.97.0.3")
	tests := []struct {
		name    string
		edit    func(*NodeConfig)
		want    ReloadReport
		refused string // the field named in the refusal
		keeps   bool   // the peer keeps its SAs
	}{
		{name: "unchanged", edit: func(*NodeConfig) {}, want: ReloadReport{Unchanged: []string{"b"}}, keeps: true},
		{name: "added", edit: func(cfg *NodeConfig) {
			p := *cfg.Peers[0].IKE
			p.Name, p.RemoteID, p.RemoteTS = "c", ike.IdentityOf(c), hostSel(c)
			cfg.Peers = append(cfg.Peers, Peer{IKE: &p})
		}, want: ReloadReport{Added: []string{"c"}, Unchanged: []string{"b"}}, keeps: true},
		{name: "policy", edit: func(cfg *NodeConfig) {
			cfg.Policy.Block = []netip.Prefix{netip.MustParsePrefix("10.66.0.0/16")}
		}, want: ReloadReport{Unchanged: []string{"b"}, Policy: true}, keeps: true},
		{name: "removed", edit: func(cfg *NodeConfig) { cfg.Peers = nil }, want: ReloadReport{Removed: []string{"b"}}},
		{name: "changed", edit: func(cfg *NodeConfig) { cfg.Peers[0].IKE.DPD = time.Minute },
			want: ReloadReport{Changed: []string{"b"}}},
		{name: "refused name", edit: func(cfg *NodeConfig) { cfg.Name = "oevpn9" }, refused: "Name", keeps: true},
		{name: "refused addresses", edit: func(cfg *NodeConfig) {
			cfg.Addresses = []netip.Prefix{netip.MustParsePrefix("10.97.0.9/32")}
		}, refused: "Addresses", keeps: true},
		{name: "refused static SA", edit: func(cfg *NodeConfig) {
			cfg.SAs = []PairConfig{{Peer: netip.MustParseAddrPort("127.0.0.1:4500"), Local: hostSel(c), Remote: hostSel(c),
				Out: esp.Config{SPI: 0x100}, In: esp.Config{SPI: 0x101}}}
		}, refused: "SAs", keeps: true},
		{name: "refused opportunism on", edit: func(cfg *NodeConfig) {
			cfg.Policy.Private = []netip.Prefix{netip.MustParsePrefix("10.98.0.0/16")}
		}, refused: "opportunistic", keeps: true},
		{name: "invalid peer", edit: func(cfg *NodeConfig) { cfg.Peers[0].IKE.RemoteTS = nil }, refused: "traffic selectors", keeps: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, spis := upPair(t)
			before := a.configured()
			cfg := copyPeers(a.Config())
			tt.edit(&cfg)
			rep, err := a.Reload(cfg)
			switch {
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused)):
				t.Fatalf("Reload: %v, want a refusal naming %s", err, tt.refused)
			case tt.refused == "" && err != nil:
				t.Fatalf("Reload: %v", err)
			case tt.refused == "" && !sameReport(rep, tt.want):
				t.Fatalf("report %+v, want %+v", rep, tt.want)
			}
			if tt.refused != "" {
				if after := a.configured(); len(after) != len(before) || after[0].IKE != before[0].IKE {
					t.Error("a refused reload changed the peers")
				}
			}
			got := childSPIs(a, "b")
			if tt.keeps && !slices.Equal(got, spis) {
				t.Fatalf("SAs after the reload %v, want the same as before, %v", got, spis)
			}
			if !tt.keeps && len(got) > 0 && slices.Equal(got, spis) {
				t.Fatalf("the old SAs %v outlived the reload", got)
			}
		})
	}
}

// TestNodeReloadAddsTrapsAndPolicy checks what a reload set up: the added
// peer's trap (its traffic now negotiates), the new block prefix, and that
// a changed peer with start = now comes up again, under new SPIs.
func TestNodeReloadAddsTrapsAndPolicy(t *testing.T) {
	a, _, spis := upPair(t)
	c := netip.MustParseAddr("10.97.0.3")
	cfg := copyPeers(a.Config())
	p := *cfg.Peers[0].IKE
	p.Name, p.RemoteID, p.RemoteTS = "c", ike.IdentityOf(c), hostSel(c)
	cfg.Peers = append(cfg.Peers, Peer{IKE: &p})
	cfg.Policy.Block = []netip.Prefix{netip.MustParsePrefix("10.66.0.0/16")}
	if _, err := a.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if v := a.Check(c); v.Verdict != CheckPending || v.Peer != "c" {
		t.Errorf("Check of the added peer's address: %+v", v)
	}
	if v := a.Check(netip.MustParseAddr("10.66.1.1")); v.Verdict != CheckBlocked {
		t.Errorf("Check of the new block prefix: %+v", v)
	}
	if !slices.ContainsFunc(a.Status().Peers, func(ps PeerStatus) bool { return ps.Name == "c" && ps.Kind == PeerConfigured }) {
		t.Error("status does not list the added peer")
	}

	// The added peer goes again, and its trap with it. (Config's peers
	// are copies: changing them changes nothing until Reload.)
	cfg = a.Config()
	cfg.Peers = cfg.Peers[:1]
	cfg.Peers[0].IKE.ChildLifetime = 2 * time.Hour
	rep, err := a.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ReloadReport{Removed: []string{"c"}, Changed: []string{"b"}, Policy: false}); !sameReport(rep, want) {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	if v := a.Check(c); v.Verdict == CheckPending {
		t.Errorf("the removed peer's trap is still there: %+v", v)
	}
	waitFor(t, func() bool { s := childSPIs(a, "b"); return len(s) == 2 && !slices.Equal(s, spis) }, "the changed peer up again")
}

// TestNodeReloadRevokesIdentity is the attack: the peer authenticated as an
// identity that the reloaded configuration no longer accepts. Its SAs must
// not outlive the reload (keeping them would let the revoked identity
// carry traffic), and it must not come up again.
func TestNodeReloadRevokesIdentity(t *testing.T) {
	a, _, _ := upPair(t)
	cfg := copyPeers(a.Config())
	cfg.Peers[0].IKE.RemoteID = ike.IdentityOf(netip.MustParseAddr("10.97.0.200")) // no longer b's
	if _, err := a.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if v := a.Check(netip.MustParseAddr("10.97.0.2")); v.Verdict == CheckEncrypted {
		t.Fatalf("the revoked identity's SA still carries traffic: %+v", v)
	}
	time.Sleep(500 * time.Millisecond) // start = now: it tries again
	if s := childSPIs(a, "b"); len(s) > 0 {
		t.Fatalf("the revoked identity came up again: %v", s)
	}
}

// TestNodeReloadRefusalIsWrapped lets callers tell a refusal apart.
func TestNodeReloadRefusalIsWrapped(t *testing.T) {
	a, _, _ := upPair(t)
	cfg := a.Config()
	cfg.MTU++
	if _, err := a.Reload(cfg); !errors.Is(err, ErrReloadRefused) {
		t.Fatalf("Reload: %v, want ErrReloadRefused", err)
	}
}

func sameReport(a, b ReloadReport) bool {
	return slices.Equal(a.Added, b.Added) && slices.Equal(a.Removed, b.Removed) && slices.Equal(a.Changed, b.Changed) &&
		slices.Equal(a.Unchanged, b.Unchanged) && a.Policy == b.Policy && slices.Equal(a.Ended, b.Ended)
}

// TestNodeReloadPolicyFailsClosed is the attack on a reload that makes
// addresses private: what the old policy let through must not outlive it.
// A clear verdict (the negative cache) for an address now private is
// flushed, so its traffic is not sent in the clear until the verdict runs
// out; an unauthenticated SA for an address now private stops carrying
// traffic; an opportunistic peer whose address is now blocked is ended.
func TestNodeReloadPolicyFailsClosed(t *testing.T) {
	a, b, addrA, _ := oeNodes(t)
	nokey := netip.MustParseAddr("198.51.100.9") // publishes nothing: opportunism falls back to clear
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.oe.Trigger(ctx, nokey)
	if v := a.Check(nokey); v.Verdict != CheckClear {
		t.Fatalf("before the reload: %+v, want clear (opportunism fell back)", v)
	}
	cfg := a.Config()
	cfg.Policy.Private = []netip.Prefix{netip.PrefixFrom(nokey, 32)}
	rep, err := a.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v := a.Check(nokey); v.Verdict == CheckClear || !rep.Policy || rep.Flushed == 0 {
		t.Errorf("after making %v private: %+v (report %+v): the old clear verdict survived", nokey, v, rep)
	}

	cfg = b.Config()
	cfg.Policy.Private = []netip.Prefix{netip.PrefixFrom(addrA, 32)}
	if _, err := b.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if v := b.Check(addrA); v.Verdict == CheckUnauthenticated || v.Verdict == CheckEncrypted {
		t.Errorf("after making %v private: %+v: the unauthenticated SA still carries its traffic", addrA, v)
	}

	cfg = b.Config()
	cfg.Policy.Private, cfg.Policy.Block = nil, []netip.Prefix{netip.PrefixFrom(addrA, 32)}
	rep, err = b.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"oe-in-" + addrA.String()}; !slices.Equal(rep.Ended, want) {
		t.Errorf("after blocking %v: ended %v, want %v", addrA, rep.Ended, want)
	}
	for _, sa := range b.IKE().SAs() {
		if sa.Peer == "oe-in-"+addrA.String() {
			t.Errorf("the blocked address's opportunistic IKE SA is still there: %+v", sa)
		}
	}
	if v := b.Check(addrA); v.Verdict != CheckBlocked {
		t.Errorf("after blocking %v: %+v", addrA, v)
	}
}

// TestNodeReloadUndone: a reload the daemon refuses (a configured peer
// named as an opportunistic one that runs) leaves the policy and the
// peers as they were.
func TestNodeReloadUndone(t *testing.T) {
	a, _, addrA, addrB := oeNodes(t)
	blocked := netip.MustParseAddr("198.51.100.77")
	cfg := a.Config()
	cfg.Policy.Block = []netip.Prefix{netip.PrefixFrom(blocked, 32)}
	psk := []byte("a pre-shared key of some length")
	cfg.Peers = append(cfg.Peers, Peer{IKE: &ike.PeerConfig{Name: "oe-out-" + addrB.String(), Addr: addrB,
		Auth: ike.Credential{PSK: psk}, PeerAuth: ike.PeerAuth{PSK: psk}, LocalTS: hostSel(addrA), RemoteTS: hostSel(addrB)}})
	if _, err := a.Reload(cfg); !errors.Is(err, ike.ErrPeerExists) {
		t.Fatalf("Reload: %v, want ErrPeerExists", err)
	}
	if v := a.Check(blocked); v.Verdict == CheckBlocked {
		t.Errorf("the refused reload's policy applies: %+v", v)
	}
	if len(a.Config().Peers) != 0 || len(a.Config().Policy.Block) != 0 {
		t.Errorf("the refused reload's configuration stayed: %+v", a.Config())
	}
	if v := a.Check(addrB); v.Verdict != CheckEncrypted {
		t.Errorf("the opportunistic SA: %+v", v)
	}
}
