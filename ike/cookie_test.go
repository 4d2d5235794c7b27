package ike

import (
	"net/netip"
	"testing"
	"time"
)

func TestCookies(t *testing.T) {
	var j cookieJar
	ni := seq(1, 32)
	ip := netip.MustParseAddr("192.0.2.7")
	c := j.make(ni, ip, 42)
	if !j.valid(c, ni, ip, 42) {
		t.Fatal("fresh cookie refused")
	}
	for name, ok := range map[string]bool{
		"other nonce": j.valid(c, seq(2, 32), ip, 42),
		"other IP":    j.valid(c, ni, netip.MustParseAddr("192.0.2.8"), 42),
		"other SPI":   j.valid(c, ni, ip, 43),
		"truncated":   j.valid(c[:19], ni, ip, 42),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
	// After one rotation the previous secret still works; after two, not.
	j.made = time.Now().Add(-2 * cookieSecretLifetime)
	j.make(ni, ip, 1)
	if !j.valid(c, ni, ip, 42) {
		t.Fatal("cookie refused after one rotation")
	}
	j.made = time.Now().Add(-2 * cookieSecretLifetime)
	j.make(ni, ip, 1)
	if j.valid(c, ni, ip, 42) {
		t.Fatal("cookie accepted after two rotations")
	}
}
