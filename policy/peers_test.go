package policy

import (
	"errors"
	"testing"
)

func TestPeersAuthorize(t *testing.T) {
	var p Peers
	p.Allow("gw", []string{"gw.example.org"}, false)
	p.Allow("any", nil, true)
	tests := []struct {
		id PeerIdentity
		ok bool
	}{
		{PeerIdentity{Peer: "gw", Identity: "gw.example.org", Method: "signature"}, true},
		{PeerIdentity{Peer: "gw", Identity: "evil.example.org", Method: "signature"}, false},
		{PeerIdentity{Peer: "gw", Identity: "gw.example.org", Method: "null"}, false},
		{PeerIdentity{Peer: "any", Identity: "(null)", Method: "null"}, true},
		{PeerIdentity{Peer: "nobody", Identity: "x", Method: "psk"}, false},
	}
	for _, tt := range tests {
		err := p.AuthorizePeer(tt.id)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("%+v: %v", tt.id, err)
		}
	}
}
