package dnsoe

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/oevpn/oevpn/internal/dnstest"
)

func startStub(t *testing.T, upstream string, wait time.Duration, trigger func(context.Context, netip.Addr) Verdict) *Stub {
	t.Helper()
	s := &Stub{Listen: "127.0.0.1:0", Upstream: upstream, Wait: wait, Trigger: trigger}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func ask(t *testing.T, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	in, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestStubWithholdsAndWaits(t *testing.T) {
	ts := dnstest.Start(t)
	ts.Add(t, "up.oe.test. 60 IN A 192.0.2.1",
		"mixed.oe.test. 60 IN A 192.0.2.1", "mixed.oe.test. 60 IN A 192.0.2.66",
		"dead.oe.test. 60 IN A 192.0.2.66",
		"v6.oe.test. 60 IN AAAA 2001:db8::1",
		"up.oe.test. 60 IN TXT \"not an address\"")
	dead := netip.MustParseAddr("192.0.2.66")
	var calls atomic.Int32
	trigger := func(ctx context.Context, a netip.Addr) Verdict {
		calls.Add(1)
		if a == dead {
			return Withhold
		}
		time.Sleep(100 * time.Millisecond) // the tunnel takes a while
		return Proceed
	}
	s := startStub(t, ts.Addr, time.Second, trigger)

	start := time.Now()
	in := ask(t, s.Addr(), "up.oe.test.", dns.TypeA)
	if in.Rcode != dns.RcodeSuccess || len(in.Answer) != 1 || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("up: %v after %v", in, time.Since(start))
	}
	// An address that must not get traffic is removed; if it was the only
	// one, the answer is SERVFAIL (hard fail).
	if in := ask(t, s.Addr(), "mixed.oe.test.", dns.TypeA); len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Fatalf("mixed: %v", in)
	}
	if in := ask(t, s.Addr(), "dead.oe.test.", dns.TypeA); in.Rcode != dns.RcodeServerFailure || len(in.Answer) != 0 {
		t.Fatalf("dead: %v", in)
	}
	if in := ask(t, s.Addr(), "v6.oe.test.", dns.TypeAAAA); len(in.Answer) != 1 {
		t.Fatalf("v6: %v", in)
	}
	// Other types pass through without triggering.
	before := calls.Load()
	if in := ask(t, s.Addr(), "up.oe.test.", dns.TypeTXT); len(in.Answer) != 1 || calls.Load() != before {
		t.Fatalf("TXT: %v (%d triggers)", in, calls.Load()-before)
	}
}

func TestStubBoundedWait(t *testing.T) {
	ts := dnstest.Start(t)
	ts.Add(t, "slow.oe.test. 60 IN A 192.0.2.9")
	s := startStub(t, ts.Addr, 150*time.Millisecond, func(ctx context.Context, a netip.Addr) Verdict {
		<-ctx.Done() // IKE still running when the wait runs out
		return Proceed
	})
	start := time.Now()
	in := ask(t, s.Addr(), "slow.oe.test.", dns.TypeA)
	if d := time.Since(start); len(in.Answer) != 1 || d < 150*time.Millisecond || d > time.Second {
		t.Fatalf("%v after %v", in, d)
	}
}

func TestStubUpstreamDown(t *testing.T) {
	s := startStub(t, "127.0.0.1:1", 100*time.Millisecond, nil)
	if in := ask(t, s.Addr(), "x.oe.test.", dns.TypeA); in.Rcode != dns.RcodeServerFailure {
		t.Fatalf("%v", in)
	}
}
