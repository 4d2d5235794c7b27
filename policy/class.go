package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/oevpn/oevpn/internal/ipview"
)

// Class is what happens to traffic to a destination that no configured peer
// covers (draft-richardson-ipsec-opportunistic §3.2, libreswan's groups).
type Class uint8

// Connection classes.
const (
	// ClassClear never encrypts.
	ClassClear Class = iota
	// ClassBlock drops.
	ClassBlock
	// ClassPrivateOrClear encrypts if the peer can, else sends in the clear.
	ClassPrivateOrClear
	// ClassClearOrPrivate sends in the clear, but answers peers that
	// initiate IKE.
	ClassClearOrPrivate
	// ClassPrivate encrypts or drops.
	ClassPrivate
)

var classNames = [...]string{ClassClear: "clear", ClassBlock: "block", ClassPrivateOrClear: "private-or-clear",
	ClassClearOrPrivate: "clear-or-private", ClassPrivate: "private"}

// String names the class as in the configuration.
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// ParseClass reads a class name.
func ParseClass(s string) (Class, error) {
	for c, n := range classNames {
		if strings.EqualFold(s, n) {
			return Class(c), nil
		}
	}
	return 0, fmt.Errorf("unknown connection class %q (want one of %s)", s, strings.Join(classNames[:], ", "))
}

// Initiates reports whether traffic of the class makes us look for a peer.
func (c Class) Initiates() bool { return c == ClassPrivateOrClear || c == ClassPrivate }

// Responds reports whether we answer a peer that initiates IKE for
// traffic of the class.
func (c Class) Responds() bool { return c != ClassClear && c != ClassBlock }

// FailsOpen reports whether traffic goes out in the clear when no SA can
// be had.
func (c Class) FailsOpen() bool {
	return c == ClassPrivateOrClear || c == ClassClearOrPrivate || c == ClassClear
}

// Exception keeps one protocol and port (range) in a class of its own, e.g.
// SSH in the clear whatever the prefix says.
type Exception struct {
	Prefix   netip.Prefix
	Proto    uint8 // 0: any
	From, To uint16
	Class    Class
}

// Classes maps destinations to connection classes: exceptions first, then
// the longest matching prefix; destinations in no prefix are clear. Local,
// loopback, link-local, multicast and the endpoint's own addresses are
// never opportunistic: they are always clear.
type Classes struct {
	rules      []classRule // longest prefix first
	exceptions []Exception
	own        map[netip.Addr]bool
}

type classRule struct {
	prefix netip.Prefix
	class  Class
}

// NewClasses builds the table. A prefix listed in two classes is an error.
func NewClasses(byClass map[Class][]netip.Prefix, exceptions []Exception, own []netip.Addr) (*Classes, error) {
	c := &Classes{exceptions: exceptions, own: map[netip.Addr]bool{}}
	seen := map[netip.Prefix]Class{}
	for class, prefixes := range byClass {
		for _, p := range prefixes {
			p = p.Masked()
			if prev, dup := seen[p]; dup && prev != class {
				return nil, fmt.Errorf("prefix %v is in both %v and %v", p, prev, class)
			}
			seen[p] = class
			c.rules = append(c.rules, classRule{p, class})
		}
	}
	slices.SortStableFunc(c.rules, func(a, b classRule) int {
		if a.prefix.Bits() != b.prefix.Bits() {
			return b.prefix.Bits() - a.prefix.Bits()
		}
		return a.prefix.Addr().Compare(b.prefix.Addr())
	})
	for _, a := range own {
		c.own[a.Unmap()] = true
	}
	return c, nil
}

// WithOwn returns a copy of the table in which addrs are the endpoint's
// own addresses too.
func (c *Classes) WithOwn(addrs []netip.Addr) *Classes {
	n := &Classes{rules: c.rules, exceptions: c.exceptions, own: make(map[netip.Addr]bool, len(c.own)+len(addrs))}
	for a := range c.own {
		n.own[a] = true
	}
	for _, a := range addrs {
		n.own[a.Unmap()] = true
	}
	return n
}

// NeverOpportunistic reports whether a is an address opportunism must
// never apply to.
func (c *Classes) NeverOpportunistic(a netip.Addr) bool {
	a = a.Unmap()
	return !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified() || a.IsInterfaceLocalMulticast() || c.own[a] ||
		(a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

// Lookup returns the class of a packet's destination.
func (c *Classes) Lookup(p *ipview.Packet) Class {
	class, _ := c.Match(p)
	return class
}

// Match returns the class of a packet's destination and whether a rule
// (prefix or exception) gave it; without one the class is clear.
func (c *Classes) Match(p *ipview.Packet) (Class, bool) {
	dst := p.Dst.Unmap()
	if c.NeverOpportunistic(dst) {
		return ClassClear, false
	}
	for _, e := range c.exceptions {
		if e.Prefix.Contains(dst) && (e.Proto == 0 || e.Proto == p.Proto) &&
			(e.From == 0 && e.To == 0 || p.HasPorts && e.From <= p.DstPort && p.DstPort <= e.To) {
			return e.Class, true
		}
	}
	return c.match(dst)
}

// RequiresAuth reports whether some traffic to a must be authenticated:
// the class of its prefix, or of an exception that covers it, is private.
func (c *Classes) RequiresAuth(a netip.Addr) bool {
	a = a.Unmap()
	if c.NeverOpportunistic(a) {
		return false
	}
	for _, e := range c.exceptions {
		if e.Class == ClassPrivate && e.Prefix.Contains(a) {
			return true
		}
	}
	return c.ClassOf(a) == ClassPrivate
}

// ClassOf returns the class of an address by prefix alone.
func (c *Classes) ClassOf(a netip.Addr) Class {
	class, _ := c.match(a.Unmap())
	return class
}

func (c *Classes) match(a netip.Addr) (Class, bool) {
	if c.NeverOpportunistic(a) {
		return ClassClear, false
	}
	for _, r := range c.rules {
		if r.prefix.Contains(a) {
			return r.class, true
		}
	}
	return ClassClear, false
}
