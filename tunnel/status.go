package tunnel

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
)

// Status is a snapshot of a node for people and programs: `oevpn status`
// renders it, and the control socket serves it as JSON. The JSON schema is
// one and stable: snake_case names; counts and times as numbers; times
// relative to the snapshot, in whole seconds ("_seconds": how long ago, or
// "_in_seconds": how long until), null when there is none; lists always
// arrays, empty rather than null; addresses and selectors as strings in
// their usual notation. Objects for parts that are off (autovpn, ike,
// bypass_routes) are left out.
type Status struct {
	Version   string `json:"version"`
	Mode      string `json:"mode"`   // "tun" or "netstack"
	Device    string `json:"device"` // the TUN's name ("" in netstack mode)
	IKEPort   uint16 `json:"ike_port"`
	NATTPort  uint16 `json:"natt_port"`
	ClearPath string `json:"clear_path"` // "raw", "forwarder" or "none"
	Outside   string `json:"outside"`    // the interface oevpn's own packets leave by ("" for the routing table's)

	// Peers are the configured peers, up or not, then the opportunistic
	// and AutoVPN peers that have an IKE SA, each sorted by name.
	Peers []PeerStatus `json:"peers"`
	// StaticSAs are the statically keyed SA pairs.
	StaticSAs []ChildSAStatus `json:"static_sas"`
	// Opportunistic is the opportunistic table: destinations negotiating
	// or with a fallback verdict (the negative cache, "shunts").
	Opportunistic []OEStatus `json:"opportunistic"`
	// AutoVPNPeers are the peers of AutoVPN's trust store.
	AutoVPNPeers []AutoVPNPeerStatus `json:"autovpn_peers"`

	Datapath DatapathCounters `json:"datapath"`
	Events   EventCounters    `json:"events"`
	IKE      *ike.Stats       `json:"ike,omitempty"`
	AutoVPN  *AutoVPNCounters `json:"autovpn,omitempty"`
	Bypass   *BypassStatus    `json:"bypass_routes,omitempty"`
	Memory   Memory           `json:"memory"`
}

// Peer kinds.
const (
	PeerConfigured    = "configured"
	PeerOpportunistic = "opportunistic"
	PeerAutoVPN       = "autovpn"
	// PeerAdded is a peer a program added to the IKE daemon itself
	// (Node.IKE().AddPeer), none of the above.
	PeerAdded = "added"
)

// peerKind tells the kind of a peer that is not configured by the names
// opportunism ("oe-…") and AutoVPN ("av-…", "autovpn-…") give the peers
// they make.
func peerKind(name string) string {
	switch {
	case strings.HasPrefix(name, "oe-"):
		return PeerOpportunistic
	case strings.HasPrefix(name, "av-"), strings.HasPrefix(name, "autovpn-"):
		return PeerAutoVPN
	}
	return PeerAdded
}

// Peer states.
const (
	PeerUp         = "up"         // an IKE SA is established
	PeerConnecting = "connecting" // an IKE SA is being negotiated
	PeerDown       = "down"       // no IKE SA
)

// PeerStatus is one peer and its IKE SAs.
type PeerStatus struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`  // PeerConfigured, PeerOpportunistic, PeerAutoVPN or PeerAdded
	State string `json:"state"` // PeerUp, PeerConnecting or PeerDown
	// Address is the configured address (configured peers).
	Address string `json:"address"`
	// Start is when a configured peer is brought up: "start" (at once),
	// "traffic" or "none" (only responds); "" for the others.
	Start string `json:"start"`
	// LastError is why its last negotiation or IKE SA failed ("" if the
	// last one came up), LastErrorSeconds how long ago.
	LastError        string        `json:"last_error"`
	LastErrorSeconds *int64        `json:"last_error_seconds"`
	IKESAs           []IKESAStatus `json:"ike_sas"`
}

// IKESAStatus is one IKE SA.
type IKESAStatus struct {
	Remote         string          `json:"remote"` // address:port of the peer's IKE
	State          string          `json:"state"`
	Initiator      bool            `json:"initiator"`
	LocalID        string          `json:"local_id"`
	RemoteID       string          `json:"remote_id"`
	Auth           string          `json:"auth"`
	Suite          string          `json:"suite"`
	SPIi           string          `json:"spi_i"` // hex
	SPIr           string          `json:"spi_r"`
	AgeSeconds     int64           `json:"age_seconds"`
	RekeyInSeconds *int64          `json:"rekey_in_seconds"`
	LastHeard      *int64          `json:"last_heard_seconds"` // the peer's last authenticated message (DPD)
	ChildSAs       []ChildSAStatus `json:"child_sas"`
}

// ChildSAStatus is one Child SA, or one static SA pair.
type ChildSAStatus struct {
	Peer            string        `json:"peer"` // where ESP goes
	LocalTS         []string      `json:"local_ts"`
	RemoteTS        []string      `json:"remote_ts"`
	SPIIn           string        `json:"spi_in"` // hex
	SPIOut          string        `json:"spi_out"`
	Suite           string        `json:"suite"`
	AgeSeconds      int64         `json:"age_seconds"`
	RekeyInSeconds  *int64        `json:"rekey_in_seconds"`
	ExpireInSeconds *int64        `json:"expires_in_seconds"` // the hard lifetime
	In              TrafficStatus `json:"in"`
	Out             TrafficStatus `json:"out"`
}

// TrafficStatus counts one direction of an SA.
type TrafficStatus struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// LastPacketSeconds is how long ago the last packet passed, to
	// within activityInterval; null if none did.
	LastPacketSeconds *int64 `json:"last_packet_seconds"`
	// ReplayDrops and IntegrityFailures count inbound packets dropped.
	ReplayDrops       uint64 `json:"replay_drops"`
	IntegrityFailures uint64 `json:"integrity_failures"`
}

// OEStatus is one destination of the opportunistic table.
type OEStatus struct {
	Destination string `json:"destination"`
	Class       string `json:"class"`   // its policy class
	Verdict     string `json:"verdict"` // "pending", "clear" or "drop"
	Reason      string `json:"reason"`  // why opportunism fell back ("" while pending)
	// Source is the kind of DNS record its gateway came from (IPSECKEY,
	// TXT, KEY, AutoSEC), "" if DNS gave none.
	Source           string `json:"source"`
	ExpiresInSeconds *int64 `json:"expires_in_seconds"` // null while pending
}

// AutoVPNPeerStatus is one peer of AutoVPN's trust store.
type AutoVPNPeerStatus struct {
	Fingerprint     string `json:"fingerprint"`
	DN              string `json:"dn"`
	State           string `json:"state"`
	SharedSecret    bool   `json:"shared_secret"`
	LastSeenSeconds *int64 `json:"last_seen_seconds"`
	Contact         string `json:"contact"`
}

// DatapathCounters are the datapath's counters (Stats), named for JSON.
type DatapathCounters struct {
	ESPSent        uint64 `json:"esp_packets_sent"`
	ESPReceived    uint64 `json:"esp_packets_received"`
	Clear          uint64 `json:"clear_packets_sent"`
	NoSA           uint64 `json:"dropped_no_sa"`
	Blocked        uint64 `json:"dropped_blocked"`
	Malformed      uint64 `json:"dropped_malformed"`
	UnknownSPI     uint64 `json:"dropped_unknown_spi"`
	DecryptErrors  uint64 `json:"dropped_decrypt"`
	SelectorDrops  uint64 `json:"dropped_selector"`
	SealErrors     uint64 `json:"dropped_seal"`
	SendErrors     uint64 `json:"send_errors"`
	ControlDropped uint64 `json:"dropped_control"`
	NullDrops      uint64 `json:"dropped_unauthenticated"`
	NullRefused    uint64 `json:"null_auth_refused"`
	Keepalives     uint64 `json:"natt_keepalives_received"`
	Helped         uint64 `json:"esp_packets_on_helper_cores"`
}

func datapathCounters(s Stats) DatapathCounters {
	return DatapathCounters{ESPSent: s.TxPackets, ESPReceived: s.RxPackets, Clear: s.Clear, NoSA: s.NoSA, Blocked: s.Blocked,
		Malformed: s.Malformed, UnknownSPI: s.UnknownSPI, DecryptErrors: s.DecryptErrors, SelectorDrops: s.SelectorDrops,
		SealErrors: s.SealErrors, SendErrors: s.SendErrors, ControlDropped: s.ControlDropped, NullDrops: s.NullDrops,
		NullRefused: s.NullRefused, Keepalives: s.Keepalives, Helped: s.Helped}
}

// EventCounters count what happened since the node started; every map
// has all its keys, zero or not.
type EventCounters struct {
	// IKEEstablished counts IKE SAs that came up; IKEFailed the
	// negotiations that failed and the IKE SAs lost, by reason
	// (IKEFailureReasons).
	IKEEstablished uint64            `json:"ike_established"`
	IKEFailed      map[string]uint64 `json:"ike_failed"`
	// DNSLookups counts opportunistic lookups by result
	// (DNSLookupResults); DNSCacheEntries is how many destinations the
	// resolver caches now.
	DNSLookups      map[string]uint64 `json:"dns_lookups"`
	DNSCacheEntries int               `json:"dns_cache_entries"`
	// OEFallbacks counts opportunistic fallback verdicts given, "clear"
	// and "drop".
	OEFallbacks map[string]uint64 `json:"opportunistic_fallbacks"`
}

// IKEFailureReasons are the reasons EventCounters.IKEFailed counts.
var IKEFailureReasons = []string{"no_answer", "auth", "proposal", "child_refused", "other"}

// DNSLookupResults are the results EventCounters.DNSLookups counts.
var DNSLookupResults = []string{"found", "no_record", "bogus", "unvalidated", "unusable_key", "error"}

// events keeps the EventCounters.
type events struct {
	mu                  sync.Mutex
	established         uint64
	failed, lookups, oe map[string]uint64
}

func (ev *events) add(m *map[string]uint64, key string) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if *m == nil {
		*m = map[string]uint64{}
	}
	(*m)[key]++
}

func (ev *events) snapshot() EventCounters {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	all := func(keys []string, m map[string]uint64) map[string]uint64 {
		out := make(map[string]uint64, len(keys))
		for _, k := range keys {
			out[k] = m[k]
		}
		return out
	}
	return EventCounters{IKEEstablished: ev.established, IKEFailed: all(IKEFailureReasons, ev.failed),
		DNSLookups: all(DNSLookupResults, ev.lookups), OEFallbacks: all([]string{"clear", "drop"}, ev.oe)}
}

// failureReason sorts an IKE failure into IKEFailureReasons, by the
// outcome the IKE daemon wrapped in it.
func failureReason(err error) string {
	switch {
	case errors.Is(err, ike.ErrNoAnswer):
		return "no_answer"
	case errors.Is(err, ike.ErrAuth):
		return "auth"
	case errors.Is(err, ike.ErrNoProposal):
		return "proposal"
	case errors.Is(err, ike.ErrChildRefused):
		return "child_refused"
	}
	return "other"
}

// lookupResult sorts an opportunistic lookup's outcome into
// DNSLookupResults.
func lookupResult(res dnsoe.Result) string {
	switch err := res.Err; {
	case err == nil && len(res.Gateways) > 0:
		return "found"
	case err == nil || errors.Is(err, dnsoe.ErrNoRecord):
		return "no_record"
	case errors.Is(err, dnsoe.ErrBogus):
		return "bogus"
	case errors.Is(err, dnsoe.ErrUnvalidated):
		return "unvalidated"
	case errors.Is(err, dnsoe.ErrUnusableKey):
		return "unusable_key"
	}
	return "error"
}

// AutoVPNCounters are AutoVPN's counters (AutoVPNStats), named for JSON.
type AutoVPNCounters struct {
	ProbeRequests  uint64 `json:"probe_requests_sent"`
	ProbeResponses uint64 `json:"probe_responses_sent"`
	ProbeCompletes uint64 `json:"probe_completes_sent"`
	Completed      uint64 `json:"probes_completed"`
	Dropped        uint64 `json:"probes_dropped"`
	Limited        uint64 `json:"probes_rate_limited"`
	Unpaid         uint64 `json:"probes_flow_too_small"`
	Intercepted    uint64 `json:"intercepted"`
}

// BypassStatus counts the bypass routes (TUN mode): installed now, and
// refused because DefaultMaxBypass were.
type BypassStatus struct {
	Installed int    `json:"installed"`
	Refused   uint64 `json:"refused"`
}

// Status returns a snapshot of the node.
func (n *Node) Status() Status {
	now := time.Now()
	ikePort, natt := n.eng.Ports()
	st := Status{Mode: "tun", Device: n.cfg.Name, IKEPort: ikePort, NATTPort: natt, ClearPath: n.clear,
		Outside: n.outside.Interface, Peers: []PeerStatus{}, StaticSAs: []ChildSAStatus{}, Opportunistic: []OEStatus{},
		AutoVPNPeers: []AutoVPNPeerStatus{}, Datapath: datapathCounters(n.eng.Stats()), Events: n.events.snapshot(), Memory: ReadMemory()}
	if n.oe != nil {
		oe := n.oe.notes.events.snapshot()
		st.Events.DNSLookups, st.Events.OEFallbacks = oe.DNSLookups, oe.OEFallbacks
		if r := n.cfg.Opportunism.Resolver; r != nil {
			st.Events.DNSCacheEntries = r.CacheLen()
		}
	}
	if n.cfg.Netstack {
		st.Mode, st.Device = "netstack", ""
	}
	if n.dev != nil {
		installed, refused := n.dev.BypassStats()
		st.Bypass = &BypassStatus{Installed: installed, Refused: refused}
	}
	if n.av != nil {
		s := n.av.Stats()
		p := s.Probe
		st.AutoVPN = &AutoVPNCounters{ProbeRequests: p.Requests, ProbeResponses: p.Responses, ProbeCompletes: p.Completes,
			Completed: p.Completed, Dropped: p.Dropped, Limited: p.Limited, Unpaid: p.Unpaid, Intercepted: s.Intercepted}
		for _, p := range n.cfg.AutoVPN.Store.Peers() {
			st.AutoVPNPeers = append(st.AutoVPNPeers, AutoVPNPeerStatus{Fingerprint: p.Fingerprint, DN: p.DN, State: string(p.State),
				SharedSecret: len(p.SharedSecret) > 0, LastSeenSeconds: ago(now, p.LastSeen), Contact: p.Contact})
		}
	}
	n.activity.sample(n.eng.Pairs(), now)
	act := &n.activity
	owned := map[*SAPair]bool{}
	byName := map[string]*PeerStatus{}
	for _, p := range n.configured() {
		ps := &PeerStatus{Name: p.IKE.Name, Kind: PeerConfigured, State: PeerDown, Address: p.IKE.Addr.String(),
			Start: p.Start.String(), IKESAs: []IKESAStatus{}}
		if e, ok := n.lastError(p.IKE.Name); ok {
			ps.LastError, ps.LastErrorSeconds = e.msg, ago(now, e.at)
		}
		byName[ps.Name] = ps
	}
	if n.ike != nil {
		s := n.ike.Stats()
		st.IKE = &s
		for _, sa := range n.ike.SAs() {
			ps := byName[sa.Peer]
			if ps == nil {
				ps = &PeerStatus{Name: sa.Peer, Kind: peerKind(sa.Peer), State: PeerDown, IKESAs: []IKESAStatus{}}
				byName[sa.Peer] = ps
			}
			is := IKESAStatus{Remote: sa.Remote.String(), State: sa.State, Initiator: sa.Initiator, LocalID: sa.LocalID,
				RemoteID: sa.PeerID, Auth: sa.Auth, SPIi: fmt.Sprintf("%016x", sa.SPIi),
				SPIr: fmt.Sprintf("%016x", sa.SPIr), AgeSeconds: seconds(now.Sub(sa.Created)), RekeyInSeconds: until(now, sa.RekeyAt),
				LastHeard: ago(now, sa.LastHeard), ChildSAs: []ChildSAStatus{}}
			// Not known before the exchanges that set them.
			if sa.Suite != (ike.Suite{}) {
				is.Suite = sa.Suite.String()
			}
			if sa.PeerID == (ike.Identity{}).String() {
				is.RemoteID = ""
			}
			switch {
			case sa.State == "established" || sa.State == "rekeyed":
				ps.State = PeerUp
			case ps.State == PeerDown && sa.State != "dead":
				ps.State = PeerConnecting
			}
			for i, c := range sa.Children {
				p := n.eng.pairBySPI(c.In.SPI)
				if p == nil {
					continue
				}
				owned[p] = true
				cs := pairStatus(now, p, c.Suite.String(), act)
				if i < len(sa.ChildRekeyAt) {
					cs.RekeyInSeconds = until(now, sa.ChildRekeyAt[i])
				}
				if h := c.Out.Hard.Time; h > 0 {
					cs.ExpireInSeconds = until(now, p.Out.Created().Add(h))
				}
				is.ChildSAs = append(is.ChildSAs, cs)
			}
			ps.IKESAs = append(ps.IKESAs, is)
		}
	}
	for _, ps := range byName {
		st.Peers = append(st.Peers, *ps)
	}
	kindOrder := map[string]int{PeerConfigured: 0, PeerOpportunistic: 1, PeerAutoVPN: 2, PeerAdded: 3}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int {
		if d := kindOrder[a.Kind] - kindOrder[b.Kind]; d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, p := range n.eng.Pairs() {
		if !owned[p] {
			st.StaticSAs = append(st.StaticSAs, pairStatus(now, p, p.Out.Transform().String(), act))
		}
	}
	slices.SortFunc(st.StaticSAs, func(a, b ChildSAStatus) int { return strings.Compare(a.SPIIn, b.SPIIn) })
	st.Opportunistic = n.opportunisticTable(now, false)
	return st
}

// pairStatus describes an SA pair.
func pairStatus(now time.Time, p *SAPair, suite string, act *activityWatch) ChildSAStatus {
	in, out := p.In.Counters(), p.Out.Counters()
	inAt, outAt := act.last(p)
	return ChildSAStatus{Peer: p.Peer.String(), LocalTS: selectorStrings(p.Local), RemoteTS: selectorStrings(p.Remote),
		SPIIn: fmt.Sprintf("%08x", p.In.SPI()), SPIOut: fmt.Sprintf("%08x", p.Out.SPI()), Suite: suite,
		AgeSeconds: seconds(now.Sub(p.Out.Created())),
		In: TrafficStatus{Packets: in.Packets, Bytes: in.Bytes, LastPacketSeconds: ago(now, inAt),
			ReplayDrops: in.ReplayDrops, IntegrityFailures: in.IntegrityFailures},
		Out: TrafficStatus{Packets: out.Packets, Bytes: out.Bytes, LastPacketSeconds: ago(now, outAt)}}
}

func selectorStrings(s policy.Selectors) []string {
	out := make([]string, 0, len(s))
	for _, sel := range s {
		out = append(out, sel.String())
	}
	return out
}

// seconds rounds d to whole seconds.
func seconds(d time.Duration) int64 { return int64(d.Round(time.Second) / time.Second) }

// ago returns how many seconds before now t was, nil for a zero t.
func ago(now, t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	s := max(seconds(now.Sub(t)), 0)
	return &s
}

// until returns how many seconds after now t is, nil for a zero t.
func until(now, t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	s := max(seconds(t.Sub(now)), 0)
	return &s
}

// String names the start mode as oevpn's configuration does: "start",
// "traffic" or "none".
func (s Start) String() string {
	switch s {
	case StartNow:
		return "start"
	case StartNever:
		return "none"
	}
	return "traffic"
}

// peerError is the last error of a configured peer.
type peerError struct {
	msg string
	at  time.Time
}

// noteChange records the last error of a configured peer (only configured
// ones: the names of others come from the network), cleared when it comes
// up.
func (n *Node) noteChange(peer string, up bool, err error) {
	switch {
	case up:
		n.events.mu.Lock()
		n.events.established++
		n.events.mu.Unlock()
	case err != nil && !errors.Is(err, ike.ErrDown):
		n.events.add(&n.events.failed, failureReason(err))
	}
	if !slices.ContainsFunc(n.configured(), func(p Peer) bool { return p.IKE.Name == peer }) {
		return
	}
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	switch {
	case up:
		delete(n.errors, peer)
	case err != nil:
		if n.errors == nil {
			n.errors = map[string]peerError{}
		}
		n.errors[peer] = peerError{msg: err.Error(), at: time.Now()}
	}
}

func (n *Node) lastError(peer string) (peerError, bool) {
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	e, ok := n.errors[peer]
	return e, ok
}

// activityInterval is how often SA counters are sampled to tell when the
// last packet passed.
const activityInterval = 2 * time.Second

// activity is when an SA pair's counters last grew.
type activity struct {
	in, out     uint64
	inAt, outAt time.Time
	gen         uint64 // the sample that last saw the pair
}

// activityWatch samples the SA pairs' counters (off the datapath, which
// keeps no times).
type activityWatch struct {
	mu    sync.Mutex
	gen   uint64
	pairs map[*SAPair]*activity
}

// sample updates the last-packet times from the pairs' counters, and
// forgets pairs gone. It allocates only for new pairs.
func (w *activityWatch) sample(pairs []*SAPair, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pairs == nil {
		w.pairs = map[*SAPair]*activity{}
	}
	w.gen++
	for _, p := range pairs {
		a := w.pairs[p]
		if a == nil {
			a = &activity{}
			w.pairs[p] = a
		}
		if in := p.In.Counters().Packets; in != a.in {
			a.in, a.inAt = in, now
		}
		if out := p.Out.Counters().Packets; out != a.out {
			a.out, a.outAt = out, now
		}
		a.gen = w.gen
	}
	for p, a := range w.pairs {
		if a.gen != w.gen {
			delete(w.pairs, p)
		}
	}
}

// last returns when p last carried a packet each way (zero: never seen).
func (w *activityWatch) last(p *SAPair) (in, out time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.pairs[p]; a != nil {
		return a.inAt, a.outAt
	}
	return time.Time{}, time.Time{}
}

// watchActivity samples the pairs every activityInterval until the node
// closes; it returns what stops it.
func (n *Node) watchActivity() func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(activityInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				n.activity.sample(n.eng.Pairs(), now)
				if n.oe != nil {
					n.oe.notes.prune(n.eng)
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}
