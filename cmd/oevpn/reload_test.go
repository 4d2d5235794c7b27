//go:build !windows

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
)

// TestReloadCommand drives `oevpn reload` against a running endpoint
// (netstack, in this process) through each kind of edit of its file: what
// reload applies, with its report, and what it refuses, with the file,
// line and key, leaving the endpoint as it was.
func TestReloadCommand(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "n.toml")
	sock := filepath.Join(dir, "c.sock")
	base := officeConfig(fmt.Sprintf("control = %q\n", sock), "")
	home := `
[[peer]]
name = "home"
address = "127.0.0.2"
auth = "psk"
psk = "another pre-shared key, as long"
local_id = "10.9.0.1"
remote_id = "home.example.net"
local = ["10.9.0.1"]
remote = ["10.3.0.0/16"]
start = "none"
`
	os.WriteFile(p, []byte(base), 0o600)
	ep := testEndpoint(t, p)
	tests := []struct {
		name string
		file string
		mode os.FileMode
		code int
		want string // a regular expression
		// peers are the configured peers after it, in the file's order
		peers []string
	}{
		{"unchanged", base, 0o600, 0, `peer office: unchanged: its SAs kept`, []string{"office"}},
		{"added", base + home, 0o600, 0, `peer home: added\n  peer office: unchanged`, []string{"office", "home"}},
		{"policy", strings.Replace(base+home, "[[peer]]", "[policy]\nblock = [\"10.66.0.0/16\"]\n\n[[peer]]", 1), 0o600, 0,
			`peer home: unchanged.*\n.*peer office: unchanged.*\n  policy: changed, 0 opportunistic verdict\(s\) flushed`, []string{"office", "home"}},
		{"removed and changed", strings.Replace(base, "ike_port = 9", "ike_port = 10", 1), 0o600, 0,
			`peer home: removed: its SAs deleted\n  peer office: changed: its SAs deleted, negotiated again\n  policy: changed`, []string{"office"}},
		{"typo", strings.Replace(base, "remote = [", "remtoe = [", 1), 0o600, 1, `n\.toml:18: peer.*remtoe`, []string{"office"}},
		{"needs a restart", strings.Replace(base, "natt_port = 0", "natt_port = 0\nmtu = 1300", 1), 0o600, 1,
			`n\.toml:6: interface\.mtu: cannot change while running: restart oevpn to apply it`, []string{"office"}},
		{"opportunism on", strings.Replace(base, "[[peer]]", "[policy]\nprivate-or-clear = [\"10.70.0.0/16\"]\n\n[[peer]]", 1), 0o600, 1,
			`n\.toml:\d+: policy\.private-or-clear: cannot change while running \(it turns opportunism on or off\)`, []string{"office"}},
		{"clear path", strings.Replace(base, "[[peer]]", "[policy]\nclear = [\"10.71.0.0/16\"]\n\n[[peer]]", 1), 0o600, 0,
			`policy: changed`, []string{"office"}}, // netstack: the forwarder is always there
		{"insecure file", base, 0o644, 1, `n\.toml: .*0644`, []string{"office"}},
		{"duplicate peer", base + strings.Replace(base[strings.Index(base, "[[peer]]"):], "10.2.0.0", "10.4.0.0", 1), 0o600, 1,
			`office`, []string{"office"}},
	}
	for _, tt := range tests {
		os.WriteFile(p, []byte(tt.file), tt.mode)
		os.Chmod(p, tt.mode)
		code, out, errOut := runCLI("reload", "-s", sock)
		if code != tt.code || !regexp.MustCompile(tt.want).MatchString(out+errOut) {
			t.Errorf("%s: oevpn reload: exit %d, want %d, and output matching %q:\n%s%s", tt.name, code, tt.code, tt.want, out, errOut)
		}
		var got []string
		for _, pr := range ep.Config().Peers {
			got = append(got, pr.IKE.Name)
		}
		if strings.Join(got, " ") != strings.Join(tt.peers, " ") {
			t.Errorf("%s: configured peers %v, want %v", tt.name, got, tt.peers)
		}
	}

	// --json: one object, lists as arrays.
	os.WriteFile(p, []byte(base), 0o600)
	os.Chmod(p, 0o600)
	code, out, errOut := runCLI("reload", "-s", sock, "--json")
	var res map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("reload --json: exit %d: %s%s", code, out, errOut)
	}
	for _, k := range []string{"added", "removed", "changed", "unchanged", "opportunistic_ended", "routes_added"} {
		if _, ok := res[k].([]any); !ok {
			t.Errorf("reload --json: %q is %v, not an array", k, res[k])
		}
	}
	if res["config"] != p {
		t.Errorf("reload --json: config %v, want %s", res["config"], p)
	}
}

// TestRefuseLive names the key of each change that needs a restart, with
// its line, and lets through what reload applies.
func TestRefuseLive(t *testing.T) {
	const base = `[interface]
mode = "tun"
name = "oevpn7"

[[peer]]
name = "gw"
address = "192.0.2.2"
auth = "psk"
psk = "a pre-shared key of some length"
local_id = "10.9.0.1"
local = ["10.9.0.1"]
remote = ["10.2.0.0/16"]
`
	parse := func(text string) *config.Config {
		t.Helper()
		c, err := config.Parse("x.toml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := parse(base)
	for _, tt := range []struct{ name, text, want string }{
		{"unchanged", base, ""},
		{"peer changed", strings.Replace(base, "10.2.0.0/16", "10.3.0.0/16", 1), ""},
		{"block prefix", base + "\n[policy]\nblock = [\"10.66.0.0/16\"]\n", ""},
		{"interface name", strings.Replace(base, "oevpn7", "oevpn8", 1), "x.toml:3: interface.name: cannot change while running"},
		{"interface table", strings.Replace(base, `name = "oevpn7"`, "name = \"oevpn7\"\ntable = 1234", 1), "x.toml:4: interface.table:"},
		{"first clear prefix", base + "\n[policy]\nclear = [\"10.71.0.0/16\"]\n", "x.toml:15: policy.clear: cannot change while running (the first clear prefix needs the clear path"},
		{"opportunism on", base + "\n[policy]\nprivate = [\"10.72.0.0/16\"]\n", "x.toml:15: policy.private: cannot change while running (it turns opportunism on or off)"},
		{"static SA", base + "\n[[sa]]\npeer = \"192.0.2.2:4500\"\nlocal = [\"10.9.0.1\"]\nremote = [\"10.5.0.1\"]\ntransform = \"aes-gcm-256\"\nspi_out = 256\nspi_in = 257\n" +
			"key_out = \"" + strings.Repeat("ab", 36) + "\"\nkey_in = \"" + strings.Repeat("cd", 36) + "\"\n", "x.toml:15: sa[0].peer: cannot change while running"},
	} {
		err := refuseLive(old, parse(tt.text))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
