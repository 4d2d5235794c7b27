package policy

import (
	"net/netip"
	"testing"

	"github.com/oevpn/oevpn/internal/ipview"
)

func TestClasses(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var l []netip.Prefix
		for _, s := range ss {
			l = append(l, netip.MustParsePrefix(s))
		}
		return l
	}
	c, err := NewClasses(map[Class][]netip.Prefix{
		ClassPrivateOrClear: pfx("0.0.0.0/0", "::/0"),
		ClassClear:          pfx("192.0.2.0/24"),
		ClassPrivate:        pfx("192.0.2.128/25", "2001:db8:1::/48"),
		ClassBlock:          pfx("198.51.100.7/32"),
		ClassClearOrPrivate: pfx("203.0.113.0/24"),
	}, []Exception{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Proto: ipview.ProtoTCP, From: 22, To: 22, Class: ClassClear}},
		[]netip.Addr{netip.MustParseAddr("198.51.100.1")})
	if err != nil {
		t.Fatal(err)
	}
	pkt := func(dst string, proto uint8, port uint16) *ipview.Packet {
		return &ipview.Packet{Flow: ipview.Flow{Dst: netip.MustParseAddr(dst), Proto: proto, DstPort: port}, HasPorts: port != 0}
	}
	tests := []struct {
		p    *ipview.Packet
		want Class
	}{
		{pkt("8.8.8.8", ipview.ProtoUDP, 53), ClassPrivateOrClear},
		{pkt("192.0.2.5", ipview.ProtoTCP, 80), ClassClear},
		{pkt("192.0.2.200", ipview.ProtoTCP, 80), ClassPrivate}, // longer prefix wins
		{pkt("192.0.2.200", ipview.ProtoTCP, 22), ClassClear},   // port exception
		{pkt("198.51.100.7", ipview.ProtoICMP, 0), ClassBlock},
		{pkt("203.0.113.9", ipview.ProtoTCP, 443), ClassClearOrPrivate},
		{pkt("2001:db8:1::5", ipview.ProtoTCP, 443), ClassPrivate},
		{pkt("2001:db8:2::5", ipview.ProtoTCP, 443), ClassPrivateOrClear},
		{pkt("127.0.0.1", ipview.ProtoTCP, 80), ClassClear},
		{pkt("169.254.1.1", ipview.ProtoTCP, 80), ClassClear},
		{pkt("fe80::1", ipview.ProtoTCP, 80), ClassClear},
		{pkt("ff02::1", ipview.ProtoUDP, 5353), ClassClear},
		{pkt("224.0.0.251", ipview.ProtoUDP, 5353), ClassClear},
		{pkt("255.255.255.255", ipview.ProtoUDP, 67), ClassClear},
		{pkt("198.51.100.1", ipview.ProtoTCP, 80), ClassClear}, // our own address
		{pkt("::ffff:192.0.2.200", ipview.ProtoTCP, 80), ClassPrivate},
	}
	for _, tt := range tests {
		if got := c.Lookup(tt.p); got != tt.want {
			t.Errorf("%v proto %d port %d: %v, want %v", tt.p.Dst, tt.p.Proto, tt.p.DstPort, got, tt.want)
		}
	}
	if _, err := NewClasses(map[Class][]netip.Prefix{ClassClear: pfx("10.0.0.0/8"), ClassBlock: pfx("10.0.0.0/8")}, nil, nil); err == nil {
		t.Fatal("a prefix in two classes accepted")
	}
	for _, cl := range []Class{ClassClear, ClassBlock, ClassPrivateOrClear, ClassClearOrPrivate, ClassPrivate} {
		got, err := ParseClass(cl.String())
		if err != nil || got != cl {
			t.Errorf("ParseClass(%q) = %v, %v", cl, got, err)
		}
	}
	if _, err := ParseClass("encrypt"); err == nil {
		t.Error("bad class accepted")
	}
	// What each class does.
	if !ClassPrivate.Initiates() || ClassPrivate.FailsOpen() || !ClassPrivateOrClear.FailsOpen() || ClassClearOrPrivate.Initiates() ||
		!ClassClearOrPrivate.Responds() || ClassBlock.Responds() || ClassClear.Responds() {
		t.Error("class semantics")
	}
}

func BenchmarkClassLookup(b *testing.B) {
	var prefixes []netip.Prefix
	for i := 0; i < 64; i++ {
		prefixes = append(prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
	}
	c, _ := NewClasses(map[Class][]netip.Prefix{ClassPrivate: prefixes, ClassPrivateOrClear: {netip.MustParsePrefix("0.0.0.0/0")}}, nil, nil)
	p := &ipview.Packet{Flow: ipview.Flow{Dst: netip.MustParseAddr("8.8.8.8"), Proto: ipview.ProtoTCP, DstPort: 443}, HasPorts: true}
	b.ReportAllocs()
	for b.Loop() {
		c.Lookup(p)
	}
}

func TestClassesWithOwn(t *testing.T) {
	c, err := NewClasses(map[Class][]netip.Prefix{ClassPrivate: {netip.MustParsePrefix("10.0.0.0/8")}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	own := c.WithOwn([]netip.Addr{netip.MustParseAddr("10.1.2.3")})
	if c.ClassOf(netip.MustParseAddr("10.1.2.3")) != ClassPrivate || own.ClassOf(netip.MustParseAddr("10.1.2.3")) != ClassClear ||
		own.ClassOf(netip.MustParseAddr("10.1.2.4")) != ClassPrivate {
		t.Fatal("own addresses not exempted, or the original changed")
	}
}
