package policy

import (
	"crypto"
	"errors"
	"fmt"
	"sync"
)

// PeerIdentity is what IKE learned about an authenticated peer, for the
// policy to accept or refuse.
type PeerIdentity struct {
	// Peer is the name of the configured peer the IKE SA was matched to.
	Peer string
	// Identity is the peer's proven identity, formatted (an address, a
	// domain name, user@domain or a DN).
	Identity string
	// Key is the public key that verified the peer's AUTH payload (nil
	// for a PSK or AUTH_NULL).
	Key crypto.PublicKey
	// Method is "psk", "signature" or "null".
	Method string
}

// ErrRefused is wrapped by every refusal.
var ErrRefused = errors.New("policy: peer refused")

// Peers is the policy for configured peers: which identities each may
// authenticate as, and whether unauthenticated (AUTH_NULL) peers are
// allowed. It is safe for concurrent use; Allow may change it at run time.
type Peers struct {
	mu    sync.RWMutex
	rules map[string]peerRule
}

type peerRule struct {
	identities map[string]bool // empty: any identity IKE's own checks accept
	null       bool
}

// Allow sets the rule for a peer: the identities it may prove (none: any
// that its configured credentials prove) and whether AUTH_NULL is allowed.
func (p *Peers) Allow(peer string, identities []string, null bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rules == nil {
		p.rules = map[string]peerRule{}
	}
	r := peerRule{identities: map[string]bool{}, null: null}
	for _, id := range identities {
		r.identities[id] = true
	}
	p.rules[peer] = r
}

// AuthorizePeer accepts or refuses an authenticated peer.
func (p *Peers) AuthorizePeer(id PeerIdentity) error {
	p.mu.RLock()
	r, ok := p.rules[id.Peer]
	p.mu.RUnlock()
	switch {
	case !ok:
		return fmt.Errorf("%w: %q is not a configured peer", ErrRefused, id.Peer)
	case id.Method == "null" && !r.null:
		return fmt.Errorf("%w: %s authenticated with AUTH_NULL, which peer %q does not allow", ErrRefused, id.Identity, id.Peer)
	case len(r.identities) > 0 && !r.identities[id.Identity]:
		return fmt.Errorf("%w: identity %s is not allowed for peer %q", ErrRefused, id.Identity, id.Peer)
	}
	return nil
}
