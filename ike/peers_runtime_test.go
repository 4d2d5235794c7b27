package ike

import (
	"crypto/ecdsa"
	"crypto/x509"
	"slices"
	"testing"
	"time"
)

// copyPeer returns a fresh configuration equal to p's, as a reload of an
// unchanged file makes it (its defaults not yet filled in).
func copyPeer(p *PeerConfig) *PeerConfig {
	c := *p
	c.IKEProposals, c.ESPProposals = nil, nil
	c.restarts = 3 // bookkeeping, not configuration
	return &c
}

// saCount returns how many IKE SAs d holds.
func saCount(d *Daemon) (n int) {
	d.call(func() { n = len(d.sas) })
	return n
}

// TestSetPeersKeepsUnchanged reloads the peers as `wg syncconf` would: the
// unchanged peer keeps its IKE and Child SAs (the same SPIs, nothing sent),
// an added one is only configured, and a changed one is negotiated again.
func TestSetPeersKeepsUnchanged(t *testing.T) {
	d1, d2, dp1, _ := memPair(t)
	sa := current(d1)
	spiI, spiR := sa.spiI, sa.spiR
	var child *ChildSA
	d1.call(func() { child = sa.children[0] })
	sent := len(dp1.sends())
	two := d1.configured()[0]

	three := copyPeer(two)
	three.Name, three.Addr = "three", three.Addr.Next()
	ch, err := d1.SetPeers([]*PeerConfig{copyPeer(two), three})
	if err != nil {
		t.Fatal(err)
	}
	if want := (PeerChanges{Added: []string{"three"}, Unchanged: []string{"two"}}); !equalChanges(ch, want) {
		t.Fatalf("changes %+v, want %+v", ch, want)
	}
	if cur := current(d1); cur != sa || cur.spiI != spiI || cur.spiR != spiR {
		t.Fatal("the unchanged peer's IKE SA was replaced")
	}
	d1.call(func() {
		if len(sa.children) != 1 || sa.children[0] != child || sa.peer != two {
			t.Error("the unchanged peer's Child SA or configuration was replaced")
		}
	})
	if dp1.installed() != 1 || len(dp1.sends()) != sent {
		t.Fatalf("a reload of an unchanged peer touched the datapath (%d Child SAs) or sent %d messages", dp1.installed(), len(dp1.sends())-sent)
	}
	if !oneEstablished(d2) {
		t.Fatal("the peer lost its IKE SA")
	}

	// Changed (DPD now on): deleted, and negotiated again on Initiate.
	changed := copyPeer(two)
	changed.DPD = time.Minute
	if ch, err = d1.SetPeers([]*PeerConfig{changed, three}); err != nil {
		t.Fatal(err)
	}
	if want := (PeerChanges{Changed: []string{"two"}, Unchanged: []string{"three"}}); !equalChanges(ch, want) {
		t.Fatalf("changes %+v, want %+v", ch, want)
	}
	if saCount(d1) != 0 || dp1.installed() != 0 {
		t.Fatal("the changed peer's SAs outlived SetPeers")
	}
	if err := d1.Initiate("two"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return oneEstablished(d1) && oneEstablished(d2) }, "IKE SA up under the changed configuration")
	if cur := current(d1); cur.peer != changed || cur.spiI == spiI {
		t.Fatal("the new IKE SA is not the changed configuration's")
	}
}

// TestSetPeersRemovedSendsDelete removes a peer with an IKE SA up: its
// Child SA leaves the datapath before SetPeers returns, the peer is told
// with a Delete (it drops its own SAs: DPD is off, nothing else would), and
// nothing brings it back: not traffic, not a pending restart.
func TestSetPeersRemovedSendsDelete(t *testing.T) {
	d1, d2, dp1, dp2 := memPair(t)
	two := d1.configured()[0]
	d1.call(func() { two.AutoStart = true }) // would restart after a failure
	ch, err := d1.SetPeers(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (PeerChanges{Removed: []string{"two"}}); !equalChanges(ch, want) {
		t.Fatalf("changes %+v, want %+v", ch, want)
	}
	if dp1.installed() != 0 || saCount(d1) != 0 {
		t.Fatal("the removed peer's SAs outlived SetPeers")
	}
	waitUntil(t, func() bool { return saCount(d2) == 0 && dp2.installed() == 0 }, "the peer deleted its SAs on our Delete")
	d1.Acquire("two")
	d1.call(func() { two.RetransmitBase = time.Millisecond; d1.scheduleRestart(two) }) // restart due in 4 ms
	time.Sleep(100 * time.Millisecond)
	if err := d1.Initiate("two"); err == nil {
		t.Fatal("Initiate found the removed peer")
	}
	if saCount(d1) != 0 || saCount(d2) != 0 {
		t.Fatal("the removed peer was negotiated again")
	}
}

// TestSetPeersRefusesBadList changes nothing when the new list is wrong.
func TestSetPeersRefusesBadList(t *testing.T) {
	d1, _, dp1, _ := memPair(t)
	two := d1.configured()[0]
	bad := copyPeer(two)
	bad.RemoteTS = nil
	for name, list := range map[string][]*PeerConfig{
		"duplicate": {copyPeer(two), copyPeer(two)},
		"invalid":   {bad},
	} {
		if _, err := d1.SetPeers(list); err == nil {
			t.Errorf("%s: SetPeers accepted it", name)
		}
	}
	if !oneEstablished(d1) || dp1.installed() != 1 || d1.configured()[0] != two {
		t.Fatal("a refused SetPeers changed something")
	}
}

func equalChanges(a, b PeerChanges) bool {
	return slices.Equal(a.Added, b.Added) && slices.Equal(a.Removed, b.Removed) &&
		slices.Equal(a.Changed, b.Changed) && slices.Equal(a.Unchanged, b.Unchanged)
}

// TestSamePeer compares configurations read twice from the same files
// (keys, certificates and CA pools parsed again: other pointers, equal
// values) as the same, and any change of credential as a change.
func TestSamePeer(t *testing.T) {
	now := time.Now()
	ca, caKey := issueTestCert(t, "ca", true, nil, nil, now.Add(-time.Hour), now.Add(time.Hour))
	leaf, leafKey := issueTestCert(t, "leaf", false, ca, caKey, now.Add(-time.Hour), now.Add(time.Hour))
	other, otherKey := issueTestCert(t, "other", false, ca, caKey, now.Add(-time.Hour), now.Add(time.Hour))
	reparse := func(c *x509.Certificate) *x509.Certificate {
		p, err := x509.ParseCertificate(c.Raw)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	rekey := func(k *ecdsa.PrivateKey) *ecdsa.PrivateKey {
		der, _ := x509.MarshalECPrivateKey(k)
		p, err := x509.ParseECPrivateKey(der)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk := func(cert *x509.Certificate, key *ecdsa.PrivateKey) *PeerConfig {
		roots := x509.NewCertPool()
		roots.AddCert(reparse(ca))
		return &PeerConfig{Name: "p", Auth: Credential{Signer: rekey(key), Cert: reparse(cert)},
			PeerAuth: PeerAuth{Roots: roots, CAs: []*x509.Certificate{reparse(ca)}, PublicKey: rekey(otherKey).Public()}}
	}
	base := mk(leaf, leafKey)
	if !SamePeer(base, mk(leaf, leafKey)) {
		t.Error("the same configuration, parsed again, differs")
	}
	for name, p := range map[string]*PeerConfig{
		"certificate": mk(other, leafKey),
		"key":         mk(leaf, otherKey),
		"roots":       func() *PeerConfig { p := mk(leaf, leafKey); p.PeerAuth.Roots = x509.NewCertPool(); return p }(),
		"pinned key":  func() *PeerConfig { p := mk(leaf, leafKey); p.PeerAuth.PublicKey = leafKey.Public(); return p }(),
		"dpd":         func() *PeerConfig { p := mk(leaf, leafKey); p.DPD = time.Second; return p }(),
	} {
		if SamePeer(base, p) {
			t.Errorf("a changed %s is the same peer", name)
		}
	}
}
