// Package dnstest runs an in-process DNS server on loopback for tests (as
// miekg/dns's own tests run one): it answers from the records it is given,
// sets the AD bit when told, and can be made slow, silent or failing.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Failure modes for SetFail.
const (
	// Servfail answers every query SERVFAIL.
	Servfail = "servfail"
	// Silent answers nothing.
	Silent = "silent"
	// Bogus answers SERVFAIL unless checking is disabled, as a validating
	// resolver does for broken signatures.
	Bogus = "bogus"
)

// Server is a DNS server on 127.0.0.1. A name with no records of the type
// asked gets NODATA if it has records of another type, else NXDOMAIN,
// both with an SOA whose minimum is the negative TTL.
type Server struct {
	// Addr is the server's address, host:port.
	Addr string
	// Queries counts the queries received.
	Queries atomic.Int32

	mu      sync.Mutex
	records map[string][]dns.RR // by name + "/" + type
	ad      bool
	fail    string
	delay   time.Duration
	negTTL  uint32
}

// Start starts a server that the test's cleanup stops. Its negative TTL
// is 60 s until SetNegativeTTL.
func Start(tb testing.TB) *Server {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{Addr: pc.LocalAddr().String(), records: map[string][]dns.RR{}, negTTL: 60}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	tb.Cleanup(func() { srv.Shutdown() })
	return s
}

// Add publishes records given in zone-file syntax.
func (s *Server) Add(tb testing.TB, lines ...string) {
	tb.Helper()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			tb.Fatalf("%q: %v", l, err)
		}
		s.AddRR(rr)
	}
}

// AddRR publishes records.
func (s *Server) AddRR(rrs ...dns.RR) {
	for _, rr := range rrs {
		s.Answer(rr.Header().Name, rr.Header().Rrtype, rr)
	}
}

// Answer adds rrs to the answer to name/qtype whatever their own names and
// types are: what an attacker's server does.
func (s *Server) Answer(name string, qtype uint16, rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := name + "/" + dns.TypeToString[qtype]
	s.records[k] = append(s.records[k], rrs...)
}

// SetAD sets whether answers carry the AD bit (validated).
func (s *Server) SetAD(ad bool) { s.set(func() { s.ad = ad }) }

// SetFail makes the server fail in one of the modes Servfail, Silent or
// Bogus; "" makes it answer again.
func (s *Server) SetFail(mode string) { s.set(func() { s.fail = mode }) }

// SetDelay delays every answer by d.
func (s *Server) SetDelay(d time.Duration) { s.set(func() { s.delay = d }) }

// SetNegativeTTL sets the negative TTL (the SOA minimum) of denials.
func (s *Server) SetNegativeTTL(ttl uint32) { s.set(func() { s.negTTL = ttl }) }

func (s *Server) set(f func()) {
	s.mu.Lock()
	f()
	s.mu.Unlock()
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	s.Queries.Add(1)
	s.mu.Lock()
	delay, fail := s.delay, s.fail
	m := new(dns.Msg)
	m.SetReply(req)
	if len(req.Question) == 1 {
		q := req.Question[0]
		m.Answer = append(m.Answer, s.records[q.Name+"/"+dns.TypeToString[q.Qtype]]...)
		if len(m.Answer) == 0 {
			m.Rcode = dns.RcodeNameError
			for k := range s.records {
				if strings.HasPrefix(k, q.Name+"/") {
					m.Rcode = dns.RcodeSuccess // the name exists: NODATA
					break
				}
			}
			soa := &dns.SOA{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negTTL},
				Ns: "ns.", Mbox: "host.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: s.negTTL}
			m.Ns = []dns.RR{soa}
		}
	}
	m.AuthenticatedData = s.ad
	s.mu.Unlock()
	switch {
	case fail == Silent:
		return
	case fail == Servfail, fail == Bogus && !req.CheckingDisabled:
		m.Answer, m.Ns, m.Rcode, m.AuthenticatedData = nil, nil, dns.RcodeServerFailure, false
	}
	time.Sleep(delay)
	w.WriteMsg(m)
}
