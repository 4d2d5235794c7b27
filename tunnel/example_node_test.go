package tunnel_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/netip"
	"time"

	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/tunnel"
)

// Two nodes in one process, each on its own userspace network stack, are
// each other's IKEv2 peer; a program on A dials a server on B, and the
// connection goes through ESP over loopback UDP. No TOML and no
// privileges: this is what the proxies and the demo are built on.
func ExampleNewNode() {
	addrA, addrB := netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.2")
	host := func(a netip.Addr) policy.Selectors {
		return policy.Selectors{policy.PrefixSelector(netip.PrefixFrom(a, 32))}
	}
	psk := []byte("example pre-shared key, long and random in real life")
	peer := func(name string, local, remote netip.Addr, ikePort, nattPort uint16) *ike.PeerConfig {
		return &ike.PeerConfig{Name: name, Addr: netip.MustParseAddr("127.0.0.1"), IKEPort: ikePort, NATTPort: nattPort,
			LocalID: ike.IdentityOf(local), RemoteID: ike.IdentityOf(remote),
			Auth: ike.Credential{PSK: psk}, PeerAuth: ike.PeerAuth{PSK: psk},
			LocalTS: host(local), RemoteTS: host(remote)}
	}
	// B answers; it learns A's ports from A's messages.
	b, err := tunnel.NewNode(tunnel.NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addrB, 32)},
		Peers: []tunnel.Peer{{IKE: peer("a", addrB, addrA, 1, 1), Start: tunnel.StartNever}}})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	ikePort, nattPort := b.Engine().Ports()
	a, err := tunnel.NewNode(tunnel.NodeConfig{Netstack: true, MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addrA, 32)},
		Peers: []tunnel.Peer{{IKE: peer("b", addrA, addrB, ikePort, nattPort)}}}) // negotiates on the first packet
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()

	ln, err := b.Listen("tcp", ":7")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c) // echo
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", "10.96.0.2:7")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "hello through ESP")
	buf := make([]byte, 17)
	io.ReadFull(c, buf)
	fmt.Println(string(buf))
	fmt.Println(a.Check(addrB).Verdict)
	// Output:
	// hello through ESP
	// encrypted-and-authenticated
}
