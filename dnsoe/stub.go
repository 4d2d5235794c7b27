package dnsoe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Verdict is what the stub does with an address it is about to hand to an
// application.
type Verdict int

// Verdicts of a Stub's Trigger.
const (
	// Proceed hands the address out: its tunnel is up, or it needs none,
	// or the wait ran out (the datapath holds the first packets).
	Proceed Verdict = iota
	// Withhold removes the address from the answer: traffic to it would
	// be dropped (it published a key but no tunnel could be made, or its
	// class is private and it has no key).
	Withhold
)

// Stub is the DNS-triggered mode of the IETF 89 design: a local DNS server
// that forwards queries to the resolver and, for the addresses in A and
// AAAA answers, starts opportunistic IPsec at once and answers the
// application only when the tunnel is up or a bounded wait ran out. An
// answer whose addresses all had to be withheld becomes SERVFAIL (hard
// fail: an application never gets an address that would receive
// plaintext from us, or nothing at all).
type Stub struct {
	// Listen is the address to serve on, UDP and TCP (e.g.
	// "127.0.0.1:53").
	Listen string
	// Upstream is the recursive resolver ("addr:port").
	Upstream string
	// Dialer, if set, makes the upstream sockets (marked to bypass the
	// tunnel).
	Dialer *net.Dialer
	// Wait bounds how long an answer waits for its tunnels (default 2s).
	Wait time.Duration
	// Trigger starts opportunism for an address and returns when its
	// tunnel is up, the address is decided, or ctx is done.
	Trigger func(ctx context.Context, addr netip.Addr) Verdict
	Logger  *slog.Logger

	servers []*dns.Server
	wg      sync.WaitGroup
}

// ErrStub wraps failures to start the stub.
var ErrStub = errors.New("dnsoe: DNS stub")

// Start listens on Listen and serves until Close.
func (s *Stub) Start() error {
	if s.Wait <= 0 {
		s.Wait = 2 * time.Second
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	pc, err := net.ListenPacket("udp", s.Listen)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStub, err)
	}
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		pc.Close()
		return fmt.Errorf("%w: %v", ErrStub, err)
	}
	h := dns.HandlerFunc(s.serve)
	s.servers = []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	for _, srv := range s.servers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			srv.ActivateAndServe()
		}()
	}
	return nil
}

// Addr returns the UDP address the stub serves on.
func (s *Stub) Addr() string { return s.servers[0].PacketConn.LocalAddr().String() }

// Close stops the stub.
func (s *Stub) Close() {
	for _, srv := range s.servers {
		srv.Shutdown()
	}
	s.wg.Wait()
}

func (s *Stub) serve(w dns.ResponseWriter, q *dns.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), s.Wait+5*time.Second)
	defer cancel()
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	c := &dns.Client{Net: proto, Dialer: s.Dialer}
	in, _, err := c.ExchangeContext(ctx, q, s.Upstream)
	if err == nil && in.Truncated && proto == "udp" {
		in.Answer, in.Ns, in.Extra = nil, nil, nil // the client asks again over TCP
	}
	if err != nil {
		s.Logger.Debug("DNS stub: upstream failed", "q", q.Question, "err", err)
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeServerFailure)
		w.WriteMsg(r)
		return
	}
	if len(q.Question) == 1 && (q.Question[0].Qtype == dns.TypeA || q.Question[0].Qtype == dns.TypeAAAA) {
		s.filter(q, in)
	}
	w.WriteMsg(in)
}

// filter triggers opportunism for the answer's addresses in parallel and
// removes those that must be withheld.
func (s *Stub) filter(q, in *dns.Msg) {
	var addrs []netip.Addr
	for _, rr := range in.Answer {
		if a, ok := rrAddr(rr); ok {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 || s.Trigger == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.Wait)
	defer cancel()
	start := time.Now()
	withheld := map[netip.Addr]bool{}
	for i, v := range TriggerAll(ctx, addrs, s.Trigger) {
		if v == Withhold {
			withheld[addrs[i]] = true
		}
	}
	s.Logger.Info("DNS stub: answer", "name", q.Question[0].Name, "addresses", len(addrs), "withheld", len(withheld),
		"waited", time.Since(start).Round(time.Microsecond))
	if len(withheld) == 0 {
		return
	}
	kept := in.Answer[:0]
	left := 0
	for _, rr := range in.Answer {
		if a, ok := rrAddr(rr); ok {
			if withheld[a] {
				continue
			}
			left++
		}
		kept = append(kept, rr)
	}
	in.Answer = kept
	if left == 0 {
		in.Answer = nil
		in.Rcode = dns.RcodeServerFailure
	}
}

// TriggerAll calls trigger for every address at once and returns their
// verdicts, in order, when all have returned (trigger returns at the latest
// when ctx is done).
func TriggerAll(ctx context.Context, addrs []netip.Addr, trigger func(context.Context, netip.Addr) Verdict) []Verdict {
	verdicts := make([]Verdict, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			verdicts[i] = trigger(ctx, a)
		}()
	}
	wg.Wait()
	return verdicts
}

func rrAddr(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		a, ok := netip.AddrFromSlice(rr.A.To4())
		return a, ok
	case *dns.AAAA:
		a, ok := netip.AddrFromSlice(rr.AAAA)
		return a, ok
	}
	return netip.Addr{}, false
}
