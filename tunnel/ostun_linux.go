package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
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

	claims []int // abstract sockets that hold our table and rule priorities

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
	oif, err := routeOIF(dst.Unmap())
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

// CreateOSTUN creates the TUN device (with TSO/GRO offloads where the kernel
// has them), brings it up and installs its addresses, routes and rules.
// Rules left by a run that crashed are removed first, once the device is
// ours: a device that another process holds is refused before anything of
// that process's routing is touched. (oevpn up also holds a lock per
// control socket before it gets here.)
func CreateOSTUN(cfg OSConfig) (*OSDevice, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("tunnel: the ip command (iproute2) is needed to configure the TUN device")
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
	if cfg.Mark != 0 {
		d.removeStaleRules()
	}
	if err := d.configure(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
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

func (d *OSDevice) ip(args ...string) error {
	cmd := exec.Command("ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	d.log.Debug("running", "cmd", "ip "+strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tunnel: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func family(v6 bool) string {
	if v6 {
		return "-6"
	}
	return "-4"
}

func (d *OSDevice) configure() error {
	name := d.cfg.Name
	for _, a := range d.cfg.Addresses {
		if err := d.ip(family(a.Addr().Is6()), "address", "add", a.String(), "dev", name); err != nil {
			return err
		}
	}
	if err := d.ip("link", "set", "dev", name, "up"); err != nil {
		return err
	}
	table := "main"
	if d.cfg.Mark != 0 {
		table = strconv.Itoa(d.cfg.Table)
	}
	fams := map[bool]bool{}
	for _, r := range d.cfg.Routes {
		v6 := r.Prefix.Addr().Is6()
		fams[v6] = true
		args := []string{family(v6), "route", "replace", r.Prefix.String(), "dev", name, "table", table}
		if r.Src.IsValid() {
			args = append(args, "src", r.Src.String())
		}
		if err := d.ip(args...); err != nil {
			return err
		}
	}
	if d.cfg.Mark == 0 {
		return nil
	}
	// Like wg-quick: packets without our mark look up our table first;
	// oevpn's own sockets carry the mark and use the main table.
	mark := fmt.Sprintf("%#x", d.cfg.Mark)
	prio := strconv.Itoa(d.rulePriority())
	for _, v6 := range []bool{false, true} {
		if !fams[v6] {
			continue
		}
		f := family(v6)
		if err := d.ip(f, "rule", "add", "not", "fwmark", mark, "table", table, "priority", prio); err != nil {
			return err
		}
		d.undo = append(d.undo, func() error { return d.ip(f, "rule", "del", "priority", prio) })
	}
	if err := d.configureProtected(); err != nil {
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

// configureProtected routes the traffic of protected hosts into the
// device (AutoVPN gateway mode): rules, in order, send marked packets
// (oevpn's own) and packets that come out of the TUN to the main table,
// and the rest from or to a protected prefix to table Table+1, whose
// default route is the device.
func (d *OSDevice) configureProtected() error {
	if len(d.cfg.Protected) == 0 {
		return nil
	}
	if d.cfg.Mark == 0 {
		return errors.New("tunnel: protected prefixes need a fwmark")
	}
	name, mark := d.cfg.Name, fmt.Sprintf("%#x", d.cfg.Mark)
	table := strconv.Itoa(d.cfg.Table + 1)
	base := d.rulePriority() - 8
	fams := map[bool]bool{}
	for _, p := range d.cfg.Protected {
		fams[p.Addr().Is6()] = true
	}
	for v6 := range fams {
		f := family(v6)
		def := "0.0.0.0/0"
		if v6 {
			def = "::/0"
		}
		if err := d.ip(f, "route", "replace", def, "dev", name, "table", table); err != nil {
			return err
		}
		rules := [][]string{{"fwmark", mark, "lookup", "main"}, {"iif", name, "lookup", "main"}}
		if !d.cfg.ProtectedHost {
			// The gateway's own packets (e.g. ICMP "fragmentation
			// needed" to its hosts) do not go through AutoVPN.
			rules = append(rules, []string{"iif", "lo", "lookup", "main"})
		}
		for _, p := range d.cfg.Protected {
			if p.Addr().Is6() == v6 {
				rules = append(rules, []string{"from", p.Masked().String(), "lookup", table}, []string{"to", p.Masked().String(), "lookup", table})
			}
		}
		for i, r := range rules {
			prio := strconv.Itoa(base + min(i, 7))
			if err := d.ip(append(append([]string{f, "rule", "add"}, r...), "priority", prio)...); err != nil {
				return err
			}
			d.undo = append(d.undo, func() error { return d.ip(f, "rule", "del", "priority", prio) })
		}
	}
	// Decrypted packets come out of the TUN with the peer host's source,
	// which the strict reverse-path filter would drop.
	os.WriteFile("/proc/sys/net/ipv4/conf/"+name+"/rp_filter", []byte("2"), 0)
	return nil
}

// rulePriority is the priority of our policy-routing rules: fixed per table
// so that a later run finds and removes rules a crashed run left.
func (d *OSDevice) rulePriority() int { return 20000 + d.cfg.Table%10000 }

func (d *OSDevice) removeStaleRules() {
	for p := d.rulePriority() - 8; p <= d.rulePriority(); p++ {
		prio := strconv.Itoa(p)
		for _, f := range []string{"-4", "-6"} {
			for i := 0; i < 16 && d.ip(f, "rule", "del", "priority", prio) == nil; i++ {
				d.log.Info("removed a stale routing rule", "family", f, "priority", prio)
			}
		}
	}
	for _, t := range []int{d.cfg.Table, d.cfg.Table + 1} {
		d.ip("-4", "route", "flush", "table", strconv.Itoa(t))
		d.ip("-6", "route", "flush", "table", strconv.Itoa(t))
	}
}

// Close removes the rules and closes the device, which takes its addresses
// and routes with it.
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
	if d.Device != nil {
		errs = append(errs, d.Device.Close())
	}
	for _, fd := range d.claims {
		unix.Close(fd)
	}
	d.claims = nil
	return errors.Join(errs...)
}
