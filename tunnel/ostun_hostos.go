//go:build darwin || windows

package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// OSDevice is an OS TUN device (utun on macOS, Wintun on Windows) with the
// addresses and routes oevpn gave it. Close removes them; they also go
// with the device when the process dies.
type OSDevice struct {
	tun.Device
	routing hostRouting
}

// CreateOSTUN creates the TUN device, assigns it cfg's addresses and
// routes cfg's routes into it (see hostRouting.configure). There are no
// marks and no policy routing here: cfg.Mark and cfg.Table are not used,
// and protected prefixes (AutoVPN gateway mode) are refused.
func CreateOSTUN(cfg OSConfig) (*OSDevice, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Protected) > 0 {
		return nil, errNoPolicyRouting
	}
	dev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("tunnel: creating TUN device %q: %w (are we root, or Administrator with wintun.dll beside oevpn.exe?)", cfg.Name, err)
	}
	name, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("tunnel: TUN device %q: %w", cfg.Name, err)
	}
	hn, err := newHostNet(dev, name)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("tunnel: TUN device %s: %w", name, err)
	}
	d := &OSDevice{Device: dev, routing: hostRouting{net: hn, name: name, log: cfg.Logger}}
	if err := d.routing.configure(cfg); err != nil {
		dev.Close()
		return nil, err
	}
	return d, nil
}

// AddBypass is not implemented here: nothing is routed around the device,
// and the clear path carries what the negative cache sends in the clear.
func (d *OSDevice) AddBypass(netip.Addr) error { return nil }

// RemoveBypass undoes AddBypass.
func (d *OSDevice) RemoveBypass(netip.Addr) error { return nil }

// BypassStats returns 0, 0: there are no bypass routes here.
func (d *OSDevice) BypassStats() (installed int, refused uint64) { return 0, 0 }

// RoutesInto reports whether the OS sends a packet to dst into the device:
// nil if it does, else why not. It asks the OS's routing table itself, so
// a route removed or outdone behind oevpn's back shows.
func (d *OSDevice) RoutesInto(dst netip.Addr) error { return d.routing.routesInto(dst) }

// Close removes the routes and addresses oevpn added and closes the device.
func (d *OSDevice) Close() error {
	return errors.Join(d.routing.remove(), d.Device.Close())
}

// RemoveRouting returns 0, nil: everything oevpn installs here goes with
// the device.
func RemoveRouting(OSConfig) (int, error) { return 0, nil }
