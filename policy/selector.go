package policy

import (
	"net/netip"

	"github.com/oevpn/oevpn/internal/ts"
)

// Selector is one traffic selector (RFC 7296 §3.13.1); see package ts.
type Selector = ts.Selector

// Selectors is a list of traffic selectors; a packet matches if it matches
// any of them.
type Selectors = ts.Selectors

// ErrSelector is wrapped by every selector parse error.
var ErrSelector = ts.ErrSelector

// PrefixSelector returns the selector covering prefix p, any protocol and
// port.
func PrefixSelector(p netip.Prefix) Selector { return ts.PrefixSelector(p) }

// ParseSelector parses a selector as the configuration writes it.
func ParseSelector(s string) (Selector, error) { return ts.ParseSelector(s) }
