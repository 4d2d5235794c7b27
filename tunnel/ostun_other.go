//go:build !linux && !darwin && !windows

package tunnel

import (
	"fmt"
	"log/slog"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// OSDevice is an OS TUN device. On this platform oevpn creates the device
// but does not configure addresses or routes: the operator does, and
// CreateOSTUN logs what is needed.
type OSDevice struct {
	tun.Device
}

// CreateOSTUN creates the TUN device.
func CreateOSTUN(cfg OSConfig) (*OSDevice, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("tunnel: creating TUN device %q: %w", cfg.Name, err)
	}
	name, _ := dev.Name()
	for _, a := range cfg.Addresses {
		cfg.Logger.Warn("assign this address to the device yourself", "device", name, "address", a)
	}
	for _, r := range cfg.Routes {
		cfg.Logger.Warn("route this prefix into the device yourself", "device", name, "prefix", r.Prefix)
	}
	return &OSDevice{Device: dev}, nil
}

// AddBypass is not implemented here: nothing is routed around the device.
func (d *OSDevice) AddBypass(netip.Addr) error { return nil }

// RemoveBypass undoes AddBypass.
func (d *OSDevice) RemoveBypass(netip.Addr) error { return nil }

// BypassStats returns 0, 0: there are no bypass routes here.
func (d *OSDevice) BypassStats() (installed int, refused uint64) { return 0, 0 }

// RoutesInto returns nil: oevpn does not configure routing here (the
// operator does), and does not check it.
func (d *OSDevice) RoutesInto(netip.Addr) error { return nil }

// RemoveRouting returns 0, nil: oevpn installs no routing here.
func RemoveRouting(OSConfig) (int, error) { return 0, nil }
