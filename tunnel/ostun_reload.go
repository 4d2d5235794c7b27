package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrRoutesNotLive refuses routes that cannot be added while the device
// runs on this platform.
var ErrRoutesNotLive = errors.New("tunnel: new routes into the device need a restart here")

// addRoutes routes more prefixes into the device for a reload (macOS,
// Windows: OSDevice.AddRoutes), with configure's check that the OS then
// sends each into the device; the OS picks their source address. It
// returns the routes it added; on error it removes them again and adds
// nothing. Close removes them with the rest.
func (h *hostRouting) addRoutes(rs []Route) (added []Route, err error) {
	defer func() {
		if err != nil {
			for _, r := range added {
				h.net.delRoute(r.Prefix)
			}
			added = nil
		}
	}()
	for _, r := range rs {
		p := r.Prefix.Masked()
		err := h.net.addRoute(p, netip.Addr{})
		if err != nil && !errors.Is(err, errExists) {
			return added, fmt.Errorf("tunnel: routing %v into %s: %w", p, h.name, err)
		}
		if err == nil {
			added = append(added, Route{Prefix: p})
		}
		probe := probeAddr(p)
		if into, via, lerr := h.net.lookup(probe); lerr != nil || !into {
			return added, fmt.Errorf("tunnel: with %v routed into %s the OS still sends %v by %s (%v): oevpn does not replace routes it did not make", p, h.name, probe, via, lerr)
		}
	}
	for _, r := range added {
		p := r.Prefix
		h.undo = append(h.undo, func() error { return h.net.delRoute(p) })
	}
	return added, nil
}
