package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
)

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// checkExposition checks text against Prometheus's text exposition format
// (0.0.4), strictly: every family has one HELP and one TYPE before its
// samples and its samples together; names and label names are valid,
// label values quoted with only \\, \" and \n escapes; values are
// numbers; no series twice; counters end in _total; and oevpn's
// conventions: every name starts with oevpn_. It returns the samples by
// series ("name{labels}").
func checkExposition(t *testing.T, text string) map[string]float64 {
	t.Helper()
	if !strings.HasSuffix(text, "\n") {
		t.Fatal("the exposition does not end in a newline")
	}
	samples := map[string]float64{}
	types := map[string]string{}
	helps := map[string]bool{}
	done := map[string]bool{} // families whose samples are over
	current := ""
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(format string, args ...any) { t.Errorf("line %d %q: %s", i+1, line, fmt.Sprintf(format, args...)) }
		if strings.HasPrefix(line, "#") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 3 || (f[1] != "HELP" && f[1] != "TYPE") {
				fail("a comment that is neither HELP nor TYPE")
				continue
			}
			name := f[2]
			if !metricName.MatchString(name) || !strings.HasPrefix(name, "oevpn_") {
				fail("bad metric name")
			}
			if done[name] || (current != "" && current != name && (types[name] != "" || helps[name])) {
				fail("family %s declared again", name)
			}
			if current != name {
				if current != "" {
					done[current] = true
				}
				current = name
			}
			switch f[1] {
			case "HELP":
				if helps[name] || len(f) < 4 {
					fail("HELP twice or empty")
				}
				helps[name] = true
			case "TYPE":
				if types[name] != "" || len(f) != 4 {
					fail("TYPE twice or malformed")
				}
				switch f[3] {
				case "counter":
					if !strings.HasSuffix(name, "_total") {
						fail("a counter whose name does not end in _total")
					}
				case "gauge":
					if strings.HasSuffix(name, "_total") {
						fail("a gauge named _total")
					}
				default:
					fail("type %q", f[3])
				}
				types[name] = f[3]
			}
			continue
		}
		// name[{labels}] value
		name, rest := line, ""
		if j := strings.IndexAny(line, "{ "); j >= 0 {
			name, rest = line[:j], line[j:]
		}
		if name != current || types[name] == "" || !helps[name] {
			fail("sample of %s outside its family (current %s), or before its HELP and TYPE", name, current)
		}
		var labels []string
		if strings.HasPrefix(rest, "{") {
			rest = rest[1:]
			for {
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					fail("label without =\"")
					break
				}
				ln := rest[:eq]
				if !labelName.MatchString(ln) || strings.HasPrefix(ln, "__") {
					fail("bad label name %q", ln)
				}
				rest = rest[eq+2:]
				var val strings.Builder
				k := 0
				for ; k < len(rest) && rest[k] != '"'; k++ {
					if rest[k] == '\\' {
						k++
						if k == len(rest) || !strings.ContainsRune(`\"n`, rune(rest[k])) {
							fail("bad escape in a label value")
							break
						}
						if rest[k] == 'n' {
							val.WriteByte('\n')
							continue
						}
					} else if rest[k] == '\n' {
						fail("raw newline in a label value")
					}
					val.WriteByte(rest[k])
				}
				if k >= len(rest) {
					fail("unterminated label value")
					break
				}
				labels = append(labels, ln+"="+val.String())
				rest = rest[k+1:]
				if strings.HasPrefix(rest, ",") {
					rest = rest[1:]
					continue
				}
				if !strings.HasPrefix(rest, "}") {
					fail("labels not closed")
				}
				rest = rest[1:]
				break
			}
		}
		if !strings.HasPrefix(rest, " ") || strings.Count(rest, " ") != 1 {
			fail("want one space then the value (no timestamp)")
			continue
		}
		v, err := strconv.ParseFloat(rest[1:], 64)
		if err != nil {
			fail("value: %v", err)
		}
		series := name + "{" + strings.Join(labels, ",") + "}"
		if _, dup := samples[series]; dup {
			fail("series twice")
		}
		samples[series] = v
	}
	for name := range types {
		if !helps[name] {
			t.Errorf("%s has no HELP", name)
		}
	}
	return samples
}

// TestMetricsGolden renders the golden status (with a hostile peer name)
// as metrics and checks the format and some values.
func TestMetricsGolden(t *testing.T) {
	st := goldenStatus()
	st.Peers[2].Name = "oe-out-\"evil\\\n{x=\"1\"} 3"
	text := string(writeMetrics(st))
	got := checkExposition(t, text)
	for series, want := range map[string]float64{
		`oevpn_peers{kind=configured,state=up}`:                                                  1,
		`oevpn_peers{kind=configured,state=down}`:                                                1,
		`oevpn_peers{kind=added,state=up}`:                                                       0,
		`oevpn_peer_up{peer=office}`:                                                             1,
		`oevpn_peer_up{peer=backup}`:                                                             0,
		`oevpn_sa_bytes_total{peer=office,spi_in=c0a80001,direction=in}`:                         98304,
		`oevpn_sa_packets_total{peer=static:192.0.2.3:4500,spi_in=00001001,direction=out}`:       5,
		`oevpn_dropped_packets_total{reason=blocked}`:                                            5,
		`oevpn_opportunistic_destinations{verdict=drop}`:                                         1,
		`oevpn_autovpn_peers{state=trusted}`:                                                     1,
		`oevpn_autovpn_probes_sent_total{type=request}`:                                          3,
		"oevpn_sa_packets_total{peer=oe-out-\"evil\\\n{x=\"1\"} 3,spi_in=c0000002,direction=in}": 120,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}
}

// TestMetricsEndpoint runs an endpoint with [interface] metrics and scrapes
// it over HTTP; and with log_format = "json" every log line is a JSON
// object.
func TestMetricsEndpoint(t *testing.T) {
	p := filepath.Join(t.TempDir(), "n.toml")
	os.WriteFile(p, []byte(`[interface]
mode = "netstack"
addresses = ["10.9.0.1/32"]
ike_port = 0
natt_port = 0
metrics = "127.0.0.1:0"
log_format = "json"

[policy]
block = ["10.4.0.0/24"]
`), 0o600)
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Interface.Control = filepath.Join(filepath.Dir(p), "c.sock")
	var logs lockedBuf
	log := newLogger(&logs, "info", cfg.Interface.LogFormat)
	ep, err := startEndpoint(cfg, "", log)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	if err := ep.serveMetrics(cfg, log); err != nil {
		t.Fatal(err)
	}
	var url string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if rec["msg"] == "metrics" {
			url, _ = rec["url"].(string)
		}
	}
	if url == "" {
		t.Fatalf("no metrics URL logged:\n%s", logs.String())
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	got := checkExposition(t, string(body))
	if got[`oevpn_info{version=devel,mode=netstack}`] != 1 || got[`oevpn_ike_failures_total{reason=no_answer}`] != 0 {
		t.Errorf("metrics:\n%s", body)
	}
}

// lockedBuf is a bytes.Buffer for a logger and a reader.
type lockedBuf struct {
	mu chan struct{}
	b  bytes.Buffer
}

func (l *lockedBuf) lock() {
	if l.mu == nil {
		l.mu = make(chan struct{}, 1)
	}
	l.mu <- struct{}{}
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.lock()
	defer func() { <-l.mu }()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.lock()
	defer func() { <-l.mu }()
	return l.b.String()
}
