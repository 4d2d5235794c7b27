package ike

import (
	"crypto"

	"github.com/oevpn/oevpn/internal/ts"
)

// Selector is one traffic selector (RFC 7296 §3.13.1) as configured and
// installed; TrafficSelector is its wire form.
type Selector = ts.Selector

// Selectors is a list of traffic selectors.
type Selectors = ts.Selectors

// PeerIdentity is what IKE learned about an authenticated peer, for an
// Authorizer to accept or refuse.
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
