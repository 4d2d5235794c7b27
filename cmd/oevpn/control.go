package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/internal/config"
	"github.com/oevpn/oevpn/policy"
	"github.com/oevpn/oevpn/tunnel"
)

// The control API: HTTP with JSON bodies on a unix socket (AF_UNIX also
// exists on Windows 10 and later). Only root (the socket is 0600) may use it.

// Status is what GET /status returns.
type Status struct {
	Version string       `json:"version"`
	Device  string       `json:"device"`
	Mode    string       `json:"mode"`
	Ports   [2]uint16    `json:"ports"`
	IKESAs  []IKEStatus  `json:"ike_sas"`
	Static  []SAStatus   `json:"static_sas"`
	Stats   tunnel.Stats `json:"datapath"`
	// ClearPath is how packets leave in the clear: "raw" sockets, the
	// "forwarder", or "none" (dropped).
	ClearPath string `json:"clear_path"`
	// Outside is the interface oevpn's own sockets are bound to, if any.
	Outside string `json:"outside,omitempty"`
	// AutoVPN counts the probe messages, when AutoVPN runs.
	AutoVPN *tunnel.AutoVPNStats `json:"autovpn,omitempty"`
	// IKE counts what the IKE daemon dropped or answered without state.
	IKE *ike.Stats `json:"ike,omitempty"`
}

// IKEStatus describes one IKE SA.
type IKEStatus struct {
	Peer       string     `json:"peer"`
	Remote     string     `json:"remote"`
	State      string     `json:"state"`
	Initiator  bool       `json:"initiator"`
	LocalID    string     `json:"local_id"`
	RemoteID   string     `json:"remote_id"`
	Auth       string     `json:"auth"`
	Algorithms string     `json:"algorithms"`
	SPIi       string     `json:"spi_i"`
	SPIr       string     `json:"spi_r"`
	AgeSeconds float64    `json:"age_seconds"`
	Children   []SAStatus `json:"child_sas"`
}

// SAStatus describes one Child SA (or static SA pair).
type SAStatus struct {
	Algorithms string       `json:"algorithms"`
	SPIIn      string       `json:"spi_in"`
	SPIOut     string       `json:"spi_out"`
	Local      string       `json:"local"`
	Remote     string       `json:"remote"`
	Peer       string       `json:"peer"`
	AgeSeconds float64      `json:"age_seconds"`
	In         esp.Counters `json:"in"`
	Out        esp.Counters `json:"out"`
}

func pairStatus(p *tunnel.SAPair, alg string) SAStatus {
	if alg == "" {
		alg = p.Out.Transform().String()
	}
	return SAStatus{Algorithms: alg, SPIIn: fmt.Sprintf("%08x", p.In.SPI()), SPIOut: fmt.Sprintf("%08x", p.Out.SPI()),
		Local: fmt.Sprint(p.Local), Remote: fmt.Sprint(p.Remote), Peer: p.Peer.String(),
		AgeSeconds: time.Since(p.Out.Created()).Seconds(), In: p.In.Counters(), Out: p.Out.Counters()}
}

func (ep *endpoint) status(cfg *config.Config) Status {
	ikePort, natt := ep.eng.Ports()
	st := Status{Version: version, Device: cfg.Interface.Name, Mode: cfg.Interface.Mode, Ports: [2]uint16{ikePort, natt},
		Stats: ep.eng.Stats(), ClearPath: ep.clearPath, Outside: ep.outside.Interface}
	if ep.av != nil {
		avs := ep.av.Stats()
		st.AutoVPN = &avs
	}
	owned := map[*tunnel.SAPair]bool{}
	if ep.ike != nil {
		is := ep.ike.Stats()
		st.IKE = &is
		for _, sa := range ep.ike.SAs() {
			is := IKEStatus{Peer: sa.Peer, Remote: sa.Remote.String(), State: sa.State, Initiator: sa.Initiator,
				LocalID: sa.LocalID, RemoteID: sa.PeerID, Auth: sa.Auth, Algorithms: sa.Suite.String(),
				SPIi: fmt.Sprintf("%016x", sa.SPIi), SPIr: fmt.Sprintf("%016x", sa.SPIr), AgeSeconds: time.Since(sa.Created).Seconds()}
			for _, c := range sa.Children {
				if p, ok := c.Handle.(*tunnel.SAPair); ok {
					owned[p] = true
					is.Children = append(is.Children, pairStatus(p, c.Suite.String()))
				}
			}
			st.IKESAs = append(st.IKESAs, is)
		}
	}
	for _, p := range ep.eng.Pairs() {
		if !owned[p] {
			st.Static = append(st.Static, pairStatus(p, ""))
		}
	}
	sort.Slice(st.IKESAs, func(i, j int) bool { return st.IKESAs[i].Peer < st.IKESAs[j].Peer })
	sort.Slice(st.Static, func(i, j int) bool { return st.Static[i].SPIIn < st.Static[j].SPIIn })
	return st
}

// serveControl listens on the control socket until the endpoint closes.
func (ep *endpoint) serveControl(cfg *config.Config) error {
	path := cfg.Interface.Control
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	// A socket left by a crashed run: remove it if nobody answers on it.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another oevpn is running there", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ep.status(cfg))
	})
	mux.HandleFunc("POST /down/{peer}", func(w http.ResponseWriter, r *http.Request) {
		if ep.ike == nil {
			http.Error(w, "no IKE peers configured", http.StatusNotFound)
			return
		}
		n, err := ep.ike.Down(r.PathValue("peer"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(map[string]int{"deleted_ike_sas": n})
	})
	ep.handleTrustStore(mux)
	mux.HandleFunc("GET /check/{addr}", func(w http.ResponseWriter, r *http.Request) {
		a, err := netip.ParseAddr(r.PathValue("addr"))
		if err != nil {
			http.Error(w, "not an IP address: "+r.PathValue("addr"), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ep.check(a))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ep.closers = append(ep.closers, func() { srv.Close(); os.Remove(path) })
	go srv.Serve(ln)
	return nil
}

// Check is what GET /check/ADDR returns: what happens to traffic to ADDR.
type Check struct {
	Addr string `json:"addr"`
	// Verdict is "encrypted-and-authenticated", "encrypted-unauthenticated",
	// "pending" (an SA will be negotiated when traffic comes), "blocked"
	// or "clear".
	Verdict string `json:"verdict"`
	Peer    string `json:"peer,omitempty"`
	Reason  string `json:"reason"`
}

// check answers what happens now to traffic to a: the question the IETF 89
// slides wanted a socket option for.
func (ep *endpoint) check(a netip.Addr) Check {
	a = a.Unmap()
	c := Check{Addr: a.String()}
	for _, p := range ep.eng.Pairs() {
		for _, s := range p.Remote {
			if !s.Contains(a) {
				continue
			}
			c.Peer = p.Peer.String()
			c.Verdict, c.Reason = "encrypted-and-authenticated", "static SA with pre-shared keys"
			if ch, ok := p.Owner.(*ike.ChildSA); ok {
				c.Reason = "IKE SA authenticated by " + ch.PeerAuthMethod()
				if ch.PeerAuthMethod() == "null" {
					c.Verdict, c.Reason = "encrypted-unauthenticated", "IKE SA with AUTH_NULL (RFC 7619)"
				}
			}
			return c
		}
	}
	if name, ok := ep.eng.TrapFor(a); ok {
		c.Verdict, c.Peer, c.Reason = "pending", name, "an SA is negotiated with the peer when traffic comes"
		return c
	}
	if cl := ep.eng.Classes(); cl != nil {
		class := cl.ClassOf(a)
		if v, until, ok := ep.eng.VerdictFor(a); ok && class != policy.ClassBlock {
			switch v {
			case tunnel.VerdictPending:
				c.Verdict, c.Reason = "pending", "policy: "+class.String()+"; discovery and IKE under way"
			case tunnel.VerdictClear:
				c.Verdict, c.Reason = "clear", fmt.Sprintf("policy: %v; opportunism failed, clear until %s", class, until.Format(time.RFC3339))
			default:
				c.Verdict, c.Reason = "blocked", fmt.Sprintf("policy: %v; opportunism failed, dropped until %s", class, until.Format(time.RFC3339))
			}
			return c
		}
		switch class {
		case policy.ClassBlock:
			c.Verdict, c.Reason = "blocked", "policy: block"
			return c
		case policy.ClassPrivate, policy.ClassPrivateOrClear:
			c.Verdict, c.Reason = "pending", "policy: "+class.String()+"; the first packet starts discovery (DNS) and IKE"
			return c
		case policy.ClassClearOrPrivate:
			c.Verdict, c.Reason = "clear", "policy: clear-or-private; encrypted only if the peer initiates"
			return c
		}
	}
	c.Verdict, c.Reason = "clear", "no SA and no peer covers this address: oevpn does not route it"
	return c
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	sock, asJSON, rest, err := controlCommand("check", 1, "ADDRESS", args, stderr)
	if err != nil {
		return err
	}
	var c Check
	if err := controlGet(sock, "/check/"+rest[0], &c); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, c, false)
	}
	peer := ""
	if c.Peer != "" {
		peer = " (peer " + c.Peer + ")"
	}
	fmt.Fprintf(stdout, "%s: %s%s: %s\n", printable(c.Addr), printable(c.Verdict), printable(peer), printable(c.Reason))
	return nil
}

func controlClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
}

// controlCommand parses the flags every control command has (-s, -c,
// --json) and checks that it got nargs arguments; usage names them.
func controlCommand(name string, nargs int, usage string, args []string, stderr io.Writer) (sock string, asJSON bool, rest []string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sockFn := socketFlags(fs)
	j := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return "", false, nil, err
	}
	if fs.NArg() != nargs {
		return "", false, nil, fmt.Errorf("%w: oevpn %s [-s SOCKET | -c FILE] %s", errUsage, name, usage)
	}
	sock, err = sockFn()
	return sock, *j, fs.Args(), err
}

// socketFlags adds the flags that find an endpoint's control socket.
func socketFlags(fs *flag.FlagSet) func() (string, error) {
	sock := fs.String("s", "", "control `socket` (default: from -c, or "+config.DefaultControl(config.DefaultName)+")")
	cfgPath := fs.String("c", "", "the endpoint's configuration `file`, to find its control socket")
	return func() (string, error) {
		if *sock != "" {
			return *sock, nil
		}
		if *cfgPath != "" {
			c, err := config.Load(*cfgPath)
			if err != nil {
				return "", err
			}
			return c.Interface.Control, nil
		}
		return config.DefaultControl(config.DefaultName), nil
	}
}

func controlGet(path, url string, out any) error {
	resp, err := controlClient(path).Get("http://oevpn" + url)
	if err != nil {
		return fmt.Errorf("is oevpn running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New(printable(strings.TrimSpace(string(b))))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// controlPost sends a POST to the control socket and returns the body of
// a 200 answer; other answers become the error they carry.
func controlPost(path, url string) ([]byte, error) {
	resp, err := controlClient(path).Post("http://oevpn"+url, "application/json", nil)
	if err != nil {
		return nil, fmt.Errorf("is oevpn running? %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(printable(strings.TrimSpace(string(b))))
	}
	return b, nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	sock, asJSON, _, err := controlCommand("status", 0, "", args, stderr)
	if err != nil {
		return err
	}
	var st Status
	if err := controlGet(sock, "/status", &st); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, st, true)
	}
	// Every string is printed through printable: identities and peer
	// names come from peers.
	fmt.Fprintf(stdout, "oevpn %s  device %s (%s)  ports ike %d natt %d  clear path %s\n", printable(st.Version), printable(st.Device),
		printable(st.Mode), st.Ports[0], st.Ports[1], printable(st.ClearPath))
	if st.Outside != "" {
		fmt.Fprintf(stdout, "own packets leave by %s\n", printable(st.Outside))
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, sa := range st.IKESAs {
		role := "responder"
		if sa.Initiator {
			role = "initiator"
		}
		fmt.Fprintf(tw, "\npeer %s\t%s\t%s, %s\tage %s\n", printable(sa.Peer), printable(sa.Remote), printable(sa.State), role, dur(sa.AgeSeconds))
		fmt.Fprintf(tw, "  ike\t%s <-> %s\tauth %s\t%s\tspi %s_i %s_r\n", printable(sa.LocalID), printable(sa.RemoteID), printable(sa.Auth),
			printable(sa.Algorithms), printable(sa.SPIi), printable(sa.SPIr))
		for _, c := range sa.Children {
			printChild(tw, c)
		}
	}
	if len(st.Static) > 0 {
		fmt.Fprintf(tw, "\nstatic SAs\n")
		for _, c := range st.Static {
			printChild(tw, c)
		}
	}
	if len(st.IKESAs)+len(st.Static) == 0 {
		fmt.Fprintf(tw, "\nno SAs\n")
	}
	if a := st.AutoVPN; a != nil {
		p := a.Probe
		fmt.Fprintf(tw, "\nautovpn\tprobes sent: %d requests, %d responses, %d completes\tcompleted %d\tdropped %d\tnot sent: 24 h or rate limit %d, flow too small %d\tintercepted %d\n",
			p.Requests, p.Responses, p.Completes, p.Completed, p.Dropped, p.Limited, p.Unpaid, a.Intercepted)
	}
	return tw.Flush()
}

func printChild(w io.Writer, c SAStatus) {
	fmt.Fprintf(w, "  child\t%s === %s\t%s\tspi in %s out %s\tage %s\n", printable(c.Local), printable(c.Remote), printable(c.Algorithms),
		printable(c.SPIIn), printable(c.SPIOut), dur(c.AgeSeconds))
	fmt.Fprintf(w, "  \tin %d packets %d bytes\tout %d packets %d bytes\treplayed %d, failed integrity %d\n",
		c.In.Packets, c.In.Bytes, c.Out.Packets, c.Out.Bytes, c.In.ReplayDrops, c.In.IntegrityFailures)
}

func dur(s float64) string { return (time.Duration(s) * time.Second).String() }

func cmdDown(args []string, stdout, stderr io.Writer) error {
	sock, asJSON, rest, err := controlCommand("down", 1, "PEER", args, stderr)
	if err != nil {
		return err
	}
	peer := rest[0]
	b, err := controlPost(sock, "/down/"+peer)
	if err != nil {
		return err
	}
	if asJSON {
		stdout.Write(b)
		return nil
	}
	var r map[string]int
	json.Unmarshal(b, &r)
	fmt.Fprintf(stdout, "peer %s: %d IKE SA(s) deleted\n", printable(peer), r["deleted_ike_sas"])
	return nil
}
