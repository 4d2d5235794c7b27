package tunnel

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/oevpn/oevpn/policy"
)

func TestSelectorPrefixes(t *testing.T) {
	tests := []struct{ lo, hi, want string }{
		{"10.0.0.0", "10.0.0.255", "[10.0.0.0/24]"},
		{"10.0.0.1", "10.0.0.1", "[10.0.0.1/32]"},
		{"10.0.0.1", "10.0.0.6", "[10.0.0.1/32 10.0.0.2/31 10.0.0.4/31 10.0.0.6/32]"},
		{"0.0.0.0", "255.255.255.255", "[0.0.0.0/0]"},
		{"2001:db8::", "2001:db8::ffff", "[2001:db8::/112]"},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "[::/0]"},
	}
	for _, tt := range tests {
		got := selectorPrefixes(policy.Selector{Start: netip.MustParseAddr(tt.lo), End: netip.MustParseAddr(tt.hi)})
		if s := fmt.Sprint(got); s != tt.want {
			t.Errorf("selectorPrefixes(%s, %s) = %s, want %s", tt.lo, tt.hi, s, tt.want)
		}
	}
}
