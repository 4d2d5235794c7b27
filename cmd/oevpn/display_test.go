package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/tunnel"
)

// hostile is what a peer puts in its certificate's DN, its contact
// details or its IKE identity to take over the operator's terminal: an
// OSC title, BEL, a screen clear, a C1 CSI, a forged line and column,
// a bidirectional override, DEL and a stray byte.
const hostile = "gw\x1b]0;owned\a\x1b[2J\u009b31m\r\nFAKE 0123456789abcdef  trusted\t\u202egpj.exe\x7f\xff"

// checkTerminal fails if out carries anything a terminal acts on, other
// than the newlines of its want lines.
func checkTerminal(t *testing.T, what, out string, wantLines int) {
	t.Helper()
	for i := 0; i < len(out); {
		r, n := utf8.DecodeRuneInString(out[i:])
		switch {
		case r == utf8.RuneError && n == 1, r < 0x20 && r != '\n', r == 0x7f, r >= 0x80 && r <= 0x9f, r == 0x202e:
			t.Errorf("%s: %U reaches the terminal at byte %d:\n%q", what, r, i, out)
			return
		}
		i += n
	}
	if wantLines > 0 {
		if n := strings.Count(out, "\n"); n != wantLines {
			t.Errorf("%s: %d lines, want %d:\n%s", what, n, wantLines, out)
		}
	}
}

func TestPrintable(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"CN=gw.example,O=Lab\\, Inc.", "CN=gw.example,O=Lab\\, Inc."},
		{"Grüße, 東京 — call 555-0101", "Grüße, 東京 — call 555-0101"},
		{"a\x1b[2Jb", `a\x1b[2Jb`},
		{"bell\a", `bell\a`},
		{"two\nlines\r", `two\nlines\r`},
		{"col\tumn", `col\tumn`},
		{"c1\u009b31m", `c1\u009b31m`},
		{"\u202eexe.txt", `\u202eexe.txt`},
		{"del\x7f", `del\x7f`},
		{"bad\xffutf8", `bad\xffutf8`},
	} {
		if got := printable(c.in); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestTerminalInjection performs issue 10 item 16: a peer whose DN,
// contact details and identity carry terminal controls is shown by
// `oevpn peers`, `oevpn status`, `oevpn check`, the trust commands and in
// JSON; none of its controls may reach the terminal.
func TestTerminalInjection(t *testing.T) {
	dir := t.TempDir()
	// A trust store that learned the hostile peer.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: strings.ToValidUTF8(hostile, "?")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	storePath := filepath.Join(dir, "peers")
	store, err := policy.OpenTrustStore(storePath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Seen(cert, hostile, netip.Addr{}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		run(args, &out, &errb)
		checkTerminal(t, strings.Join(args, " ")+" (stderr)", errb.String(), 0)
		return out.String()
	}
	// peers: a header, the peer, its contact: three lines.
	checkTerminal(t, "oevpn peers", cli("peers", "-store", storePath), 3)
	js := cli("peers", "-store", storePath, "--json")
	checkTerminal(t, "oevpn peers --json", js, 1)
	var peers []PeerInfo
	if err := json.Unmarshal([]byte(js), &peers); err != nil || len(peers) != 1 || peers[0].DN != cert.Subject.String() {
		t.Errorf("the JSON does not decode to the DN: %v %+v", err, peers)
	}
	fp := policy.Fingerprint(cert.Raw)
	checkTerminal(t, "oevpn trust", cli("trust", "-store", storePath, fp), 1)

	// status, check and a daemon error, from a control socket that relays
	// the peer's identity.
	sock := filepath.Join(dir, "control")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(tunnel.Status{Version: "test", Device: "oe0", Mode: "gateway", ClearPath: "raw",
			Peers: []tunnel.PeerStatus{{Name: "av-in-" + hostile, Kind: "autovpn", State: "up", LastError: hostile,
				IKESAs: []tunnel.IKESAStatus{{Remote: "192.0.2.1:4500", State: "established", LocalID: "CN=us",
					RemoteID: hostile, Auth: "signature", Suite: "aes256gcm16", SPIi: "01", SPIr: "02",
					ChildSAs: []tunnel.ChildSAStatus{{LocalTS: []string{"10.0.0.1/32"}, RemoteTS: []string{hostile}, Suite: "aes256gcm16"}}}}}},
			Opportunistic: []tunnel.OEStatus{{Destination: hostile, Reason: hostile, Verdict: "drop"}},
			AutoVPNPeers:  []tunnel.AutoVPNPeerStatus{{Fingerprint: hostile, DN: hostile, State: "trusted"}}})
	})
	mux.HandleFunc("GET /check/{addr}", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(Check{Addr: r.PathValue("addr"), Verdict: "encrypted-and-authenticated", Peer: hostile, Reason: hostile})
	})
	mux.HandleFunc("POST /autovpn/peers/{key}/{action}", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "policy: no such peer: "+hostile, http.StatusNotFound)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	st := cli("status", "-s", sock)
	checkTerminal(t, "oevpn status", st, 0)
	if !strings.Contains(st, `\x1b]0;owned\a`) {
		t.Errorf("oevpn status does not show the identity escaped:\n%s", st)
	}
	checkTerminal(t, "oevpn status --json", cli("status", "-s", sock, "--json"), 0)
	checkTerminal(t, "oevpn check", cli("check", "-s", sock, "192.0.2.1"), 1)
	checkTerminal(t, "oevpn check --json", cli("check", "-s", sock, "--json", "192.0.2.1"), 1)
	cli("untrust", "-s", sock, "00112233")

	// Log lines: log/slog's text handler quotes what it must.
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("AutoVPN: peer authenticated", "dn", hostile, "contact", hostile)
	checkTerminal(t, "a log line", logs.String(), 1)
}

// TestWriteJSON: what writeJSON escapes decodes to the same strings.
func TestWriteJSON(t *testing.T) {
	in := map[string]string{"k": hostile + " \U0001F600 \U000E0041 東京"}
	var buf bytes.Buffer
	if err := writeJSON(&buf, in, true); err != nil {
		t.Fatal(err)
	}
	checkTerminal(t, "writeJSON", buf.String(), 3)
	var out map[string]string
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil || out["k"] != strings.ToValidUTF8(in["k"], "\uFFFD") {
		t.Fatalf("round trip: %v %q", err, out["k"])
	}
}
