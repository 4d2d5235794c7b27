package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/internal/lab"
)

// TestLabBypassNetlink adds bypass (throw) routes for many destinations,
// as remote peers choose them, inside a namespace: they go in through
// netlink, with no ip(8) process (PATH is empty meanwhile), at most
// MaxBypass of them, the rest refused and counted; RemoveBypass and Close
// take them out again.
func TestLabBypassNetlink(t *testing.T) {
	lab.Require(t)
	ns := lab.NewNetns(t)
	const table, max = 4711, 64
	d := &OSDevice{cfg: OSConfig{Mark: 0x4f45, Table: table, MaxBypass: max}, log: slog.New(slog.DiscardHandler)}
	var dsts []netip.Addr
	for i := 0; i < 300; i++ {
		dsts = append(dsts, netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))
	}
	dsts = append(dsts[:max-1], append([]netip.Addr{netip.MustParseAddr("2001:db8::7")}, dsts[max-1:]...)...)
	path := os.Getenv("PATH")
	os.Setenv("PATH", "") // no ip(8): it must all go through netlink
	var full int
	err := ns.Do(func() error {
		for _, a := range dsts {
			switch err := d.AddBypass(a); {
			case errors.Is(err, ErrBypassFull):
				full++
			case err != nil:
				return err
			}
		}
		return d.RemoveBypass(dsts[0])
	})
	os.Setenv("PATH", path)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(dsts) - max; full != want {
		t.Errorf("%d destinations refused, want %d", full, want)
	}
	if n, refused := d.BypassStats(); n != max-1 || refused != uint64(len(dsts)-max) {
		t.Errorf("BypassStats = %d, %d; want %d, %d", n, refused, max-1, len(dsts)-max)
	}
	routes := ns.Run("ip", "-4", "route", "show", "table", strconv.Itoa(table)) + ns.Run("ip", "-6", "route", "show", "table", strconv.Itoa(table))
	if n := strings.Count(routes, "throw "); n != max-1 {
		t.Errorf("%d throw routes in table %d, want %d:\n%s", n, table, max-1, routes)
	}
	for i, a := range dsts[:max] {
		has := strings.Contains(routes, "throw "+a.String()+" ")
		if has != (i > 0) {
			t.Errorf("throw route for %v present: %v (added %v)", a, has, i > 0)
		}
	}
	if strings.Contains(routes, "throw "+dsts[max].String()+" ") {
		t.Errorf("a destination beyond the bound got a route")
	}
	if err := ns.Do(func() error { d.Close(); return nil }); err != nil {
		t.Fatal(err)
	}
	if routes := ns.Run("ip", "-4", "route", "show", "table", fmt.Sprint(table)) + ns.Run("ip", "-6", "route", "show", "table", fmt.Sprint(table)); strings.TrimSpace(routes) != "" {
		t.Errorf("routes left after Close:\n%s", routes)
	}
}

// TestLabSuperPacketSize: a TUN device with offloads takes super-packets
// of superPacketSize from the kernel (gso_max_size), not the default
// 64 KiB whose segments overflow one UDP GSO datagram.
func TestLabSuperPacketSize(t *testing.T) {
	lab.Require(t)
	ns := lab.NewNetns(t)
	const name, mtu = "oesp0", 1400
	var d *OSDevice
	if err := ns.Do(func() (err error) {
		d, err = CreateOSTUN(OSConfig{Name: name, MTU: mtu})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ns.Do(func() error { return d.Close() })
	if d.BatchSize() <= 1 {
		t.Fatal("the TUN device has no offloads: nothing to measure (kernel without IFF_VNET_HDR offloads?)")
	}
	out := ns.Run("ip", "-d", "link", "show", name)
	if want := fmt.Sprintf(" gso_max_size %d ", superPacketSize(mtu)); !strings.Contains(out, want) {
		t.Errorf("device has not%s:\n%s", want, out)
	}
}
