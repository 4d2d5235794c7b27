package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/tunnel"
)

// The metrics endpoint ([interface] metrics): Prometheus's text exposition
// format (version 0.0.4) at /metrics, made from the same snapshot as
// `oevpn status`. Counters end in _total and count from the start of the
// process; per-SA series come and go with their SAs. Label values that
// come from peers (opportunistic peer names carry addresses) are escaped
// as the format says; there is one series per SA, and the SA tables are
// bounded.

// serveMetrics listens on cfg's metrics address until the endpoint closes.
func (ep *endpoint) serveMetrics(cfg *config.Config, log *slog.Logger) error {
	addr := cfg.Interface.Metrics
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return cfg.KeyError("interface.metrics", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(writeMetrics(ep.status()))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ep.OnClose(func() { srv.Close() })
	go srv.Serve(ln)
	log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return nil
}

// promWriter writes metric families in the text format.
type promWriter struct {
	b bytes.Buffer
}

// family starts a metric family.
func (p *promWriter) family(name, typ, help string) {
	fmt.Fprintf(&p.b, "# HELP %s %s\n# TYPE %s %s\n", name, strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help), name, typ)
}

// sample writes one sample; labels are name, value pairs.
func (p *promWriter) sample(name string, v float64, labels ...string) {
	p.b.WriteString(name)
	if len(labels) > 0 {
		p.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				p.b.WriteByte(',')
			}
			fmt.Fprintf(&p.b, `%s="%s"`, labels[i], labelEscaper.Replace(labels[i+1]))
		}
		p.b.WriteByte('}')
	}
	p.b.WriteByte(' ')
	p.b.WriteString(strconv.FormatFloat(v, 'f', -1, 64))
	p.b.WriteByte('\n')
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// one writes a family of a single unlabelled sample.
func (p *promWriter) one(name, typ, help string, v float64) {
	p.family(name, typ, help)
	p.sample(name, v)
}

// writeMetrics renders a status as metrics.
func writeMetrics(st tunnel.Status) []byte {
	var p promWriter
	p.family("oevpn_info", "gauge", "oevpn's version and mode.")
	p.sample("oevpn_info", 1, "version", st.Version, "mode", st.Mode)
	p.peers(st)
	p.saTraffic(st)
	p.datapath(st)
	p.opportunism(st)
	p.ikeAndAutoVPN(st)
	if b := st.Bypass; b != nil {
		p.one("oevpn_bypass_routes", "gauge", "Bypass routes installed.", float64(b.Installed))
		p.one("oevpn_bypass_routes_refused_total", "counter", "Bypass routes not installed because the maximum were.", float64(b.Refused))
	}
	m := st.Memory
	p.one("oevpn_memory_heap_live_bytes", "gauge", "Heap kept by the last garbage collection.", float64(m.HeapLive))
	p.one("oevpn_memory_heap_in_use_bytes", "gauge", "Heap taken by objects now.", float64(m.HeapInUse))
	p.one("oevpn_memory_rss_bytes", "gauge", "Resident set size (0 where unknown).", float64(m.RSS))
	p.one("oevpn_goroutines", "gauge", "Goroutines.", float64(m.Goroutines))
	return p.b.Bytes()
}

// peers writes the peers by kind and state, and the SAs.
func (p *promWriter) peers(st tunnel.Status) {
	p.family("oevpn_peers", "gauge", "Peers by kind and state.")
	count := map[[2]string]int{}
	for _, peer := range st.Peers {
		count[[2]string{peer.Kind, peer.State}]++
	}
	for _, kind := range []string{tunnel.PeerConfigured, tunnel.PeerOpportunistic, tunnel.PeerAutoVPN, tunnel.PeerAdded} {
		for _, state := range []string{tunnel.PeerUp, tunnel.PeerConnecting, tunnel.PeerDown} {
			p.sample("oevpn_peers", float64(count[[2]string{kind, state}]), "kind", kind, "state", state)
		}
	}
	p.family("oevpn_peer_up", "gauge", "Whether a configured peer has an established IKE SA.")
	for _, peer := range st.Peers {
		if peer.Kind == tunnel.PeerConfigured {
			p.sample("oevpn_peer_up", b2f(peer.State == tunnel.PeerUp), "peer", peer.Name)
		}
	}
	ikeSAs, children := 0, 0
	for _, peer := range st.Peers {
		ikeSAs += len(peer.IKESAs)
		for _, sa := range peer.IKESAs {
			children += len(sa.ChildSAs)
		}
	}
	p.one("oevpn_ike_sas", "gauge", "IKE SAs, in any state.", float64(ikeSAs))
	p.one("oevpn_child_sas", "gauge", "Child SAs negotiated by IKE.", float64(children))
	p.one("oevpn_static_sas", "gauge", "Statically keyed SA pairs.", float64(len(st.StaticSAs)))

}

// saTraffic writes each SA's packets and bytes, each way.
func (p *promWriter) saTraffic(st tunnel.Status) {
	// Per SA: packets and bytes each way.
	for _, m := range []struct {
		name, help string
		get        func(tunnel.TrafficStatus) uint64
	}{
		{"oevpn_sa_packets_total", "Packets through an SA, by direction.", func(t tunnel.TrafficStatus) uint64 { return t.Packets }},
		{"oevpn_sa_bytes_total", "Inner octets through an SA, by direction.", func(t tunnel.TrafficStatus) uint64 { return t.Bytes }},
	} {
		p.family(m.name, "counter", m.help)
		each := func(peer string, c tunnel.ChildSAStatus) {
			p.sample(m.name, float64(m.get(c.In)), "peer", peer, "spi_in", c.SPIIn, "direction", "in")
			p.sample(m.name, float64(m.get(c.Out)), "peer", peer, "spi_in", c.SPIIn, "direction", "out")
		}
		for _, peer := range st.Peers {
			for _, sa := range peer.IKESAs {
				for _, c := range sa.ChildSAs {
					each(peer.Name, c)
				}
			}
		}
		for _, c := range st.StaticSAs {
			each("static:"+c.Peer, c)
		}
	}

}

// datapath writes the IKE outcomes and the datapath's counters.
func (p *promWriter) datapath(st tunnel.Status) {
	ev := st.Events
	p.one("oevpn_ike_established_total", "counter", "IKE SAs established.", float64(ev.IKEEstablished))
	p.family("oevpn_ike_failures_total", "counter", "IKE negotiations failed and IKE SAs lost, by reason.")
	for _, r := range tunnel.IKEFailureReasons {
		p.sample("oevpn_ike_failures_total", float64(ev.IKEFailed[r]), "reason", r)
	}

	d := st.Datapath
	p.family("oevpn_esp_packets_total", "counter", "ESP packets sent (out) and decrypted and delivered (in).")
	p.sample("oevpn_esp_packets_total", float64(d.ESPSent), "direction", "out")
	p.sample("oevpn_esp_packets_total", float64(d.ESPReceived), "direction", "in")
	p.one("oevpn_esp_packets_helped_total", "counter", "ESP packets sealed or opened on a helper core (parallel crypto).", float64(d.Helped))
	p.one("oevpn_clear_packets_total", "counter", "Packets sent in the clear by policy.", float64(d.Clear))
	p.family("oevpn_dropped_packets_total", "counter", "Packets dropped, by reason.")
	for _, r := range []struct {
		reason string
		n      uint64
	}{{"no_sa", d.NoSA}, {"blocked", d.Blocked}, {"malformed", d.Malformed}, {"unknown_spi", d.UnknownSPI}, {"decrypt", d.DecryptErrors},
		{"selector", d.SelectorDrops}, {"seal", d.SealErrors}, {"unauthenticated", d.NullDrops}, {"control", d.ControlDropped}} {
		p.sample("oevpn_dropped_packets_total", float64(r.n), "reason", r.reason)
	}
	p.one("oevpn_send_errors_total", "counter", "Failed batch sends.", float64(d.SendErrors))
	p.one("oevpn_null_auth_refused_total", "counter", "AUTH_NULL peers refused for addresses that must be authenticated.", float64(d.NullRefused))
	p.one("oevpn_natt_keepalives_received_total", "counter", "NAT-T keepalives received.", float64(d.Keepalives))

}

// opportunism writes the opportunistic table, fallbacks and DNS lookups.
func (p *promWriter) opportunism(st tunnel.Status) {
	ev := st.Events
	p.family("oevpn_opportunistic_destinations", "gauge", "Opportunistic destinations without an SA, by verdict.")
	verdicts := map[string]int{}
	for _, e := range st.Opportunistic {
		verdicts[e.Verdict]++
	}
	for _, v := range []string{"pending", "clear", "drop"} {
		p.sample("oevpn_opportunistic_destinations", float64(verdicts[v]), "verdict", v)
	}
	p.family("oevpn_opportunistic_fallbacks_total", "counter", "Fallback verdicts given after opportunism failed.")
	for _, v := range []string{"clear", "drop"} {
		p.sample("oevpn_opportunistic_fallbacks_total", float64(ev.OEFallbacks[v]), "verdict", v)
	}
	p.family("oevpn_dns_lookups_total", "counter", "Opportunistic DNS lookups, by result.")
	for _, r := range tunnel.DNSLookupResults {
		p.sample("oevpn_dns_lookups_total", float64(ev.DNSLookups[r]), "result", r)
	}
	p.one("oevpn_dns_cache_entries", "gauge", "Destinations in the opportunistic resolver's cache.", float64(ev.DNSCacheEntries))

}

// ikeAndAutoVPN writes the IKE daemon's and AutoVPN's counters.
func (p *promWriter) ikeAndAutoVPN(st tunnel.Status) {
	if s := st.IKE; s != nil {
		p.one("oevpn_ike_queue_dropped_total", "counter", "IKE messages dropped because their queue was full.", float64(s.PacketsDropped))
		p.one("oevpn_ike_cookies_sent_total", "counter", "COOKIE demands sent.", float64(s.CookiesSent))
		p.one("oevpn_ike_inits_dropped_total", "counter", "IKE_SA_INIT requests dropped before the queue.", float64(s.InitsDropped))
		p.family("oevpn_ike_invalid_spi_notifies_total", "counter", "INVALID_IKE_SPI (ike) and INVALID_SPI (esp) notifies sent.")
		p.sample("oevpn_ike_invalid_spi_notifies_total", float64(s.InvalidIKESPISent), "kind", "ike")
		p.sample("oevpn_ike_invalid_spi_notifies_total", float64(s.InvalidSPISent), "kind", "esp")
		p.one("oevpn_ike_notifies_rate_limited_total", "counter", "Notifies not sent because of the rate limits.", float64(s.NotifiesLimited))
		p.one("oevpn_ike_liveness_hints_total", "counter", "Liveness checks started because the peer did not know our SPIs.", float64(s.LivenessHints))
	}
	if a := st.AutoVPN; a != nil {
		p.family("oevpn_autovpn_probes_sent_total", "counter", "AutoVPN probe messages sent, by type.")
		p.sample("oevpn_autovpn_probes_sent_total", float64(a.ProbeRequests), "type", "request")
		p.sample("oevpn_autovpn_probes_sent_total", float64(a.ProbeResponses), "type", "response")
		p.sample("oevpn_autovpn_probes_sent_total", float64(a.ProbeCompletes), "type", "complete")
		p.one("oevpn_autovpn_probes_completed_total", "counter", "AutoVPN probe exchanges completed.", float64(a.Completed))
		p.one("oevpn_autovpn_probes_dropped_total", "counter", "AutoVPN probe messages received and dropped.", float64(a.Dropped))
		p.family("oevpn_autovpn_probes_not_sent_total", "counter", "AutoVPN probes not sent, by reason.")
		p.sample("oevpn_autovpn_probes_not_sent_total", float64(a.Limited), "reason", "rate_limit")
		p.sample("oevpn_autovpn_probes_not_sent_total", float64(a.Unpaid), "reason", "flow_too_small")
		p.one("oevpn_autovpn_intercepted_total", "counter", "Packets AutoVPN intercepted.", float64(a.Intercepted))
		p.family("oevpn_autovpn_peers", "gauge", "Peers of the AutoVPN trust store, by trust state.")
		states := map[string]int{}
		for _, peer := range st.AutoVPNPeers {
			states[peer.State]++
		}
		for _, s := range []policy.TrustState{policy.Unverified, policy.Trusted, policy.Untrusted, policy.Managed} {
			p.sample("oevpn_autovpn_peers", float64(states[string(s)]), "state", string(s))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
