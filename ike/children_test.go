package ike

import (
	"testing"

	"github.com/oevpn/oevpn/policy"
)

func TestTouched(t *testing.T) {
	sel := func(s string) policy.Selector {
		t.Helper()
		x, err := policy.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	children := []*ChildSA{{Remote: policy.Selectors{sel("10.2.0.0/24")}}, {Remote: policy.Selectors{sel("10.4.0.0/16")}, replaced: true}}
	tests := []struct {
		r    string
		want bool
	}{
		{"10.2.0.0/24", true},
		{"10.2.0.7", true},
		{"10.2.0.0/23", true}, // narrowed on purpose: asking again gets the same
		{"10.0.0.0/8", true},
		{"10.3.0.0/24", false},
		{"10.4.1.0/24", false}, // only a replaced (rekeyed) Child SA covers it
		{"2001:db8::/64", false},
	}
	for _, tt := range tests {
		if got := touched(sel(tt.r), children); got != tt.want {
			t.Errorf("touched(%s) = %v, want %v", tt.r, got, tt.want)
		}
	}
}
