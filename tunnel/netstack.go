package tunnel

import (
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// NewNetstack creates a userspace packet device: a gVisor TCP/IP stack that
// owns the given inner addresses. Programs in this process reach the tunnel
// through the returned Net (Dial, Listen, ping); nothing touches the host's
// network configuration, so no privileges are needed.
func NewNetstack(addrs []netip.Addr, mtu int) (tun.Device, *netstack.Net, error) {
	if len(addrs) == 0 {
		return nil, nil, fmt.Errorf("tunnel: netstack device needs at least one address")
	}
	dev, tnet, err := netstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, nil, fmt.Errorf("tunnel: creating netstack device: %w", err)
	}
	return dev, tnet, nil
}
