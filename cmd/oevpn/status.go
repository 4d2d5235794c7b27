package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/oevpn/oevpn/tunnel"
)

// printStatus renders a status as swanctl --list-sas and wg show do:
// per peer, its IKE SAs and their Child SAs; then the static SAs, the
// opportunistic table, the AutoVPN peers and the counters. Every string
// from the node goes through printable: identities, peer names, reasons
// and contact details come from peers.
func printStatus(w io.Writer, st tunnel.Status) error {
	p := func(s string) string { return printable(s) }
	dev := st.Mode
	if st.Device != "" {
		dev += " " + st.Device
	}
	fmt.Fprintf(w, "oevpn %s  %s  ike port %d  natt port %d  clear path %s", p(st.Version), p(dev), st.IKEPort, st.NATTPort, p(st.ClearPath))
	if st.Outside != "" {
		fmt.Fprintf(w, "  own packets leave by %s", p(st.Outside))
	}
	fmt.Fprintln(w)
	for _, peer := range st.Peers {
		fmt.Fprintf(w, "\npeer %s (%s", p(peer.Name), p(peer.Kind))
		if peer.Start != "" {
			fmt.Fprintf(w, ", start %s", p(peer.Start))
		}
		fmt.Fprintf(w, "): %s", p(peer.State))
		if peer.Address != "" {
			fmt.Fprintf(w, "  address %s", p(peer.Address))
		}
		fmt.Fprintln(w)
		if peer.LastError != "" {
			fmt.Fprintf(w, "  last error%s: %s\n", agoText(peer.LastErrorSeconds), p(peer.LastError))
		}
		for _, sa := range peer.IKESAs {
			role := "responder"
			if sa.Initiator {
				role = "initiator"
			}
			fmt.Fprintf(w, "  ike %s  %s, %s  age %s", p(sa.Remote), p(sa.State), role, secs(sa.AgeSeconds))
			if sa.RekeyInSeconds != nil {
				fmt.Fprintf(w, "  rekey in %s", secs(*sa.RekeyInSeconds))
			}
			if sa.LastHeard != nil {
				fmt.Fprintf(w, "  last heard %s ago", secs(*sa.LastHeard))
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "    %s <-> %s  auth %s  %s\n", dash(sa.LocalID), dash(sa.RemoteID), dash(sa.Auth), dash(sa.Suite))
			fmt.Fprintf(w, "    spi %s_i %s_r\n", p(sa.SPIi), p(sa.SPIr))
			for _, c := range sa.ChildSAs {
				printChild(w, c, "    ")
			}
		}
	}
	if len(st.StaticSAs) > 0 {
		fmt.Fprintf(w, "\nstatic SAs\n")
		for _, c := range st.StaticSAs {
			printChild(w, c, "  ")
		}
	}
	if len(st.Peers)+len(st.StaticSAs) == 0 {
		fmt.Fprintf(w, "\nno peers and no SAs\n")
	}
	if len(st.Opportunistic) > 0 {
		fmt.Fprintf(w, "\nopportunistic\n")
		printOE(w, st.Opportunistic)
	}
	if len(st.AutoVPNPeers) > 0 {
		fmt.Fprintf(w, "\nautovpn peers\n")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  FINGERPRINT\tSTATE\tSHARED SECRET\tLAST SEEN\tDN")
		for _, a := range st.AutoVPNPeers {
			secret := "no"
			if a.SharedSecret {
				secret = "yes"
			}
			fp := a.Fingerprint
			if len(fp) > 16 {
				fp = fp[:16]
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p(fp), p(a.State), secret, strings.TrimPrefix(agoText(a.LastSeenSeconds), " "), p(a.DN))
		}
		tw.Flush()
	}
	d := st.Datapath
	fmt.Fprintf(w, "\ndatapath  esp sent %d received %d (on helper cores %d)  clear sent %d\n", d.ESPSent, d.ESPReceived, d.Helped, d.Clear)
	fmt.Fprintf(w, "  dropped: no SA %d, blocked %d, malformed %d, unknown SPI %d, decrypt %d, selector %d, seal %d, unauthenticated %d, control %d; send errors %d\n",
		d.NoSA, d.Blocked, d.Malformed, d.UnknownSPI, d.DecryptErrors, d.SelectorDrops, d.SealErrors, d.NullDrops, d.ControlDropped, d.SendErrors)
	ev := st.Events
	fmt.Fprintf(w, "ike  %d IKE SA(s) established, failed:%s\n", ev.IKEEstablished, countsText(tunnel.IKEFailureReasons, ev.IKEFailed))
	if len(st.Opportunistic) > 0 || sum(ev.DNSLookups) > 0 {
		fmt.Fprintf(w, "opportunism  dns lookups:%s; %d cached; fallbacks:%s\n", countsText(tunnel.DNSLookupResults, ev.DNSLookups),
			ev.DNSCacheEntries, countsText([]string{"clear", "drop"}, ev.OEFallbacks))
	}
	if b := st.Bypass; b != nil {
		fmt.Fprintf(w, "bypass routes  %d installed, %d refused\n", b.Installed, b.Refused)
	}
	if a := st.AutoVPN; a != nil {
		fmt.Fprintf(w, "autovpn  probes sent: %d requests, %d responses, %d completes; completed %d, dropped %d; not sent: rate limit %d, flow too small %d; intercepted %d\n",
			a.ProbeRequests, a.ProbeResponses, a.ProbeCompletes, a.Completed, a.Dropped, a.Limited, a.Unpaid, a.Intercepted)
	}
	m := st.Memory
	fmt.Fprintf(w, "memory  heap %.1f MiB live, %.1f MiB in use; rss %.1f MiB; %d goroutines\n",
		mib(m.HeapLive), mib(m.HeapInUse), mib(m.RSS), m.Goroutines)
	return nil
}

// countsText renders counts in the order of keys, " none" if all are 0.
func countsText(keys []string, m map[string]uint64) string {
	var b strings.Builder
	for _, k := range keys {
		if m[k] > 0 {
			fmt.Fprintf(&b, " %s %d", k, m[k])
		}
	}
	if b.Len() == 0 {
		return " none"
	}
	return b.String()
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// printChild renders one Child SA (or static SA pair).
func printChild(w io.Writer, c tunnel.ChildSAStatus, indent string) {
	fmt.Fprintf(w, "%schild %s === %s  %s  spi in %s out %s  age %s", indent, p(strings.Join(c.LocalTS, ",")), p(strings.Join(c.RemoteTS, ",")),
		p(c.Suite), p(c.SPIIn), p(c.SPIOut), secs(c.AgeSeconds))
	if c.RekeyInSeconds != nil {
		fmt.Fprintf(w, "  rekey in %s", secs(*c.RekeyInSeconds))
	}
	if c.ExpireInSeconds != nil {
		fmt.Fprintf(w, "  expires in %s", secs(*c.ExpireInSeconds))
	}
	fmt.Fprintf(w, "  peer %s\n", p(c.Peer))
	fmt.Fprintf(w, "%s  in  %d packets, %d bytes%s", indent, c.In.Packets, c.In.Bytes, lastText(c.In.LastPacketSeconds))
	if c.In.ReplayDrops+c.In.IntegrityFailures > 0 {
		fmt.Fprintf(w, "; dropped %d replayed, %d failed integrity", c.In.ReplayDrops, c.In.IntegrityFailures)
	}
	fmt.Fprintf(w, "\n%s  out %d packets, %d bytes%s\n", indent, c.Out.Packets, c.Out.Bytes, lastText(c.Out.LastPacketSeconds))
}

// printOE renders opportunistic destinations as a table.
func printOE(w io.Writer, oe []tunnel.OEStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  DESTINATION\tCLASS\tVERDICT\tEXPIRES IN\tSOURCE\tREASON")
	for _, e := range oe {
		exp := "-"
		if e.ExpiresInSeconds != nil {
			exp = secs(*e.ExpiresInSeconds)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p(e.Destination), dash(e.Class), p(e.Verdict), exp, dash(e.Source), dash(e.Reason))
	}
	tw.Flush()
}

func p(s string) string { return printable(s) }

// dash is printable(s), or "-" for "" (not negotiated yet).
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return printable(s)
}

// secs renders whole seconds as 45s, 3m20s, 2h5m or 3d4h.
func secs(s int64) string {
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// agoText is " n ago", or "" for nil.
func agoText(s *int64) string {
	if s == nil {
		return ""
	}
	return " " + secs(*s) + " ago"
}

// lastText is ", last n ago", or ", none yet" for nil.
func lastText(s *int64) string {
	if s == nil {
		return ""
	}
	return ", last" + agoText(s)
}

func cmdShunts(args []string, stdout, stderr io.Writer) error {
	sock, asJSON, _, err := controlCommand("shunts", 0, "", args, stderr)
	if err != nil {
		return err
	}
	oe := []tunnel.OEStatus{}
	if err := controlGet(sock, "/shunts", &oe); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, oe, true)
	}
	if len(oe) == 0 {
		fmt.Fprintln(stdout, "no shunts: opportunism has not fallen back for any destination")
		return nil
	}
	printOE(stdout, oe)
	return nil
}

func cmdFlush(args []string, stdout, stderr io.Writer) error {
	sock, asJSON, rest, err := controlCommandRange("flush", 0, 1, "[ADDRESS]", args, stderr)
	if err != nil {
		return err
	}
	path := "/flush"
	if len(rest) == 1 {
		path += "/" + url.PathEscape(rest[0])
	}
	b, err := controlPost(sock, path)
	if err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(b)
		return err
	}
	var r map[string]int
	json.Unmarshal(b, &r)
	fmt.Fprintf(stdout, "%d shunt(s) flushed\n", r["flushed"])
	return nil
}

// cmdUpPeer initiates the configured peer on the running endpoint.
func cmdUpPeer(args []string, stdout, stderr io.Writer) error {
	sock, asJSON, rest, err := controlCommand("up", 1, "PEER", args, stderr)
	if err != nil {
		return err
	}
	b, err := controlPost(sock, "/up/"+url.PathEscape(rest[0]))
	if err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(b)
		return err
	}
	fmt.Fprintf(stdout, "peer %s: initiating (oevpn status shows when it is up)\n", printable(rest[0]))
	return nil
}
