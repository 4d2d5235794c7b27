package ike

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"
)

// The configured peers change at run time as a whole (SetPeers, as `wg
// syncconf` and `swanctl --load-all` do): the daemon's goroutine swaps the
// list, and the stateless checks before the queues (gateInit) read it
// through an atomic pointer.

// PeerChanges says what SetPeers changed, by peer name, each list sorted.
type PeerChanges struct {
	// Added are new peers; Removed, peers no longer configured, whose
	// IKE SAs were deleted; Changed, peers whose configuration differs,
	// whose IKE SAs were deleted to be negotiated again under the new
	// one; Unchanged, peers that kept their IKE and Child SAs.
	Added, Removed, Changed, Unchanged []string
}

// ErrDuplicatePeer refuses two peers of one name.
var ErrDuplicatePeer = errors.New("ike: two peers have the same name")

// configured returns the configured peers. The slice is never modified:
// SetPeers publishes a new one.
func (d *Daemon) configured() []*PeerConfig {
	if p := d.peers.Load(); p != nil {
		return *p
	}
	return nil
}

// CheckPeers checks a list of configured peers for SetPeers without
// changing anything, and fills in their defaults.
func CheckPeers(peers []*PeerConfig) error {
	seen := map[string]bool{}
	for _, p := range peers {
		if seen[p.Name] {
			return fmt.Errorf("%w: %q", ErrDuplicatePeer, p.Name)
		}
		seen[p.Name] = true
		if err := p.setDefaults(); err != nil {
			return err
		}
	}
	return nil
}

// SamePeer reports whether a and b configure a peer identically: the same
// name, address, identities, credentials, proposals, selectors, lifetimes
// and timers. Keys compare by value, certificates by their DER and CA
// pools by their contents; the daemon's own bookkeeping in a PeerConfig
// (its restart backoff) does not count; a function field set in either
// makes them differ unless both are nil (configured peers have none).
func SamePeer(a, b *PeerConfig) bool {
	x, y := *a, *b
	if !sameSigner(x.Auth.Signer, y.Auth.Signer) || !sameKey(x.PeerAuth.PublicKey, y.PeerAuth.PublicKey) ||
		!sameCerts([]*x509.Certificate{x.Auth.Cert}, []*x509.Certificate{y.Auth.Cert}) || !sameCerts(x.Auth.Chain, y.Auth.Chain) ||
		!sameCerts(x.PeerAuth.Certs, y.PeerAuth.Certs) || !sameCerts(x.PeerAuth.CAs, y.PeerAuth.CAs) ||
		(x.PeerAuth.Roots == nil) != (y.PeerAuth.Roots == nil) || x.PeerAuth.Roots != nil && !x.PeerAuth.Roots.Equal(y.PeerAuth.Roots) {
		return false
	}
	for _, p := range []*PeerConfig{&x, &y} {
		p.Auth.Signer, p.PeerAuth.PublicKey, p.Auth.Cert, p.Auth.Chain = nil, nil, nil, nil
		p.PeerAuth.Certs, p.PeerAuth.CAs, p.PeerAuth.Roots = nil, nil, nil
		p.restarts, p.refusalLogged = 0, time.Time{}
	}
	return reflect.DeepEqual(x, y)
}

// sameKey compares public keys by value (the standard library's keys have
// Equal).
func sameKey(a, b crypto.PublicKey) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func sameSigner(a, b crypto.Signer) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return sameKey(a.Public(), b.Public())
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool {
		return x == nil && y == nil || x != nil && y != nil && x.Equal(y)
	})
}

// SetPeers replaces the configured peers with peers (checked as by
// CheckPeers): a peer whose configuration is unchanged (SamePeer) keeps
// its IKE and Child SAs, their SPIs and its restart timers; a removed or
// changed peer's IKE SAs are deleted (with a Delete to the peer for
// established ones) and their Child SAs removed before SetPeers returns,
// so that none carries traffic under a configuration that is gone. It
// initiates nothing: the caller brings up the added and changed peers
// (Initiate), or traffic does. On error nothing changed.
func (d *Daemon) SetPeers(peers []*PeerConfig) (PeerChanges, error) {
	var ch PeerChanges
	if err := CheckPeers(peers); err != nil {
		return ch, err
	}
	err := ErrClosed
	d.call(func() {
		err = nil
		for _, p := range peers {
			if q := d.dynamic[p.Name]; q != nil {
				err = fmt.Errorf("%w: %q (an opportunistic or AutoVPN peer has it now)", ErrPeerExists, p.Name)
				return
			}
		}
		old := map[string]*PeerConfig{}
		for _, p := range d.configured() {
			old[p.Name] = p
		}
		next := make([]*PeerConfig, 0, len(peers))
		var gone []*PeerConfig
		for _, p := range peers {
			switch q := old[p.Name]; {
			case q == nil:
				ch.Added = append(ch.Added, p.Name)
				next = append(next, p)
			case SamePeer(q, p):
				ch.Unchanged = append(ch.Unchanged, p.Name)
				next = append(next, q) // its IKE SAs point at q
			default:
				ch.Changed = append(ch.Changed, p.Name)
				next = append(next, p)
				gone = append(gone, q)
			}
			delete(old, p.Name)
		}
		for name, q := range old {
			ch.Removed = append(ch.Removed, name)
			gone = append(gone, q)
		}
		// The old configurations go first: nothing looks them up by
		// name or address while their IKE SAs are deleted, and their
		// pending restarts find them gone.
		d.peers.Store(&next)
		for _, q := range gone {
			d.deleteSAs(func(sa *ikeSA) bool { return sa.peer == q })
		}
	})
	for _, l := range []*[]string{&ch.Added, &ch.Removed, &ch.Changed, &ch.Unchanged} {
		slices.Sort(*l)
	}
	return ch, err
}

// ErrClosed is returned for work asked of a closed daemon.
var ErrClosed = errors.New("ike: daemon closed")

// deleteSAs deletes the IKE SAs that match (Down, and SetPeers for removed
// and changed peers): a Delete for the established ones, and their Child
// SAs removed from the datapath at once. It returns how many it deleted.
func (d *Daemon) deleteSAs(match func(*ikeSA) bool) int {
	n := 0
	for _, sa := range d.sas {
		if !match(sa) {
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
	return n
}
