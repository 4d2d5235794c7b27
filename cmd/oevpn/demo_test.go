package main

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/tunnel"
)

// TestDemoStatus runs the demo's status part alone, and checks that the
// status it prints, as text and as JSON, is of one host with each kind of
// peer the issue asks for: a configured peer up, an opportunistic peer up
// and an AutoVPN peer up, each with traffic both ways, the shunts with
// their verdicts and reasons, and the AutoVPN peer in the trust store.
func TestDemoStatus(t *testing.T) {
	if last := demoParts[len(demoParts)-1]; last.name != "status" {
		t.Errorf("the last part is %s, want status", last.name)
	}
	code, out, errOut := runCLI("demo", "-part", "status")
	if code != 0 {
		t.Fatalf("demo -part status failed (%d): %s\n%s", code, errOut, out)
	}
	if strings.Contains(out, "(a) ") || strings.Contains(out, "(c) ") || !strings.Contains(out, "(f) ") || !strings.Contains(out, "demo OK") {
		t.Errorf("demo -part status ran other parts, or not to the end:\n%s", out)
	}
	for _, want := range []string{
		`(?m)^  \$ oevpn status   # A's$`,
		`(?m)^  oevpn \S+  netstack  ike port 500  natt port 4500  clear path forwarder$`,
		// configured, by PSK, for H1 behind G1
		`(?m)^  peer g1 \(configured, start traffic\): up  address 203\.0\.113\.1$`,
		`(?m)^      198\.51\.100\.1 <-> 203\.0\.113\.1  auth psk  AES_GCM_16-256`,
		`(?m)^      child 198\.51\.100\.1 === 10\.1\.0\.1  AES_GCM_16-256/ESN  spi in [0-9a-f]{8} out [0-9a-f]{8} .* peer 203\.0\.113\.1:4500$`,
		// opportunistic, B's key from DNS
		`(?m)^  peer oe-out-198\.51\.100\.2 \(opportunistic\): up$`,
		`(?m)^      \(null\) <-> 198\.51\.100\.2  auth null`,
		`(?m)^      child 198\.51\.100\.1 === 198\.51\.100\.2 `,
		// AutoVPN, by certificate
		`(?m)^  peer autovpn-203\.0\.113\.2 \(autovpn\): up$`,
		`(?m)^      CN=A\.autovpn\.demo,O=oevpn demo A <-> CN=G2\.autovpn\.demo,O=oevpn demo G2  auth cert`,
		`(?m)^      child 198\.51\.100\.1 === 10\.2\.0\.1 `,
		// the shunts
		`(?m)^    DESTINATION +CLASS +VERDICT +EXPIRES IN +SOURCE +REASON$`,
		`(?m)^    198\.51\.100\.9 +private-or-clear +clear +\d+m\d+s +- +dnsoe: no opportunistic IPsec record$`,
		`(?m)^    198\.51\.100\.200 +private +drop +\d+m\d+s +- +dnsoe: no opportunistic IPsec record$`,
		// the trust store
		`(?m)^    [0-9a-f]{16} +unverified +no +\d+s ago +CN=G2\.autovpn\.demo,O=oevpn demo G2$`,
		`(?m)^  ike  3 IKE SA\(s\) established, failed: none$`,
		`(?m)^  opportunism  dns lookups: found 1 no_record 2; .* fallbacks: clear 1 drop 1$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("demo -part status output lacks %s:\n%s", want, out)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^        (in |out) [1-9]\d* packets, [1-9]\d* bytes, last \d+s ago$`).FindAllString(out, -1)); n != 6 {
		t.Errorf("%d Child SA directions with traffic, want 6 (3 peers, both ways):\n%s", n, out)
	}

	code, out, errOut = runCLI("demo", "-part", "status", "-json")
	if code != 0 {
		t.Fatalf("demo -part status -json failed (%d): %s\n%s", code, errOut, out)
	}
	i, j := strings.Index(out, "\n{\n"), strings.LastIndex(out, "\n}\n")
	if i < 0 || j < i {
		t.Fatalf("no JSON object in:\n%s", out)
	}
	var st tunnel.Status
	dec := json.NewDecoder(strings.NewReader(out[i+1 : j+2]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out[i+1:j+2])
	}
	for _, want := range []struct{ kind, auth, host string }{
		{tunnel.PeerConfigured, "psk", "10.1.0.1"},
		{tunnel.PeerOpportunistic, "null", "198.51.100.2"},
		{tunnel.PeerAutoVPN, "cert", "10.2.0.1"},
	} {
		i := slices.IndexFunc(st.Peers, func(p tunnel.PeerStatus) bool { return p.Kind == want.kind })
		if i < 0 {
			t.Errorf("no %s peer: %+v", want.kind, st.Peers)
			continue
		}
		p := st.Peers[i]
		if p.State != tunnel.PeerUp || p.LastError != "" || len(p.IKESAs) != 1 || len(p.IKESAs[0].ChildSAs) != 1 {
			t.Errorf("%s peer %s: %+v, want up with one IKE SA and one Child SA", want.kind, p.Name, p)
			continue
		}
		sa := p.IKESAs[0]
		c := sa.ChildSAs[0]
		if sa.State != "established" || sa.Auth != want.auth || !slices.Equal(c.RemoteTS, []string{want.host}) ||
			!slices.Equal(c.LocalTS, []string{"198.51.100.1"}) || c.In.Packets == 0 || c.Out.Packets == 0 {
			t.Errorf("%s peer %s: IKE SA %+v, want established by %s with a Child SA to %s carrying traffic", want.kind, p.Name, sa, want.auth, want.host)
		}
	}
	if p := st.Peers[0]; p.Kind != tunnel.PeerConfigured || p.Name != "g1" || p.Start != "traffic" || p.Address != "203.0.113.1" {
		t.Errorf("configured peer: %+v", p)
	}
	shunts := map[string]tunnel.OEStatus{}
	for _, e := range st.Opportunistic {
		shunts[e.Destination] = e
	}
	for dst, want := range map[string]struct{ class, verdict string }{
		"198.51.100.9": {"private-or-clear", "clear"}, "198.51.100.200": {"private", "drop"},
	} {
		e, ok := shunts[dst]
		if !ok || e.Class != want.class || e.Verdict != want.verdict || e.Reason != "dnsoe: no opportunistic IPsec record" ||
			e.ExpiresInSeconds == nil || *e.ExpiresInSeconds <= 0 {
			t.Errorf("shunt %s: %+v, want %s %s with its reason and expiry", dst, e, want.class, want.verdict)
		}
	}
	if len(st.AutoVPNPeers) != 1 || st.AutoVPNPeers[0].DN != "CN=G2.autovpn.demo,O=oevpn demo G2" || st.AutoVPNPeers[0].State != "unverified" {
		t.Errorf("AutoVPN peers: %+v, want G2, unverified", st.AutoVPNPeers)
	}
}
