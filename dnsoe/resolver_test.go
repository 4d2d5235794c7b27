package dnsoe

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/oevpn/oevpn/internal/dnstest"
)

func TestResolverIPSECKEY(t *testing.T) {
	ts := dnstest.Start(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	dest := netip.MustParseAddr("192.0.2.7")
	lines, _ := Records("192.0.2.7", "", 10, priv.Public())
	ts.Add(t, lines[0])
	ts.SetAD(true)
	r := &Resolver{Server: ts.Addr, Mode: DNSSECRequire}
	res := r.Lookup(context.Background(), dest)
	if res.Err != nil || len(res.Gateways) != 1 || !res.Validated || res.Gateways[0].Addr != dest || !sameKey(res.Gateways[0].Key, priv.Public()) {
		t.Fatalf("%+v", res)
	}
	// Cached: no new queries until the TTL (3600 s) runs out.
	n := ts.Queries.Load()
	r.Lookup(context.Background(), dest)
	if ts.Queries.Load() != n {
		t.Fatal("cached answer not used")
	}
	if _, ok := r.Cached(dest, time.Now().Add(2*time.Hour)); ok {
		t.Fatal("answer used past its TTL")
	}
}

func TestResolverDNSSECModes(t *testing.T) {
	ts := dnstest.Start(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	lines, _ := Records("192.0.2.8", "", 10, priv.Public())
	ts.Add(t, lines[0])
	dest := netip.MustParseAddr("192.0.2.8")
	ts.SetAD(false)
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), dest); !errors.Is(res.Err, ErrUnvalidated) || len(res.Gateways) != 0 {
		t.Fatalf("require, unvalidated: %+v", res)
	}
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECPrefer}).Lookup(context.Background(), dest); res.Err != nil || len(res.Gateways) != 1 || res.Validated {
		t.Fatalf("prefer, unvalidated: %+v", res)
	}
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECOff}).Lookup(context.Background(), dest); res.Err != nil || len(res.Gateways) != 1 {
		t.Fatalf("off: %+v", res)
	}
}

func TestResolverTXTDelegationAndKEY(t *testing.T) {
	ts := dnstest.Start(t)
	ts.SetAD(true)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	gwKey, _, _ := ed25519.GenerateKey(rand.Reader)
	// 192.0.2.9 delegates, key inline, to gateway 198.51.100.1; 192.0.2.10
	// delegates without a key to 198.51.100.2, whose KEY record has it.
	withKey, _ := Records("192.0.2.9", "198.51.100.1", 5, &rk.PublicKey)
	ts.Add(t, withKey[2])
	gwLines, _ := Records("198.51.100.2", "", 10, gwKey)
	ts.Add(t, `10.2.0.192.in-addr.arpa. 600 IN TXT "X-IPsec-Server(7)=198.51.100.2"`, gwLines[1])
	r := &Resolver{Server: ts.Addr, Mode: DNSSECRequire}
	res := r.Lookup(context.Background(), netip.MustParseAddr("192.0.2.9"))
	if res.Err != nil || len(res.Gateways) != 1 || res.Gateways[0].Addr != netip.MustParseAddr("198.51.100.1") || !sameKey(res.Gateways[0].Key, &rk.PublicKey) {
		t.Fatalf("inline key: %+v", res)
	}
	res = r.Lookup(context.Background(), netip.MustParseAddr("192.0.2.10"))
	if res.Err != nil || len(res.Gateways) != 1 || res.Gateways[0].Precedence != 7 || !sameKey(res.Gateways[0].Key, gwKey) {
		t.Fatalf("KEY lookup: %+v", res)
	}
	if time.Until(res.Expires) > 601*time.Second {
		t.Fatalf("expires %v: not bounded by the TXT TTL", res.Expires)
	}
}

func TestResolverNegativeAndBusy(t *testing.T) {
	ts := dnstest.Start(t)
	ts.SetAD(true)
	r := &Resolver{Server: ts.Addr, Mode: DNSSECRequire, MaxInFlight: 1}
	dest := netip.MustParseAddr("192.0.2.11")
	res := r.Lookup(context.Background(), dest)
	if !errors.Is(res.Err, ErrNoRecord) {
		t.Fatalf("no record: %+v", res)
	}
	if d := time.Until(res.Expires); d > 61*time.Second || d < 50*time.Second {
		t.Fatalf("negative answer cached for %v, want the SOA's 60 s", d)
	}
	n := ts.Queries.Load()
	r.Lookup(context.Background(), dest)
	if ts.Queries.Load() != n {
		t.Fatal("negative answer not cached")
	}
	// One slow lookup in flight: the next one is refused at once.
	ts.SetDelay(300 * time.Millisecond)
	done := make(chan Result)
	go func() { done <- r.Lookup(context.Background(), netip.MustParseAddr("192.0.2.12")) }()
	time.Sleep(50 * time.Millisecond)
	if res := r.Lookup(context.Background(), netip.MustParseAddr("192.0.2.13")); !errors.Is(res.Err, ErrBusy) {
		t.Fatalf("second lookup: %+v", res)
	}
	<-done
	// A dead resolver: the lookup ends with an error within the timeout.
	dead := &Resolver{Server: "127.0.0.1:1", Timeout: 200 * time.Millisecond}
	if res := dead.Lookup(context.Background(), dest); res.Err == nil || errors.Is(res.Err, ErrNoRecord) {
		t.Fatalf("dead resolver: %+v", res)
	}
}

// TestResolverBrokenSignatures: a validating resolver fails a zone whose
// signatures are broken (SERVFAIL); neither require nor prefer uses the
// data (prefer no longer asks again with checking disabled: an attacker
// who cannot sign would get its data used that way).
func TestResolverBrokenSignatures(t *testing.T) {
	ts := dnstest.Start(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	lines, _ := Records("192.0.2.20", "", 10, priv.Public())
	ts.Add(t, lines[0])
	ts.SetFail(dnstest.Bogus)
	dest := netip.MustParseAddr("192.0.2.20")
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), dest); res.Err == nil || len(res.Gateways) != 0 {
		t.Fatalf("require: %+v", res)
	}
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECPrefer}).Lookup(context.Background(), dest); res.Err == nil || len(res.Gateways) != 0 {
		t.Fatalf("prefer: %+v", res)
	}
}

// TestResolverDenialWithoutAD: under require, with the resolver's AD bit as
// the only validation, a denial without AD is not "no record" (an
// attacker on the path to the resolver could have forged it).
func TestResolverDenialWithoutAD(t *testing.T) {
	ts := dnstest.Start(t)
	ts.SetAD(false)
	dest := netip.MustParseAddr("192.0.2.30")
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), dest); !errors.Is(res.Err, ErrUnvalidated) {
		t.Fatalf("require: %+v, want ErrUnvalidated", res)
	}
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECPrefer}).Lookup(context.Background(), dest); !errors.Is(res.Err, ErrNoRecord) {
		t.Fatalf("prefer: %+v, want ErrNoRecord", res)
	}
	ts.SetAD(true)
	if res := (&Resolver{Server: ts.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), dest); !errors.Is(res.Err, ErrNoRecord) {
		t.Fatalf("require, AD: %+v, want ErrNoRecord", res)
	}
}

// TestResolverResponderBudget: remote initiators choose the addresses of
// LookupResponder; a flood of them against a slow resolver must not make
// the lookups for our own traffic fail with ErrBusy.
func TestResolverResponderBudget(t *testing.T) {
	ts := dnstest.Start(t)
	ts.SetAD(true)
	ts.SetDelay(300 * time.Millisecond)
	r := &Resolver{Server: ts.Addr, Mode: DNSSECRequire}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.LookupResponder(context.Background(), netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))
		}()
	}
	time.Sleep(50 * time.Millisecond)
	res := r.Lookup(context.Background(), netip.MustParseAddr("192.0.2.40"))
	wg.Wait()
	if errors.Is(res.Err, ErrBusy) {
		t.Fatalf("our own lookup refused during a flood of responder lookups: %v", res.Err)
	}
	if !errors.Is(res.Err, ErrNoRecord) {
		t.Fatalf("own lookup: %+v", res)
	}
}

// TestResolverSharesLookups: N concurrent lookups of one destination make
// the queries of one lookup.
func TestResolverSharesLookups(t *testing.T) {
	ts := dnstest.Start(t)
	ts.SetAD(true)
	ts.SetDelay(100 * time.Millisecond)
	(&Resolver{Server: ts.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), netip.MustParseAddr("192.0.2.41"))
	one := ts.Queries.Load()
	ts.Queries.Store(0)
	r := &Resolver{Server: ts.Addr, Mode: DNSSECRequire}
	dest := netip.MustParseAddr("192.0.2.42")
	var wg sync.WaitGroup
	var busy atomic.Int32
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := r.Lookup(context.Background(), dest); !errors.Is(res.Err, ErrNoRecord) {
				busy.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := ts.Queries.Load(); n != one || busy.Load() != 0 {
		t.Fatalf("50 concurrent lookups of one name made %d queries (one lookup makes %d), %d failed", n, one, busy.Load())
	}
}

// TestResolverCachesErrors: a failing resolver is asked once per ErrorTTL
// for a destination, not once per lookup.
func TestResolverCachesErrors(t *testing.T) {
	ts := dnstest.Start(t)
	ts.SetFail(dnstest.Bogus) // SERVFAIL
	r := &Resolver{Server: ts.Addr, Mode: DNSSECRequire, ErrorTTL: 300 * time.Millisecond}
	dest := netip.MustParseAddr("192.0.2.43")
	first := r.Lookup(context.Background(), dest)
	if first.Err == nil || errors.Is(first.Err, ErrNoRecord) {
		t.Fatalf("SERVFAIL: %+v", first)
	}
	n := ts.Queries.Load()
	for range 100 {
		if res := r.Lookup(context.Background(), dest); res.Err == nil {
			t.Fatalf("%+v", res)
		}
	}
	if ts.Queries.Load() != n {
		t.Fatalf("100 lookups of a failing destination made %d queries, want none", ts.Queries.Load()-n)
	}
	time.Sleep(350 * time.Millisecond)
	r.Lookup(context.Background(), dest)
	if ts.Queries.Load() == n {
		t.Fatal("a failure was remembered past ErrorTTL")
	}
}

// TestResolverCacheBounded: 100k distinct destinations (remote parties
// choose them) leave at most MaxCache entries.
func TestResolverCacheBounded(t *testing.T) {
	r := &Resolver{Mode: DNSSECOff}
	r.xchg = func(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
		out := new(dns.Msg)
		out.SetRcode(m, dns.RcodeNameError)
		return out, nil
	}
	for i := range 100_000 {
		r.LookupResponder(context.Background(), netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	r.mu.Lock()
	n, l := len(r.cache), r.lru.Len()
	r.mu.Unlock()
	if n > DefaultMaxCache || n != l {
		t.Fatalf("cache holds %d entries (list %d), want at most %d", n, l, DefaultMaxCache)
	}
	// The most recent is kept.
	if _, ok := r.Cached(netip.AddrFrom4([4]byte{10, 1, 134, 159}), time.Now()); !ok {
		t.Fatal("the most recent entry was evicted")
	}
}

// TestResolverWrongOwner: a record set owned by another name than the one
// asked is never used, even with the AD bit.
func TestResolverWrongOwner(t *testing.T) {
	ts := dnstest.Start(t)
	ts.SetAD(true)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	lines, _ := Records("198.51.100.50", "", 10, priv.Public())
	rr, err := dns.NewRR(lines[0]) // owned by 50.100.51.198.in-addr.arpa.
	if err != nil {
		t.Fatal(err)
	}
	ts.Answer("50.2.0.192.in-addr.arpa.", dns.TypeIPSECKEY, rr)
	res := (&Resolver{Server: ts.Addr, Mode: DNSSECRequire}).Lookup(context.Background(), netip.MustParseAddr("192.0.2.50"))
	if len(res.Gateways) != 0 || !errors.Is(res.Err, ErrNoRecord) {
		t.Fatalf("%+v", res)
	}
}

// A destination whose records ask for encryption but carry no key we can
// use (here an RSA modulus over the bound) is not "no record": the
// fallback must not send it plaintext.
func TestResolverUnusableKey(t *testing.T) {
	big := base64.StdEncoding.EncodeToString(encodeRFC3110(rsaOf(t, 16384, 65537)))
	for _, tc := range []struct{ name, dest, rr string }{
		{"IPSECKEY", "192.0.2.7", "7.2.0.192.in-addr.arpa. 3600 IN IPSECKEY 10 0 2 . " + big},
		{"TXT", "192.0.2.8", `8.2.0.192.in-addr.arpa. 3600 IN TXT "X-IPsec-Server(10)=192.0.2.8 ` + big + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := dnstest.Start(t)
			ts.Add(t, tc.rr)
			ts.SetAD(true)
			r := &Resolver{Server: ts.Addr, Mode: DNSSECRequire}
			res := r.Lookup(context.Background(), netip.MustParseAddr(tc.dest))
			if !errors.Is(res.Err, ErrUnusableKey) || len(res.Gateways) != 0 {
				t.Fatalf("got %+v, want ErrUnusableKey", res)
			}
		})
	}
}
