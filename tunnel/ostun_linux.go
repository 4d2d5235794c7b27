package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// OSDevice is an OS TUN device with the addresses, routes and rules oevpn
// set up for it. Close removes all of them.
type OSDevice struct {
	tun.Device
	cfg  OSConfig
	log  *slog.Logger
	undo []func() error

	claims     []int             // abstract sockets that hold our table and rule priorities
	blocks     map[blockKey]bool // prohibit routes installed
	keepBlocks bool              // Close leaves them (a failed start after a crash)

	mu       sync.Mutex
	bypasses map[netip.Addr]bool
	refused  atomic.Uint64 // bypass routes not added: the table was full
}

// AddBypass sends traffic to dst around the device (a throw route in our
// table, through netlink): a destination the negative cache sends in the
// clear no longer passes through oevpn at all. At most MaxBypass routes
// exist at once; beyond, AddBypass returns ErrBypassFull and counts it, and
// the clear path keeps carrying dst's packets.
func (d *OSDevice) AddBypass(dst netip.Addr) error {
	if d.cfg.Mark == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bypasses[dst] {
		return nil
	}
	if len(d.bypasses) >= d.cfg.maxBypass() {
		d.refused.Add(1)
		return ErrBypassFull
	}
	if err := addThrow(uint32(d.cfg.Table), dst); err != nil {
		return err
	}
	if d.bypasses == nil {
		d.bypasses = map[netip.Addr]bool{}
	}
	d.bypasses[dst] = true
	return nil
}

// RemoveBypass undoes AddBypass.
func (d *OSDevice) RemoveBypass(dst netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.bypasses[dst] {
		return nil
	}
	delete(d.bypasses, dst)
	return delThrow(uint32(d.cfg.Table), dst)
}

// BypassStats returns the number of bypass routes installed and the number
// AddBypass refused because MaxBypass were.
func (d *OSDevice) BypassStats() (installed int, refused uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.bypasses), d.refused.Load()
}

// RoutesInto reports whether the kernel sends a packet to dst (one without
// oevpn's mark) into the device: nil if it does, else why not. It asks the
// kernel itself, rules and all, so a rule or route removed behind oevpn's
// back shows.
func (d *OSDevice) RoutesInto(dst netip.Addr) error {
	ifc, err := net.InterfaceByName(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("device %s is gone: %w", d.cfg.Name, err)
	}
	oif, err := routeOIF(dst.Unmap(), d.protectedSource(dst.Unmap()))
	if err != nil {
		return fmt.Errorf("no route to %v: %w", dst, err)
	}
	if oif != ifc.Index {
		name := strconv.Itoa(oif)
		if o, err := net.InterfaceByIndex(oif); err == nil {
			name = o.Name
		}
		return fmt.Errorf("the kernel routes %v by %s, not into %s", dst, name, d.cfg.Name)
	}
	return nil
}

// protectedSource returns the address traffic to dst leaves from when the
// kernel routes it into the device by its source: in AutoVPN host mode,
// the host's protected address of dst's family; invalid otherwise.
func (d *OSDevice) protectedSource(dst netip.Addr) netip.Addr {
	if !d.cfg.ProtectedHost {
		return netip.Addr{}
	}
	for _, p := range d.cfg.Protected {
		if p.Addr().Is4() == dst.Is4() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// CreateOSTUN creates the TUN device (with TSO/GRO offloads where the kernel
// has them), brings it up and installs its addresses, routes and rules.
//
// With a mark, every route into the device has a prohibit route behind it
// (same table, higher metric), and so does the default route of the
// protected hosts' table: when the process dies without Close (kill -9, a
// crash, the OOM killer), the kernel removes the device and its routes, and
// what oevpn would have encrypted, dropped or re-sent by policy is refused
// instead of leaving in the clear by the main table. Close removes them;
// RemoveRouting does it for a run that will not be restarted.
//
// Rules and routes left by a run that died are replaced once the device is
// ours: a device that another process holds is refused before anything of
// that process's routing is touched (oevpn up also holds a lock per control
// socket before it gets here). Its prohibit routes and rules stay until
// ours are in place, so that nothing leaks while we start either.
func CreateOSTUN(cfg OSConfig) (*OSDevice, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &OSDevice{cfg: cfg, log: cfg.Logger}
	if cfg.Mark != 0 {
		if err := d.claimRouting(); err != nil {
			return nil, err
		}
	}
	dev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("tunnel: creating TUN device %q: %w (is it in use by another process, is /dev/net/tun there, and do we have CAP_NET_ADMIN?)", cfg.Name, err)
	}
	d.Device = dev
	if name, err := dev.Name(); err == nil {
		d.cfg.Name = name
	}
	var stale [2]map[uint32]int
	if cfg.Mark != 0 {
		// A dead run's bypass (throw) routes go now; its prohibit
		// routes and rules once ours stand.
		for _, t := range d.tables() {
			if err := flushTable(t, route.isBlock); err != nil {
				d.log.Warn("removing stale routes", "table", t, "err", err)
			}
		}
		if stale, err = ruleCounts(); err != nil {
			d.Close()
			return nil, fmt.Errorf("tunnel: listing routing rules: %w", err)
		}
	}
	if err := d.configure(); err != nil {
		// After a crash, a start that fails leaves the dead run's
		// rules and the prohibit routes as they were: still blocked.
		d.keepBlocks = d.hasStale(stale)
		d.Close()
		return nil, err
	}
	if cfg.Mark != 0 {
		d.removeStale(stale)
	}
	return d, nil
}

// tables returns our routing tables: the routes into the device, and the
// protected hosts' table.
func (d *OSDevice) tables() []uint32 {
	return []uint32{uint32(d.cfg.Table), uint32(d.cfg.Table + 1)}
}

// claimRouting claims our routing tables and rule priorities in this
// network namespace before anything is touched, so that the stale rules
// removed next are a dead run's, never another running oevpn's (another
// device with the same table, or one whose priorities overlap ours). The
// claims are abstract unix sockets: they belong to the namespace and go
// away with the process, however it ends.
func (d *OSDevice) claimRouting() error {
	names := []string{fmt.Sprintf("table-%d", d.cfg.Table), fmt.Sprintf("table-%d", d.cfg.Table+1)}
	for p := d.rulePriority() - 8; p <= d.rulePriority(); p++ {
		names = append(names, fmt.Sprintf("rule-%d", p))
	}
	for _, n := range names {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("tunnel: claiming the routing table: %w", err)
		}
		d.claims = append(d.claims, fd)
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@oevpn-" + n}); err != nil {
			d.Close()
			if errors.Is(err, unix.EADDRINUSE) {
				return fmt.Errorf("tunnel: routing table %d (or a rule priority next to %d) is in use by another oevpn in this network namespace: give each its own interface.table, at least 10 apart", d.cfg.Table, d.rulePriority())
			}
			return fmt.Errorf("tunnel: claiming the routing table: %w", err)
		}
	}
	return nil
}

func (d *OSDevice) configure() error {
	ifc, err := net.InterfaceByName(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("tunnel: %w", err)
	}
	for _, a := range d.cfg.Addresses {
		if err := addAddress(ifc.Index, a); err != nil {
			return err
		}
	}
	if err := linkUp(ifc.Index); err != nil {
		return err
	}
	if d.Device.BatchSize() > 1 {
		// Offloads are on: super-packets that leave as one datagram.
		// An older kernel that cannot change it only costs throughput.
		if err := setSuperPacketSize(ifc.Index, superPacketSize(d.cfg.MTU)); err != nil {
			d.log.Info("kept the device's super-packet size", "err", err)
		}
	}
	table := uint32(unix.RT_TABLE_MAIN)
	if d.cfg.Mark != 0 {
		table = uint32(d.cfg.Table)
	}
	fams := map[bool]bool{}
	for _, r := range d.cfg.Routes {
		fams[r.Prefix.Addr().Is6()] = true
		if err := d.addBlock(table, r.Prefix); err != nil {
			return err
		}
		if err := replaceDevRoute(ifc.Index, table, r.Prefix, r.Src); err != nil {
			return err
		}
	}
	if d.cfg.Mark == 0 {
		return nil
	}
	// Like wg-quick: packets without our mark look up our table first;
	// oevpn's own sockets carry the mark and use the main table.
	for _, v6 := range []bool{false, true} {
		if fams[v6] {
			if err := d.addRule(rule{v6: v6, priority: uint32(d.rulePriority()), table: table, invert: true, fwmark: d.cfg.Mark}); err != nil {
				return err
			}
		}
	}
	if err := d.configureProtected(ifc.Index); err != nil {
		return err
	}
	if fams[false] || len(d.cfg.Protected) > 0 {
		// Reverse-path filtering must see the mark of our own packets.
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/src_valid_mark", []byte("1"), 0); err != nil {
			d.log.Warn("could not set net.ipv4.conf.all.src_valid_mark=1", "err", err)
		}
	}
	return nil
}

// addRule adds r, and its removal to what Close undoes.
func (d *OSDevice) addRule(r rule) error {
	if err := addRule(r); err != nil {
		return err
	}
	d.log.Debug("added routing rule", "priority", r.priority, "table", r.table, "ipv6", r.v6)
	d.undo = append(d.undo, func() error { return delRule(r) })
	return nil
}

// addBlock adds a prohibit route for p behind the device's (no-op without
// a mark: the routes are in the main table); Close removes it.
func (d *OSDevice) addBlock(table uint32, p netip.Prefix) error {
	if d.cfg.Mark == 0 {
		return nil
	}
	p = p.Masked()
	if err := addBlock(table, p); err != nil {
		return err
	}
	if d.blocks == nil {
		d.blocks = map[blockKey]bool{}
	}
	d.blocks[blockKey{table, p}] = true
	return nil
}

// blockKey names one prohibit route.
type blockKey struct {
	table  uint32
	prefix netip.Prefix
}

// configureProtected routes the traffic of protected hosts into the
// device (AutoVPN gateway mode): rules, in order, send marked packets
// (oevpn's own) and packets that come out of the TUN to the main table,
// and the rest from or to a protected prefix to table Table+1, whose
// default route is the device.
func (d *OSDevice) configureProtected(ifindex int) error {
	if len(d.cfg.Protected) == 0 {
		return nil
	}
	if d.cfg.Mark == 0 {
		return errors.New("tunnel: protected prefixes need a fwmark")
	}
	table := uint32(d.cfg.Table + 1)
	base := uint32(d.rulePriority() - 8)
	fams := map[bool]bool{}
	for _, p := range d.cfg.Protected {
		fams[p.Addr().Is6()] = true
	}
	for v6 := range fams {
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if v6 {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if err := d.addBlock(table, def); err != nil {
			return err
		}
		if err := replaceDevRoute(ifindex, table, def, netip.Addr{}); err != nil {
			return err
		}
		main := uint32(unix.RT_TABLE_MAIN)
		rules := []rule{{fwmark: d.cfg.Mark, table: main}, {iif: d.cfg.Name, table: main}}
		if !d.cfg.ProtectedHost {
			// The gateway's own packets (e.g. ICMP "fragmentation
			// needed" to its hosts) do not go through AutoVPN.
			rules = append(rules, rule{iif: "lo", table: main})
		}
		for _, p := range d.cfg.Protected {
			if p.Addr().Is6() == v6 {
				rules = append(rules, rule{from: p, table: table}, rule{to: p, table: table})
			}
		}
		for i, r := range rules {
			r.v6, r.priority = v6, base+uint32(min(i, 7))
			if err := d.addRule(r); err != nil {
				return err
			}
		}
	}
	// Decrypted packets come out of the TUN with the peer host's source,
	// which the strict reverse-path filter would drop.
	os.WriteFile("/proc/sys/net/ipv4/conf/"+d.cfg.Name+"/rp_filter", []byte("2"), 0)
	return nil
}

// rulePriority is the priority of our policy-routing rules: fixed per table
// so that a later run finds and removes rules a crashed run left.
func (d *OSDevice) rulePriority() int { return 20000 + d.cfg.Table%10000 }

// removeStale removes what a run that was killed left in our priorities and
// tables, now that ours are in place: the rules there were before ours
// (stale counts them; delRule removes the oldest of a priority first), and
// prohibit routes for prefixes we no longer route. claimRouting made sure
// no running oevpn owns them.
func (d *OSDevice) removeStale(stale [2]map[uint32]int) {
	for p := d.rulePriority() - 8; p <= d.rulePriority(); p++ {
		for i, v6 := range []bool{false, true} {
			for n := stale[i][uint32(p)]; n > 0; n-- {
				if err := delRule(rule{v6: v6, priority: uint32(p)}); err != nil {
					d.log.Warn("removing a stale routing rule", "ipv6", v6, "priority", p, "err", err)
					break
				}
				d.log.Info("removed a stale routing rule", "ipv6", v6, "priority", p)
			}
		}
	}
	for _, t := range d.tables() {
		keep := func(r route) bool { return !r.isBlock() || d.blocks[blockKey{t, r.prefix}] }
		if err := flushTable(t, keep); err != nil {
			d.log.Warn("removing stale routes", "table", t, "err", err)
		}
	}
}

// hasStale reports whether stale counts rules in our priorities.
func (d *OSDevice) hasStale(stale [2]map[uint32]int) bool {
	for p := d.rulePriority() - 8; p <= d.rulePriority(); p++ {
		if stale[0][uint32(p)]+stale[1][uint32(p)] > 0 {
			return true
		}
	}
	return false
}

// RemoveRouting removes the rules and routes, prohibit routes included,
// that an oevpn with cfg left behind when it was killed, for a host where
// it will not run again (oevpn cleanup). It refuses while an oevpn with
// the same table or rule priorities runs in this network namespace. It
// returns the number of rules and routes removed.
func RemoveRouting(cfg OSConfig) (int, error) {
	if cfg.Mark == 0 {
		return 0, nil // everything was in the main table, with the device
	}
	d := &OSDevice{cfg: cfg}
	if err := d.claimRouting(); err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for p := d.rulePriority() - 8; p <= d.rulePriority(); p++ {
		for _, v6 := range []bool{false, true} {
			for i := 0; i < 64 && delRule(rule{v6: v6, priority: uint32(p)}) == nil; i++ {
				n++
			}
		}
	}
	var errs []error
	for _, t := range d.tables() {
		rs, err := routes(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rs {
			if err := delRoute(t, r); err != nil {
				errs = append(errs, err)
			} else {
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

// Close removes the rules and prohibit routes and closes the device, which
// takes its addresses and routes with it.
func (d *OSDevice) Close() error {
	var errs []error
	d.mu.Lock()
	for dst := range d.bypasses {
		delThrow(uint32(d.cfg.Table), dst)
	}
	d.bypasses = nil
	d.mu.Unlock()
	for i := len(d.undo) - 1; i >= 0; i-- {
		errs = append(errs, d.undo[i]())
	}
	d.undo = nil
	// After the rules: while one sends traffic to our table, the
	// prohibit routes hold what the device's routes no longer take.
	for k := range d.blocks {
		if !d.keepBlocks {
			errs = append(errs, delBlock(k.table, k.prefix))
		}
	}
	d.blocks = nil
	if d.Device != nil {
		errs = append(errs, d.Device.Close())
	}
	for _, fd := range d.claims {
		unix.Close(fd)
	}
	d.claims = nil
	return errors.Join(errs...)
}
