package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
)

// Host mode off Linux (macOS, Windows): oevpn gives the TUN device its
// addresses and routes every prefix it must see into it, as wg-quick and
// wireguard-windows do, through the OS's own routing API (route sockets,
// the IP Helper API). There are no marks and no policy routing there:
// oevpn's own sockets leave by the outside interface because they are
// bound to it (see Outside), and the routes are in the main table.
//
// What to add, in what order, the rollback when a step fails, the removal
// on Close and the answer of RoutesInto live here, over hostNet, so that
// they are tested on any platform; hostNet's implementations only make the
// OS calls.

// hostNet is the OS routing API for one TUN device.
type hostNet interface {
	// addAddress assigns p to the device.
	addAddress(p netip.Prefix) error
	// up brings the device up.
	up() error
	// delAddress removes p from the device; errNotFound if it has not.
	delAddress(p netip.Prefix) error
	// addRoute routes p into the device, preferring source src when
	// valid (src is one of the device's addresses); errExists if a
	// route for exactly p exists already.
	addRoute(p netip.Prefix, src netip.Addr) error
	// delRoute removes the route for p into the device; errNotFound if
	// there is none.
	delRoute(p netip.Prefix) error
	// lookup asks the OS how it sends a packet to dst: into the device,
	// or by the interface named via (or via says why not, e.g. "a reject
	// route").
	lookup(dst netip.Addr) (into bool, via string, err error)
}

// Errors a hostNet maps its OS's codes to (EEXIST, ESRCH;
// ERROR_OBJECT_ALREADY_EXISTS, ERROR_NOT_FOUND).
var (
	errExists   = errors.New("exists")
	errNotFound = errors.New("not found")
)

// errNoPolicyRouting is returned for what needs Linux policy routing.
var errNoPolicyRouting = errors.New("tunnel: AutoVPN's protected prefixes need policy routing, which oevpn sets up only on Linux")

// hostRouting is what oevpn added through a hostNet, to be removed.
type hostRouting struct {
	net  hostNet
	name string // the device's, for messages
	log  *slog.Logger
	undo []func() error
}

// configure assigns cfg's addresses to the device, brings it up, then
// routes cfg's routes into it, then the prefixes of the addresses (which
// Linux routes by itself). After each route it asks the OS whether the
// prefix now goes into the device: a route by another interface that
// exists already, or that the OS prefers, is refused, never replaced:
// oevpn does not take over routes it did not make, and would not know
// what to restore. On any error everything added is removed again and the
// error returned.
func (h *hostRouting) configure(cfg OSConfig) (err error) {
	if len(cfg.Protected) > 0 {
		return errNoPolicyRouting
	}
	defer func() {
		if err != nil {
			h.remove()
		}
	}()
	onDev := map[netip.Addr]bool{}
	for _, a := range cfg.Addresses {
		if err := h.net.addAddress(a); err != nil && !errors.Is(err, errExists) {
			return fmt.Errorf("tunnel: assigning %v to %s: %w", a, h.name, err)
		}
		h.log.Debug("added address", "device", h.name, "address", a)
		h.undo = append(h.undo, func() error { return h.net.delAddress(a) })
		onDev[a.Addr()] = true
	}
	if err := h.net.up(); err != nil {
		return fmt.Errorf("tunnel: bringing %s up: %w", h.name, err)
	}
	warned := map[netip.Addr]bool{}
	for _, r := range hostRoutes(cfg) {
		src := r.Src
		if src.IsValid() && !onDev[src] {
			// A route's source can only be one of the device's own
			// addresses there (XNU's rt_setif, Windows' source
			// selection): the OS picks.
			if !warned[src] {
				warned[src] = true
				h.log.Warn("the OS chooses the source address of packets routed into the device: it cannot prefer an address of another interface here; give the device an address (interface.addresses) that the traffic selectors cover",
					"device", h.name, "prefix", r.Prefix, "source", src)
			}
			src = netip.Addr{}
		}
		err := h.net.addRoute(r.Prefix, src)
		if err != nil && !errors.Is(err, errExists) {
			return fmt.Errorf("tunnel: routing %v into %s: %w", r.Prefix, h.name, err)
		}
		if err == nil {
			h.log.Debug("added route", "device", h.name, "prefix", r.Prefix, "source", src)
			p := r.Prefix
			h.undo = append(h.undo, func() error { return h.net.delRoute(p) })
		}
		// Whether added or there already (an address's prefix), the
		// OS must now send the prefix into the device: not so when the
		// route that exists is another interface's (macOS has one route
		// per prefix), or when Windows prefers another interface's
		// route for the same prefix by its metric.
		probe := probeAddr(r.Prefix)
		into, via, lerr := h.net.lookup(probe)
		if lerr != nil {
			return fmt.Errorf("tunnel: looking up the route to %v (in %v): %w", probe, r.Prefix, lerr)
		}
		if !into && errors.Is(err, errExists) {
			return fmt.Errorf("tunnel: a route for %v exists already, by %s: oevpn does not replace routes it did not make; remove it or leave %v out of the configuration", r.Prefix, via, r.Prefix)
		}
		if !into {
			return fmt.Errorf("tunnel: with %v routed into %s the OS still sends %v by %s, a route it prefers: remove that route or leave %v out of the configuration", r.Prefix, h.name, probe, via, r.Prefix)
		}
	}
	return nil
}

// probeAddr returns the address of p whose route configure checks: the
// first of p's upper half (64.0.0.0 for 0.0.0.0/1, not 0.0.0.0, which an
// OS may refuse to look up), or p's only address.
func probeAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if p.IsSingleIP() {
		return a
	}
	b := a.AsSlice()
	b[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
	m, _ := netip.AddrFromSlice(b)
	return m
}

// remove removes what configure added, last first. What is gone already
// (with the device) is not an error. It may be called again.
func (h *hostRouting) remove() error {
	var errs []error
	for i := len(h.undo) - 1; i >= 0; i-- {
		if err := h.undo[i](); err != nil && !errors.Is(err, errNotFound) {
			errs = append(errs, err)
		}
	}
	h.undo = nil
	return errors.Join(errs...)
}

// routesInto reports whether the OS sends a packet to dst into the
// device: nil if it does, else why not.
func (h *hostRouting) routesInto(dst netip.Addr) error {
	into, via, err := h.net.lookup(dst.Unmap())
	if err != nil {
		return fmt.Errorf("no route to %v: %w", dst, err)
	}
	if !into {
		return fmt.Errorf("the OS routes %v by %s, not into %s", dst, via, h.name)
	}
	return nil
}

// hostRoutes returns the routes to add for cfg, each prefix once (the
// first source given wins), in cfg's order, followed by the prefixes of
// the device's addresses. A default route (/0) becomes its two halves, as
// wg-quick does on macOS: more specific than the host's own default route,
// which stays for oevpn's bound sockets, so neither is replaced.
func hostRoutes(cfg OSConfig) []Route {
	var out []Route
	seen := map[netip.Prefix]bool{}
	add := func(r Route) {
		r.Prefix = r.Prefix.Masked()
		if !r.Prefix.IsValid() {
			return
		}
		for _, p := range splitDefault(r.Prefix) {
			if !seen[p] {
				seen[p] = true
				out = append(out, Route{Prefix: p, Src: r.Src})
			}
		}
	}
	for _, r := range cfg.Routes {
		add(r)
	}
	for _, a := range cfg.Addresses {
		if !a.IsSingleIP() {
			add(Route{Prefix: a, Src: a.Addr()})
		}
	}
	return out
}

// splitDefault returns p, or its two halves if p is a default route.
func splitDefault(p netip.Prefix) []netip.Prefix {
	if p.Bits() != 0 {
		return []netip.Prefix{p}
	}
	hi := netip.AddrFrom4([4]byte{128})
	if p.Addr().Is6() {
		hi = netip.AddrFrom16([16]byte{0x80})
	}
	return []netip.Prefix{netip.PrefixFrom(p.Addr(), 1), netip.PrefixFrom(hi, 1)}
}
