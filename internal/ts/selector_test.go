package ts

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/oevpn/oevpn/internal/ipview"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in, out string
		err     bool
	}{
		{"192.0.2.0/24", "192.0.2.0/24", false},
		{"192.0.2.9/24", "192.0.2.0/24", false},
		{"192.0.2.1", "192.0.2.1", false},
		{"2001:db8::/32", "2001:db8::/32", false},
		{"10.0.0.1-10.0.0.9", "10.0.0.1-10.0.0.9", false},
		{"10.0.0.0-10.0.0.255", "10.0.0.0/24", false},
		{"192.0.2.1[tcp/80]", "192.0.2.1[6/80]", false},
		{"192.0.2.1[udp/500-4500]", "192.0.2.1[17/500-4500]", false},
		{"0.0.0.0/0[icmp]", "0.0.0.0/0[1]", false},
		{"::/0[47]", "::/0[47]", false},
		{"10.0.0.9-10.0.0.1", "", true},
		{"10.0.0.1-::1", "", true},
		{"bogus", "", true},
		{"10.0.0.0/33", "", true},
		{"10.0.0.1[tcp/80", "", true},
		{"10.0.0.1[xyz]", "", true},
		{"10.0.0.1[tcp/90-80]", "", true},
		{"10.0.0.1[tcp/70000]", "", true},
	}
	for _, tt := range tests {
		s, err := ParseSelector(tt.in)
		if tt.err {
			if !errors.Is(err, ErrSelector) {
				t.Errorf("%q: err %v, want ErrSelector", tt.in, err)
			}
			continue
		}
		if err != nil || s.String() != tt.out {
			t.Errorf("%q: %v, %v; want %q", tt.in, s, err, tt.out)
		}
	}
}

func TestSelectorsMatch(t *testing.T) {
	local := Selectors{mustSel("192.0.2.1"), mustSel("2001:db8::1")}
	remote := Selectors{mustSel("198.51.100.0/24[tcp/80]"), mustSel("203.0.113.5[icmp/2048]")}
	pkt := func(src, dst string, proto uint8, sp, dp uint16) *ipview.Packet {
		return &ipview.Packet{Flow: ipview.Flow{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: proto, SrcPort: sp, DstPort: dp}, HasPorts: true}
	}
	tests := []struct {
		p        *ipview.Packet
		src, dst bool
		name     string
	}{
		{pkt("198.51.100.9", "192.0.2.1", ipview.ProtoTCP, 80, 40000), true, true, "tcp reply"},
		{pkt("198.51.100.9", "192.0.2.1", ipview.ProtoTCP, 81, 40000), false, true, "wrong port"},
		{pkt("198.51.100.9", "192.0.2.1", ipview.ProtoUDP, 80, 40000), false, true, "wrong proto"},
		{pkt("198.51.101.9", "192.0.2.2", ipview.ProtoTCP, 80, 40000), false, false, "outside"},
		{pkt("203.0.113.5", "192.0.2.1", ipview.ProtoICMP, 0x0800, 0), true, true, "icmp echo"},
		{pkt("203.0.113.5", "192.0.2.1", ipview.ProtoICMP, 0x0000, 0), false, true, "icmp echo reply"},
		{pkt("::ffff:198.51.100.9", "2001:db8::1", ipview.ProtoTCP, 80, 1), false, true, "v6 source in v4 range"},
	}
	for _, tt := range tests {
		if got := remote.MatchSrc(tt.p); got != tt.src {
			t.Errorf("%s: MatchSrc = %v", tt.name, got)
		}
		if got := local.MatchDst(tt.p); got != tt.dst {
			t.Errorf("%s: MatchDst = %v", tt.name, got)
		}
	}
}

func mustSel(s string) Selector {
	sel, err := ParseSelector(s)
	if err != nil {
		panic(err)
	}
	return sel
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"192.0.2.0/24", "10.0.0.1-10.0.0.9[tcp/80-90]", "::/0[icmpv6]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		again, err := ParseSelector(sel.String())
		if err != nil || again != sel {
			t.Fatalf("%q → %q → %v, %v", s, sel.String(), again, err)
		}
	})
}
