package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fakeHostNet is an OS routing table for hostRouting's tests: routes by
// prefix to an interface name ("dev" is the device), addresses, and every
// call made, in order. Like Windows, an address brings its prefix's route
// into the device, and takes it when removed.
type fakeHostNet struct {
	routes map[netip.Prefix]string
	addrs  map[netip.Prefix]bool
	calls  []string
	failOn string // a call that fails
	// prefer is a route by another interface for the same prefix as
	// one of ours that the OS prefers (Windows, by metric).
	prefer map[netip.Prefix]string
	gone   bool // the device is gone: nothing of it is found
}

func newFakeHostNet() *fakeHostNet {
	return &fakeHostNet{
		routes: map[netip.Prefix]string{
			netip.MustParsePrefix("0.0.0.0/0"):       "en0",
			netip.MustParsePrefix("::/0"):            "en0",
			netip.MustParsePrefix("192.168.1.0/24"):  "en0",
			netip.MustParsePrefix("203.0.113.0/24"):  "en1",
			netip.MustParsePrefix("198.51.100.0/24"): "reject",
		},
		addrs: map[netip.Prefix]bool{},
	}
}

var errFake = errors.New("fake OS error")

func (f *fakeHostNet) call(format string, args ...any) error {
	c := fmt.Sprintf(format, args...)
	f.calls = append(f.calls, c)
	if c == f.failOn {
		return errFake
	}
	return nil
}

func (f *fakeHostNet) addAddress(p netip.Prefix) error {
	if err := f.call("addAddress %v", p); err != nil {
		return err
	}
	f.addrs[p] = true
	if m := p.Masked(); !p.IsSingleIP() && f.routes[m] == "" {
		f.routes[m] = "dev"
	}
	return nil
}

func (f *fakeHostNet) up() error { return f.call("up") }

func (f *fakeHostNet) delAddress(p netip.Prefix) error {
	if err := f.call("delAddress %v", p); err != nil {
		return err
	}
	if f.gone || !f.addrs[p] {
		return errNotFound
	}
	delete(f.addrs, p)
	if f.routes[p.Masked()] == "dev" {
		delete(f.routes, p.Masked())
	}
	return nil
}

func (f *fakeHostNet) addRoute(p netip.Prefix, src netip.Addr) error {
	if err := f.call("addRoute %v %v", p, src); err != nil {
		return err
	}
	if f.routes[p] != "" {
		return fmt.Errorf("File exists: %w", errExists)
	}
	f.routes[p] = "dev"
	return nil
}

func (f *fakeHostNet) delRoute(p netip.Prefix) error {
	if err := f.call("delRoute %v", p); err != nil {
		return err
	}
	if f.gone || f.routes[p] != "dev" {
		return errNotFound
	}
	delete(f.routes, p)
	return nil
}

func (f *fakeHostNet) lookup(dst netip.Addr) (bool, string, error) {
	if err := f.call("lookup %v", dst); err != nil {
		return false, "", err
	}
	best, via := -1, ""
	for p, ifc := range f.routes {
		if p.Contains(dst) && p.Bits() > best {
			best, via = p.Bits(), ifc
			if f.prefer[p] != "" {
				via = f.prefer[p]
			}
		}
	}
	switch via {
	case "":
		return false, "", errors.New("no route to host")
	case "dev":
		return true, "", nil
	case "reject":
		return false, "a reject route", nil
	}
	return false, via, nil
}

// snapshot returns the fake's routes and addresses.
func (f *fakeHostNet) snapshot() (map[netip.Prefix]string, map[netip.Prefix]bool) {
	return maps.Clone(f.routes), maps.Clone(f.addrs)
}

func bufLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

// hostTestConfig is a host-mode configuration: a default route (split),
// a prefix whose source is another interface's address, a duplicate, and
// addresses whose prefixes are routed too.
func hostTestConfig() OSConfig {
	pp := netip.MustParsePrefix
	pa := netip.MustParseAddr
	return OSConfig{
		Name:      "utun7",
		Addresses: []netip.Prefix{pp("10.9.0.1/24"), pp("fd00::1/64"), pp("10.10.0.1/32")},
		Routes: []Route{
			{Prefix: pp("0.0.0.0/0"), Src: pa("10.9.0.1")},
			{Prefix: pp("192.0.2.9/24"), Src: pa("192.168.1.20")},
			{Prefix: pp("192.0.2.0/24")},
			{Prefix: pp("192.0.3.0/24"), Src: pa("192.168.1.20")},
			{Prefix: pp("2001:db8::/32"), Src: pa("fd00::1")},
		},
	}
}

func TestHostRoutingConfigureAndRemove(t *testing.T) {
	f := newFakeHostNet()
	routes0, addrs0 := f.snapshot()
	log, buf := bufLogger()
	h := hostRouting{net: f, name: "utun7", log: log}
	if err := h.configure(hostTestConfig()); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"addAddress 10.9.0.1/24",
		"addAddress fd00::1/64",
		"addAddress 10.10.0.1/32",
		"up",
		// Halves of the default route: the host's own stays.
		// Each route is checked by a lookup of its upper half's first
		// address.
		"addRoute 0.0.0.0/1 10.9.0.1", "lookup 64.0.0.0",
		"addRoute 128.0.0.0/1 10.9.0.1", "lookup 192.0.0.0",
		// 192.168.1.20 is en0's: the OS picks the source.
		"addRoute 192.0.2.0/24 invalid IP", "lookup 192.0.2.128",
		"addRoute 192.0.3.0/24 invalid IP", "lookup 192.0.3.128",
		"addRoute 2001:db8::/32 fd00::1", "lookup 2001:db8:8000::",
		// The OS routed these with the addresses: accepted as they are.
		"addRoute 10.9.0.0/24 10.9.0.1", "lookup 10.9.0.128",
		"addRoute fd00::/64 fd00::1", "lookup fd00::8000:0:0:0",
	}
	if !slices.Equal(f.calls, want) {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
	}
	if strings.Count(buf.String(), "source=192.168.1.20") != 1 {
		t.Errorf("not one warning that the source is not honoured: %s", buf)
	}
	for _, dst := range []string{"8.8.8.8", "::ffff:8.8.8.8", "192.0.2.77", "2001:db8::1", "10.9.0.200", "200.1.2.3"} {
		if err := h.routesInto(netip.MustParseAddr(dst)); err != nil {
			t.Errorf("routesInto(%s): %v", dst, err)
		}
	}
	f.calls = nil
	if err := h.remove(); err != nil {
		t.Fatal(err)
	}
	if err := h.routesInto(netip.MustParseAddr("8.8.8.8")); err == nil || !strings.Contains(err.Error(), "by en0") {
		t.Errorf("routesInto after remove: %v", err)
	}
	f.calls = slices.DeleteFunc(f.calls, func(c string) bool { return strings.HasPrefix(c, "lookup") })
	wantDel := []string{
		"delRoute 2001:db8::/32",
		"delRoute 192.0.3.0/24",
		"delRoute 192.0.2.0/24",
		"delRoute 128.0.0.0/1",
		"delRoute 0.0.0.0/1",
		"delAddress 10.10.0.1/32",
		"delAddress fd00::1/64",
		"delAddress 10.9.0.1/24",
	}
	if !slices.Equal(f.calls, wantDel) {
		t.Fatalf("remove calls:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(wantDel, "\n"))
	}
	routes, addrs := f.snapshot()
	if !maps.Equal(routes, routes0) || !maps.Equal(addrs, addrs0) {
		t.Errorf("after remove: routes %v addrs %v, want %v %v", routes, addrs, routes0, addrs0)
	}
	if err := h.remove(); err != nil || len(f.calls) != len(wantDel) {
		t.Errorf("second remove: %v, calls %v", err, f.calls)
	}
}

// TestHostRoutingRollback fails each OS call of configure in turn: the
// error names what failed and nothing that was added stays.
func TestHostRoutingRollback(t *testing.T) {
	f := newFakeHostNet()
	h := hostRouting{net: f, name: "utun7", log: slog.New(slog.DiscardHandler)}
	if err := h.configure(hostTestConfig()); err != nil {
		t.Fatal(err)
	}
	steps := slices.Clone(f.calls)
	h.remove()
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			f := newFakeHostNet()
			routes0, addrs0 := f.snapshot()
			f.failOn = step
			h := hostRouting{net: f, name: "utun7", log: slog.New(slog.DiscardHandler)}
			err := h.configure(hostTestConfig())
			if !errors.Is(err, errFake) {
				t.Fatalf("configure: %v, want the OS error", err)
			}
			if what := strings.Fields(step + " up")[1]; !strings.Contains(err.Error(), what) {
				t.Errorf("error %q does not name %s", err, what)
			}
			routes, addrs := f.snapshot()
			if !maps.Equal(routes, routes0) || !maps.Equal(addrs, addrs0) {
				t.Errorf("left behind: routes %v addrs %v", routes, addrs)
			}
			if len(h.undo) != 0 {
				t.Errorf("%d undo steps left", len(h.undo))
			}
		})
	}
}

// TestHostRoutingRefusesForeignRoute: a prefix policy says must go
// through oevpn (a peer's, or private) is already routed by another
// interface. Accepting the existing route would send that traffic out in
// the clear; replacing it would take over a route oevpn did not make.
// configure fails, says by which interface, and leaves nothing.
func TestHostRoutingRefusesForeignRoute(t *testing.T) {
	for _, tc := range []struct{ prefix, via string }{
		{"192.168.1.0/24", "by en0"},
		{"198.51.100.0/24", "by a reject route"},
	} {
		f := newFakeHostNet()
		routes0, addrs0 := f.snapshot()
		cfg := hostTestConfig()
		cfg.Routes = append(cfg.Routes, Route{Prefix: netip.MustParsePrefix(tc.prefix)})
		h := hostRouting{net: f, name: "utun7", log: slog.New(slog.DiscardHandler)}
		err := h.configure(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.prefix+" exists already, "+tc.via) {
			t.Fatalf("configure with %s routed elsewhere: %v", tc.prefix, err)
		}
		routes, addrs := f.snapshot()
		if !maps.Equal(routes, routes0) || !maps.Equal(addrs, addrs0) {
			t.Errorf("left behind: routes %v addrs %v", routes, addrs)
		}
	}
}

// TestHostRoutingRefusesPreferredForeignRoute: Windows keeps a route per
// interface for the same prefix and prefers the lower metric. When the
// host's LAN route for a private prefix outranks ours, adding ours
// succeeds but the traffic would still leave in the clear: configure
// notices, fails, and leaves nothing.
func TestHostRoutingRefusesPreferredForeignRoute(t *testing.T) {
	f := newFakeHostNet()
	routes0, addrs0 := f.snapshot()
	lan := netip.MustParsePrefix("10.50.0.0/16")
	f.prefer = map[netip.Prefix]string{lan: "Ethernet"}
	cfg := hostTestConfig()
	cfg.Routes = append(cfg.Routes, Route{Prefix: lan})
	h := hostRouting{net: f, name: "oevpn0", log: slog.New(slog.DiscardHandler)}
	err := h.configure(cfg)
	if err == nil || !strings.Contains(err.Error(), "with 10.50.0.0/16 routed into oevpn0 the OS still sends 10.50.128.0 by Ethernet") {
		t.Fatalf("configure with a preferred LAN route: %v", err)
	}
	routes, addrs := f.snapshot()
	if !maps.Equal(routes, routes0) || !maps.Equal(addrs, addrs0) {
		t.Errorf("left behind: routes %v addrs %v", routes, addrs)
	}
}

func TestProbeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0/1":     "64.0.0.0",
		"128.0.0.0/1":   "192.0.0.0",
		"10.1.0.0/16":   "10.1.128.0",
		"10.1.2.0/31":   "10.1.2.1",
		"10.1.2.3/32":   "10.1.2.3",
		"::/1":          "4000::",
		"2001:db8::/32": "2001:db8:8000::",
		"fd00::1/128":   "fd00::1",
	} {
		if got := probeAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("probeAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestHostRoutingRoutesInto(t *testing.T) {
	f := newFakeHostNet()
	h := hostRouting{net: f, name: "utun7", log: slog.New(slog.DiscardHandler)}
	cfg := OSConfig{Routes: []Route{{Prefix: netip.MustParsePrefix("10.1.0.0/16")}}}
	if err := h.configure(cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dst, want string }{
		{"10.1.2.3", ""},
		{"::ffff:10.1.2.3", ""},
		{"10.2.0.1", "the OS routes 10.2.0.1 by en0, not into utun7"},
		{"203.0.113.5", "the OS routes 203.0.113.5 by en1, not into utun7"},
		{"198.51.100.1", "the OS routes 198.51.100.1 by a reject route, not into utun7"},
	} {
		err := h.routesInto(netip.MustParseAddr(tc.dst))
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
			t.Errorf("routesInto(%s) = %v, want %q", tc.dst, err, tc.want)
		}
	}
	// A route removed behind oevpn's back shows.
	delete(f.routes, netip.MustParsePrefix("10.1.0.0/16"))
	if err := h.routesInto(netip.MustParseAddr("10.1.2.3")); err == nil || !strings.Contains(err.Error(), "by en0") {
		t.Errorf("after the route was removed: %v", err)
	}
	delete(f.routes, netip.MustParsePrefix("0.0.0.0/0"))
	if err := h.routesInto(netip.MustParseAddr("10.1.2.3")); err == nil || !strings.Contains(err.Error(), "no route to 10.1.2.3") {
		t.Errorf("with no route: %v", err)
	}
}

// TestHostRoutingDeviceGone: when the device (and with it its addresses
// and routes) is gone, removal is not an error; other failures are.
func TestHostRoutingDeviceGone(t *testing.T) {
	f := newFakeHostNet()
	h := hostRouting{net: f, name: "utun7", log: slog.New(slog.DiscardHandler)}
	if err := h.configure(hostTestConfig()); err != nil {
		t.Fatal(err)
	}
	f.gone = true
	if err := h.remove(); err != nil {
		t.Errorf("remove after the device went: %v", err)
	}

	f = newFakeHostNet()
	h = hostRouting{net: f, name: "utun7", log: slog.New(slog.DiscardHandler)}
	if err := h.configure(hostTestConfig()); err != nil {
		t.Fatal(err)
	}
	f.failOn = "delRoute 192.0.2.0/24"
	if err := h.remove(); !errors.Is(err, errFake) {
		t.Errorf("remove with a failing call: %v", err)
	}
	if len(f.addrs) != 0 {
		t.Errorf("a failed removal stopped the others: %v left", f.addrs)
	}
}

func TestHostRoutingRefusesProtected(t *testing.T) {
	f := newFakeHostNet()
	h := hostRouting{net: f, name: "utun7", log: slog.New(slog.DiscardHandler)}
	cfg := hostTestConfig()
	cfg.Protected = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}
	if err := h.configure(cfg); !errors.Is(err, errNoPolicyRouting) || len(f.calls) != 0 {
		t.Errorf("configure with protected prefixes: %v, calls %v", err, f.calls)
	}
}

func TestSplitDefault(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0/0":    "[0.0.0.0/1 128.0.0.0/1]",
		"::/0":         "[::/1 8000::/1]",
		"10.0.0.0/8":   "[10.0.0.0/8]",
		"2001:db8::/1": "[2001:db8::/1]",
	} {
		if got := fmt.Sprint(splitDefault(netip.MustParsePrefix(in))); got != want {
			t.Errorf("splitDefault(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestDarwinLayouts checks the bytes given to macOS's address ioctls
// against the kernel's struct layouts and request numbers (those of
// golang.org/x/sys/unix where it has them: SIOCAIFADDR, SIOCDIFADDR).
func TestDarwinLayouts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"SIOCAIFADDR", darwinSIOCAIFADDR, 0x8040691a},
		{"SIOCDIFADDR", darwinSIOCDIFADDR, 0x80206919},
		{"SIOCAIFADDR_IN6", darwinSIOCAIFADDRIn6, 0x8080691a},
		{"SIOCDIFADDR_IN6", darwinSIOCDIFADDRIn6, 0x81206919},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}

	b := inAliasreq("utun3", netip.MustParsePrefix("10.9.0.1/24"))
	want := make([]byte, 64)
	copy(want, "utun3")
	copy(want[16:], []byte{16, 2, 0, 0, 10, 9, 0, 1})      // ifra_addr
	copy(want[32:], []byte{16, 2, 0, 0, 10, 9, 0, 1})      // ifra_dstaddr: itself
	copy(want[48:], []byte{16, 2, 0, 0, 255, 255, 255, 0}) // ifra_mask
	if !bytes.Equal(b[:], want) {
		t.Errorf("in_aliasreq:\n% x\nwant\n% x", b, want)
	}

	b6 := in6Aliasreq("utun3", netip.MustParsePrefix("fd00::1/64"))
	want = make([]byte, 128)
	copy(want, "utun3")
	copy(want[16:], []byte{28, 30})
	want[24], want[39] = 0xfd, 1 // sin6_addr at 8 in the sockaddr
	copy(want[72:], []byte{28, 30})
	copy(want[80:88], bytes.Repeat([]byte{0xff}, 8)) // /64
	binary.LittleEndian.PutUint32(want[120:], 0xffffffff)
	binary.LittleEndian.PutUint32(want[124:], 0xffffffff)
	if !bytes.Equal(b6[:], want) {
		t.Errorf("in6_aliasreq:\n% x\nwant\n% x", b6, want)
	}

	r := ifreqAddr("utun3", netip.MustParseAddr("10.9.0.1"))
	if len(r) != 32 || string(r[:5]) != "utun3" || !bytes.Equal(r[16:24], []byte{16, 2, 0, 0, 10, 9, 0, 1}) {
		t.Errorf("ifreq: % x", r)
	}
	r6 := ifreqAddr("utun3", netip.MustParseAddr("fd00::1"))
	if len(r6) != sizeofIn6Ifreq || r6[16] != 28 || r6[17] != 30 || r6[24] != 0xfd || r6[39] != 1 {
		t.Errorf("in6_ifreq: % x", r6)
	}
	// A name longer than IFNAMSIZ-1 keeps its terminating NUL.
	if long := inAliasreq("a-very-long-interface-name", netip.MustParsePrefix("10.0.0.1/32")); long[15] != 0 {
		t.Errorf("name not terminated: % x", long[:16])
	}
}
