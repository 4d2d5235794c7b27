package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/tunnel"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func i64(v int64) *int64 { return &v }

// goldenStatus has a configured peer up, one down with its last error, an
// opportunistic peer, an AutoVPN peer, a static SA, a shunt and an AutoVPN
// trust-store entry.
func goldenStatus() tunnel.Status {
	child := func(local, remote, in, out string) tunnel.ChildSAStatus {
		return tunnel.ChildSAStatus{Peer: "192.0.2.2:4500", LocalTS: []string{local}, RemoteTS: []string{remote}, SPIIn: in, SPIOut: out,
			Suite: "AES_GCM_16_256", AgeSeconds: 754, RekeyInSeconds: i64(2520), ExpireInSeconds: i64(2846),
			In:  tunnel.TrafficStatus{Packets: 120, Bytes: 98304, LastPacketSeconds: i64(2), ReplayDrops: 1},
			Out: tunnel.TrafficStatus{Packets: 118, Bytes: 12040, LastPacketSeconds: i64(3)}}
	}
	return tunnel.Status{Version: "test", Mode: "tun", Device: "oevpn0", IKEPort: 500, NATTPort: 4500, ClearPath: "raw", Outside: "eth0",
		Peers: []tunnel.PeerStatus{
			{Name: "office", Kind: tunnel.PeerConfigured, State: tunnel.PeerUp, Address: "192.0.2.2", Start: "start", IKESAs: []tunnel.IKESAStatus{{
				Remote: "192.0.2.2:500", State: "established", Initiator: true, LocalID: "10.9.0.1", RemoteID: "gw.example.net", Auth: "psk",
				Suite: "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256", SPIi: "0123456789abcdef", SPIr: "fedcba9876543210", AgeSeconds: 3725,
				RekeyInSeconds: i64(10675), LastHeard: i64(4),
				ChildSAs: []tunnel.ChildSAStatus{child("10.9.0.0/24", "10.2.0.0/16", "c0a80001", "c1b2c3d4")}}}},
			{Name: "backup", Kind: tunnel.PeerConfigured, State: tunnel.PeerDown, Address: "198.51.100.9", Start: "traffic",
				LastError: "ike: peer did not answer", LastErrorSeconds: i64(42), IKESAs: []tunnel.IKESAStatus{}},
			{Name: "oe-out-203.0.113.5", Kind: tunnel.PeerOpportunistic, State: tunnel.PeerUp, IKESAs: []tunnel.IKESAStatus{{
				Remote: "203.0.113.5:500", State: "established", Initiator: true, LocalID: "198.51.100.1", RemoteID: "203.0.113.5", Auth: "pubkey",
				Suite: "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519", SPIi: "1111111111111111", SPIr: "2222222222222222", AgeSeconds: 61,
				RekeyInSeconds: i64(14339), LastHeard: i64(61),
				ChildSAs: []tunnel.ChildSAStatus{child("198.51.100.1", "203.0.113.5", "c0000002", "c0000003")}}}},
			{Name: "av-out-192.0.2.77-10.5.0.2", Kind: tunnel.PeerAutoVPN, State: tunnel.PeerConnecting, IKESAs: []tunnel.IKESAStatus{{
				Remote: "192.0.2.77:500", State: "connecting", Initiator: true, Auth: "signature", SPIi: "3333333333333333", SPIr: "0000000000000000",
				ChildSAs: []tunnel.ChildSAStatus{}}}},
		},
		StaticSAs: []tunnel.ChildSAStatus{{Peer: "192.0.2.3:4500", LocalTS: []string{"10.9.0.1"}, RemoteTS: []string{"10.3.0.0/24", "10.4.0.0/24"},
			SPIIn: "00001001", SPIOut: "00001002", Suite: "aes256gcm16", AgeSeconds: 90000,
			In: tunnel.TrafficStatus{Packets: 0}, Out: tunnel.TrafficStatus{Packets: 5, Bytes: 420, LastPacketSeconds: i64(700)}}},
		Opportunistic: []tunnel.OEStatus{
			{Destination: "203.0.113.9", Class: "private-or-clear", Verdict: "clear", Reason: "dnsoe: no IPSECKEY record", ExpiresInSeconds: i64(897)},
			{Destination: "203.0.113.10", Class: "private", Verdict: "drop", Reason: "no gateway answered", Source: "IPSECKEY", ExpiresInSeconds: i64(840)},
			{Destination: "203.0.113.11", Class: "private-or-clear", Verdict: "pending"},
		},
		AutoVPNPeers: []tunnel.AutoVPNPeerStatus{{Fingerprint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			DN: "CN=gw2.example.org", State: "trusted", SharedSecret: true, LastSeenSeconds: i64(300), Contact: "noc@example.org"}},
		Datapath: tunnel.DatapathCounters{ESPSent: 243, ESPReceived: 240, Clear: 17, NoSA: 2, Blocked: 5},
		Events: tunnel.EventCounters{IKEEstablished: 3, IKEFailed: map[string]uint64{"no_answer": 2, "auth": 0, "proposal": 0, "child_refused": 0, "other": 0},
			DNSLookups: map[string]uint64{"found": 1, "no_record": 1, "bogus": 0, "unvalidated": 0, "unusable_key": 0, "error": 0}, DNSCacheEntries: 2,
			OEFallbacks: map[string]uint64{"clear": 1, "drop": 1}},
		Bypass:  &tunnel.BypassStatus{Installed: 1},
		AutoVPN: &tunnel.AutoVPNCounters{ProbeRequests: 3, ProbeResponses: 3, Completed: 1},
		Memory:  tunnel.Memory{HeapLive: 3 << 20, HeapInUse: 5 << 20, RSS: 12 << 20, Goroutines: 41},
	}
}

// TestStatusGolden renders the status as text and as JSON and compares
// both with testdata (go test -run TestStatusGolden -update rewrites them).
func TestStatusGolden(t *testing.T) {
	st := goldenStatus()
	var text, js bytes.Buffer
	if err := printStatus(&text, st); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(&js, st, true); err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct {
		file string
		got  []byte
	}{{"status.txt", text.Bytes()}, {"status.json", js.Bytes()}} {
		path := filepath.Join("testdata", g.file)
		if *update {
			if err := os.WriteFile(path, g.got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.got, want) {
			t.Errorf("%s differs (go test -run TestStatusGolden -update to accept):\n%s", g.file, g.got)
		}
	}
	checkSchema(t, js.Bytes())
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// checkSchema checks the JSON rules of the status: snake_case keys, no
// null but for times ("…_seconds"), addresses never in Go's [a b] form.
func checkSchema(t *testing.T, js []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if !snakeCase.MatchString(k) {
					t.Errorf("%s.%s: key not snake_case", path, k)
				}
				if e == nil && !strings.HasSuffix(k, "_seconds") {
					t.Errorf("%s.%s: null", path, k)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range x {
				walk(path+"[]", e)
			}
		case string:
			if strings.HasPrefix(x, "[") {
				t.Errorf("%s: %q looks like a Go-formatted list", path, x)
			}
		}
	}
	walk("", v)
}

// TestStatusSchemaLive checks the schema rules on a running node's status
// (configured peer down, nothing else), where empty lists must still be
// arrays.
func TestStatusSchemaLive(t *testing.T) {
	ep, _ := startOffice(t, t.TempDir(), "")
	var js bytes.Buffer
	if err := writeJSON(&js, ep.status(), true); err != nil {
		t.Fatal(err)
	}
	checkSchema(t, js.Bytes())
	for _, want := range []string{`"ike_sas": []`, `"static_sas": []`, `"opportunistic": []`, `"autovpn_peers": []`, `"state": "down"`, `"start": "none"`} {
		if !strings.Contains(js.String(), want) {
			t.Errorf("status lacks %s:\n%s", want, js.String())
		}
	}
}

// officePeer is the configured peer of the tests' endpoints: PSK, at a
// port where nothing answers, brought up by nothing.
const officePeer = `
[[peer]]
name = "office"
address = "127.0.0.1"
ike_port = 9
natt_port = 9
auth = "psk"
psk = "a pre-shared key of some length"
local_id = "10.9.0.1"
remote_id = "gw.example.net"
local = ["10.9.0.1"]
remote = ["10.2.0.0/16"]
start = "none"
`

// officeConfig is a netstack endpoint's configuration with iface added to
// its [interface], the office peer, and more after it.
func officeConfig(iface, more string) string {
	return "[interface]\nmode = \"netstack\"\naddresses = [\"10.9.0.1/32\"]\nike_port = 0\nnatt_port = 0\n" + iface + officePeer + more
}

// startOffice starts, in this process, an endpoint of officeConfig("",
// more), written as dir/n.toml, and returns it and its control socket.
func startOffice(t *testing.T, dir, more string) (ep *endpoint, sock string) {
	t.Helper()
	p := filepath.Join(dir, "n.toml")
	if err := os.WriteFile(p, []byte(officeConfig("", more)), 0o600); err != nil {
		t.Fatal(err)
	}
	return testEndpoint(t, p), filepath.Join(dir, "c.sock")
}

// testEndpoint starts the endpoint of the configuration file at path,
// with its control socket in a temporary directory, until the test ends.
func testEndpoint(t *testing.T, path string) *endpoint {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Interface.Control = filepath.Join(filepath.Dir(path), "c.sock")
	ep, err := startEndpoint(cfg, "", slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	if err := ep.serveControl(cfg, -1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Stat(cfg.Interface.Control); err == nil || time.Now().After(deadline) {
			return ep
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestControlCommands drives a running endpoint through the CLI: status
// (text and JSON), up PEER, shunts and flush, with flags after the
// positional arguments too.
func TestControlCommands(t *testing.T) {
	ep, sock := startOffice(t, t.TempDir(), "")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "-s", sock}, 0, "peer office (configured, start none): down"},
		{[]string{"status", "-s", sock, "--json"}, 0, `"name": "office"`},
		{[]string{"up", "office", "-s", sock}, 0, "peer office: initiating"},
		{[]string{"up", "-s", sock, "nobody"}, 1, `no configured peer of that name: "nobody"`},
		{[]string{"shunts", "-s", sock}, 0, "no shunts"},
		{[]string{"shunts", "-s", sock, "--json"}, 0, "[]"},
		{[]string{"flush", "-s", sock}, 0, "0 shunt(s) flushed"},
		{[]string{"flush", "10.2.0.1", "-s", sock}, 0, "0 shunt(s) flushed"},
		{[]string{"flush", "-s", sock, "not-an-address"}, 1, "not an IP address"},
		{[]string{"flush", "-s", sock, "10.2.0.1", "10.2.0.2"}, 2, "oevpn flush"},
		{[]string{"down", "office", "-s", sock}, 0, "peer office:"},
	}
	// A configuration that names the socket but whose keys cannot be
	// read, in a file anyone may read: enough for the control commands.
	keyless := filepath.Join(filepath.Dir(sock), "keyless.toml")
	os.WriteFile(keyless, []byte(fmt.Sprintf("[interface]\ncontrol = %q\n\n[[peer]]\nname = \"x\"\nauth = \"pubkey\"\nprivate_key = \"/nonexistent.pem\"\npsk = \"x\"\n", sock)), 0o644)
	tests = append(tests, struct {
		args []string
		code int
		want string
	}{[]string{"status", "-c", keyless}, 0, "peer office"})
	for _, tt := range tests {
		code, out, errOut := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, tt.want) {
			t.Errorf("oevpn %s: exit %d, want %d; output lacks %q:\n%s%s", strings.Join(tt.args, " "), code, tt.code, tt.want, out, errOut)
		}
	}
	// up PEER started a negotiation: the peer is connecting (nothing
	// answers on port 9) or already shows why it failed.
	if st := ep.status(); st.Peers[0].State == tunnel.PeerUp {
		t.Errorf("peer up against nothing: %+v", st.Peers[0])
	}
}
