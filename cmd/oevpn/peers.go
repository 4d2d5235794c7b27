package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// PeerInfo is one AutoVPN peer as GET /autovpn/peers returns it. The
// contact details are the peer's own words: plain text, never markup.
type PeerInfo struct {
	Fingerprint  string    `json:"fingerprint"`
	DN           string    `json:"dn"`
	State        string    `json:"state"`
	Contact      string    `json:"contact"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	SharedSecret bool      `json:"shared_secret"`
}

func peerInfo(p policy.Peer) PeerInfo {
	return PeerInfo{Fingerprint: p.Fingerprint, DN: p.DN, State: string(p.State), Contact: p.Contact,
		FirstSeen: p.FirstSeen, LastSeen: p.LastSeen, SharedSecret: len(p.SharedSecret) > 0}
}

// handleTrustStore serves the AutoVPN trust store on the control socket.
func (ep *endpoint) handleTrustStore(mux *http.ServeMux) {
	mux.HandleFunc("GET /autovpn/peers", func(w http.ResponseWriter, r *http.Request) {
		if ep.Trust() == nil {
			http.Error(w, "AutoVPN is not configured", http.StatusNotFound)
			return
		}
		out := []PeerInfo{}
		for _, p := range ep.Trust().Peers() {
			out = append(out, peerInfo(p))
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /autovpn/peers/{key}/{action}", func(w http.ResponseWriter, r *http.Request) {
		if ep.Trust() == nil {
			http.Error(w, "AutoVPN is not configured", http.StatusNotFound)
			return
		}
		p, err := trustAction(ep.Trust(), r.PathValue("action"), r.PathValue("key"))
		if err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, policy.ErrNoPeer) {
				status = http.StatusNotFound
			}
			http.Error(w, err.Error(), status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p)
	})
}

// trustAction applies trust, untrust or forget to the peer key names.
func trustAction(s *policy.TrustStore, action, key string) (*PeerInfo, error) {
	switch action {
	case "trust", "untrust":
		st := policy.Trusted
		if action == "untrust" {
			st = policy.Untrusted
		}
		p, err := s.SetState(key, st)
		if err != nil {
			return nil, err
		}
		info := peerInfo(*p)
		return &info, nil
	case "forget":
		return nil, s.Forget(key)
	}
	return nil, fmt.Errorf("unknown action %q", action)
}

// trustCommand parses the flags of the trust-store commands: those of
// every control command, and -store, to work on a trust-store file directly while
// oevpn is not running.
func trustCommand(name string, nargs int, usage string, args []string, stderr io.Writer) (sock, store string, asJSON bool, rest []string, err error) {
	fs := newFlags(name)
	sockFn := socketFlags(fs)
	st := fs.String("store", "", "work on this trust-store `file` directly (oevpn must not be running on it)")
	j := fs.Bool("json", false, "print JSON")
	rest, err = parseArgs(fs, args)
	if err != nil {
		return "", "", false, nil, err
	}
	if len(rest) != nargs {
		return "", "", false, nil, fmt.Errorf("%w: oevpn %s [-s SOCKET | -c FILE | -store FILE] %s", errUsage, name, usage)
	}
	if *st == "" {
		sock, err = sockFn()
	}
	return sock, *st, *j, rest, err
}

func cmdPeers(args []string, stdout, stderr io.Writer) error {
	sock, store, asJSON, _, err := trustCommand("peers", 0, "", args, stderr)
	if err != nil {
		return err
	}
	var peers []PeerInfo
	if store != "" {
		s, err := policy.OpenTrustStore(store)
		if err != nil {
			return err
		}
		for _, p := range s.Peers() {
			peers = append(peers, peerInfo(p))
		}
	} else if err := controlGet(sock, "/autovpn/peers", &peers); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, peers, false)
	}
	if len(peers) == 0 {
		fmt.Fprintln(stdout, "no AutoVPN peers known")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tSTATE\tSHARED SECRET\tLAST SEEN\tDN")
	for _, p := range peers {
		secret := "no"
		if p.SharedSecret {
			secret = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(p.Fingerprint[:16]), printable(p.State), secret, p.LastSeen.Format(time.RFC3339), printable(p.DN))
	}
	tw.Flush()
	for _, p := range peers {
		if p.Contact != "" {
			// Plain text, one line: no control characters reach the terminal.
			fmt.Fprintf(stdout, "%s contact: %s\n", printable(p.Fingerprint[:16]), printable(p.Contact))
		}
	}
	return nil
}

// cmdTrust returns the command that applies action to one peer.
func cmdTrust(action string) func(args []string, stdout, stderr io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		sock, store, asJSON, rest, err := trustCommand(action, 1, "FINGERPRINT|DN", args, stderr)
		if err != nil {
			return err
		}
		var info *PeerInfo
		if store != "" {
			s, err := policy.OpenTrustStore(store)
			if err != nil {
				return err
			}
			if info, err = trustAction(s, action, rest[0]); err != nil {
				return err
			}
		} else {
			b, err := controlPost(sock, "/autovpn/peers/"+url.PathEscape(rest[0])+"/"+action)
			if err != nil {
				return err
			}
			json.Unmarshal(b, &info)
		}
		if asJSON {
			return writeJSON(stdout, info, false)
		}
		if info == nil {
			fmt.Fprintf(stdout, "%s: forgotten\n", printable(rest[0]))
			return nil
		}
		fmt.Fprintf(stdout, "%s %s: %s\n", printable(info.Fingerprint[:16]), printable(info.DN), printable(info.State))
		return nil
	}
}
