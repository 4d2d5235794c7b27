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
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/tunnel"
)

// The control API: HTTP with JSON bodies on a unix socket (AF_UNIX also
// exists on Windows 10 and later). The socket is 0600 in a directory of
// ours, mode 0700 (0660 and 0750, the control group's, with
// interface.control_group); requests that change state (every method but
// GET) are also refused unless the caller's credentials say root, oevpn's
// own user or a member of the control group.

// callerKey is the context key of the caller of a control connection.
type callerKey struct{}

// caller is who is at the other end of a control connection.
type caller struct {
	uid  int
	gids []int // the groups the credentials carry (Linux: the primary one)
	err  error // the credentials could not be read
}

// callerOf reads the credentials of the peer of a control connection.
func callerOf(c net.Conn) caller {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return caller{uid: -1, err: errors.New("not a socket")}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return caller{uid: -1, err: err}
	}
	cl := caller{uid: -1}
	if err := raw.Control(func(fd uintptr) { cl.uid, cl.gids, cl.err = peerCred(fd) }); err != nil {
		cl.err = err
	}
	return cl
}

// inGroup reports whether the caller is in group gid: by its credentials,
// or as a member in the user database (/etc/group).
func (cl caller) inGroup(gid int) bool {
	if gid < 0 {
		return false
	}
	if slices.Contains(cl.gids, gid) {
		return true
	}
	u, err := user.LookupId(strconv.Itoa(cl.uid))
	if err != nil {
		return false
	}
	ids, _ := u.GroupIds()
	return slices.Contains(ids, strconv.Itoa(gid))
}

// authorize refuses requests that change state (down, trust, untrust,
// forget: every method but GET and HEAD) from anyone but root, oevpn's own
// user and the members of the control group gid (-1: none). Reading
// (status, check, peers) takes only being able to connect, which the
// socket's mode decides.
func authorize(next http.Handler, gid int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && peerCredentials {
			cl, _ := r.Context().Value(callerKey{}).(caller)
			switch {
			case cl.err != nil:
				http.Error(w, "refused: cannot tell who is calling: "+cl.err.Error(), http.StatusForbidden)
				return
			case cl.uid != 0 && cl.uid != os.Geteuid() && !cl.inGroup(gid):
				http.Error(w, fmt.Sprintf("refused: uid %d may not change oevpn's state (root, uid %d or the control group may)", cl.uid, os.Geteuid()), http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// status is what GET /status returns: the node's, and our version.
func (ep *endpoint) status() tunnel.Status {
	st := ep.Status()
	st.Version = version
	return st
}

// serveControl listens on the control socket until the endpoint closes.
// cmdUp prepared its directory and holds its instance lock; gid is the
// control group's (-1: none).
func (ep *endpoint) serveControl(cfg *config.Config, gid int) error {
	path := cfg.Interface.Control
	ln, err := listenControl(path, gid)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ep.status())
	})
	mux.HandleFunc("POST /up/{peer}", func(w http.ResponseWriter, r *http.Request) {
		if err := ep.Up(r.PathValue("peer")); err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, tunnel.ErrNoPeer) {
				status = http.StatusNotFound
			}
			http.Error(w, err.Error(), status)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"initiated": r.PathValue("peer")})
	})
	mux.HandleFunc("GET /shunts", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ep.Shunts())
	})
	flush := func(w http.ResponseWriter, r *http.Request) {
		var a netip.Addr
		if s := r.PathValue("addr"); s != "" {
			var err error
			if a, err = netip.ParseAddr(s); err != nil {
				http.Error(w, "not an IP address: "+s, http.StatusBadRequest)
				return
			}
		}
		json.NewEncoder(w).Encode(map[string]int{"flushed": ep.Flush(a)})
	}
	mux.HandleFunc("POST /flush", flush)
	mux.HandleFunc("POST /flush/{addr}", flush)
	mux.HandleFunc("POST /down/{peer}", func(w http.ResponseWriter, r *http.Request) {
		if ep.IKE() == nil {
			http.Error(w, "no IKE peers configured", http.StatusNotFound)
			return
		}
		n, err := ep.IKE().Down(r.PathValue("peer"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(map[string]int{"deleted_ike_sas": n})
	})
	ep.handleTrustStore(mux)
	ep.handleReload(mux)
	mux.HandleFunc("GET /check/{addr}", func(w http.ResponseWriter, r *http.Request) {
		a, err := netip.ParseAddr(r.PathValue("addr"))
		if err != nil {
			http.Error(w, "not an IP address: "+r.PathValue("addr"), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ep.check(a))
	})
	srv := &http.Server{Handler: authorize(mux, gid), ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, callerKey{}, callerOf(c))
		}}
	ep.OnClose(func() { srv.Close(); os.Remove(path) })
	go srv.Serve(ln)
	return nil
}

// Check is what GET /check/ADDR returns: what happens to traffic to ADDR.
type Check = tunnel.Check

// check answers what happens now to traffic to a: the question the IETF 89
// slides wanted a socket option for. Whatever oevpn would do with a packet
// takes the kernel sending it into the device: if it does not (a rule or
// route gone, the device gone), the packet leaves in the clear, and check
// says so. (For an AutoVPN gateway, whose own packets are not the ones it
// protects, only what oevpn does is reported.)
func (ep *endpoint) check(a netip.Addr) Check {
	a = a.Unmap()
	c := ep.Check(a)
	if c.Verdict == tunnel.CheckClear || ep.Device() == nil || ep.Gateway() {
		return c
	}
	if err := ep.Device().RoutesInto(a); err != nil {
		c.Reason = fmt.Sprintf("not protected: %v, so the traffic leaves in the clear (oevpn would have: %s, %s)", err, c.Verdict, c.Reason)
		c.Verdict, c.Peer = tunnel.CheckClear, ""
	}
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
		if err := writeJSON(stdout, c, false); err != nil {
			return err
		}
		return checkStatus(c.Verdict)
	}
	peer := ""
	if c.Peer != "" {
		peer = " (peer " + c.Peer + ")"
	}
	fmt.Fprintf(stdout, "%s: %s%s: %s\n", printable(c.Addr), printable(c.Verdict), printable(peer), printable(c.Reason))
	return checkStatus(c.Verdict)
}

// exitStatus is an error that only sets the exit status.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// The exit statuses of oevpn check.
const (
	checkEncrypted = 0 // encrypted, authenticated or not
	checkClear     = 1
	checkBlocked   = 2
	checkError     = 3 // pending, or the question could not be answered
)

// checkStatus returns the exit status of a verdict, nil for encrypted.
func checkStatus(verdict string) error {
	switch verdict {
	case tunnel.CheckEncrypted, tunnel.CheckUnauthenticated:
		return nil
	case tunnel.CheckClear:
		return exitStatus(checkClear)
	case tunnel.CheckBlocked:
		return exitStatus(checkBlocked)
	}
	return exitStatus(checkError)
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
	return controlCommandRange(name, nargs, nargs, usage, args, stderr)
}

// controlCommandRange is controlCommand for min to max arguments.
func controlCommandRange(name string, min, max int, usage string, args []string, stderr io.Writer) (sock string, asJSON bool, rest []string, err error) {
	fs := newFlags(name)
	sockFn := socketFlags(fs)
	j := fs.Bool("json", false, "print JSON")
	rest, err = parseArgs(fs, args)
	if err != nil {
		return "", false, nil, err
	}
	if len(rest) < min || len(rest) > max {
		return "", false, nil, fmt.Errorf("%w: oevpn %s [-s SOCKET | -c FILE] [--json] %s", errUsage, name, usage)
	}
	sock, err = sockFn()
	return sock, *j, rest, err
}

// parseInterspersed parses args with fs, accepting flags after the
// positional arguments too (oevpn down PEER --json), and returns the
// positional ones. After "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if used := len(args) - fs.NArg(); used > 0 && args[used-1] == "--" {
			return append(rest, fs.Args()...), nil
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

// socketFlags adds the flags that find an endpoint's control socket.
func socketFlags(fs *flag.FlagSet) func() (string, error) {
	dirs := config.RuntimeDir()
	if dirs != config.SystemRuntimeDir {
		dirs += " or " + config.SystemRuntimeDir
	}
	sock := fs.String("s", "", "control `socket` (default: from -c, or the one running endpoint's in "+dirs+")")
	cfgPath := fs.String("c", "", "the endpoint's configuration `file`, to find its control socket")
	return func() (string, error) {
		if *sock != "" {
			return *sock, nil
		}
		if *cfgPath != "" {
			// The socket is all we need: no keys are read.
			return config.ControlSocket(*cfgPath)
		}
		return findControl()
	}
}

// findControl returns the control socket of the one endpoint running in
// this user's runtime directory or the system's (root's); with several, it
// names them. Without any, it returns the default, for the error to name.
func findControl() (string, error) {
	var found []string
	for _, dir := range []string{config.RuntimeDir(), config.SystemRuntimeDir} {
		socks, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
		for _, s := range socks {
			if slices.Contains(found, s) {
				continue
			}
			// A socket left by a killed endpoint accepts nothing.
			if c, err := net.DialTimeout("unix", s, time.Second); err == nil {
				c.Close()
				found = append(found, s)
			}
		}
	}
	switch len(found) {
	case 0:
		return config.DefaultControl(config.DefaultName), nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%w: several endpoints run (%s): choose one with -s SOCKET or -c FILE", errUsage, strings.Join(found, ", "))
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
	var st tunnel.Status
	if err := controlGet(sock, "/status", &st); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, st, true)
	}
	return printStatus(stdout, st)
}

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
