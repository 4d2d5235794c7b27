package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// commandHelp is each command's synopsis (its positional arguments
// included) and what it does: `oevpn help CMD` and `oevpn CMD -h` print
// it, with the options, to stdout.
var commandHelp = map[string]string{
	"up": `oevpn up -c FILE
       oevpn up [-s SOCKET | -c FILE] [--json] PEER

Run an endpoint, or bring up a peer of a running one. With -c FILE alone,
run an endpoint from a TOML configuration (see config.example.toml)
until SIGINT or SIGTERM. Given a PEER, initiate the IKE SA with that
configured peer of the running endpoint instead.`,
	"status": `oevpn status [-s SOCKET | -c FILE] [--json]

Show a running endpoint: every peer (configured ones too, with their
state and last error), IKE SAs, Child SAs and their counters, the
opportunistic table, the AutoVPN peers and the datapath counters. --json
prints the same as JSON (schema in README.md).`,
	"down": `oevpn down [-s SOCKET | -c FILE] [--json] PEER

Delete the IKE and Child SAs with a configured peer (sending Delete).`,
	"reload": `oevpn reload [-s SOCKET | -c FILE] [--json]

Make the running endpoint read its configuration file again and apply
it, as wg syncconf and swanctl --load-all do: [[peer]]s added, removed
or changed (their SAs deleted, negotiated again), and [policy]; a peer
whose configuration is unchanged keeps its IKE and Child SAs, SPIs and
all. A change to any other section needs a restart: it is refused with
the file, line and key, as is a file with an error, and the endpoint
runs on as before. Prints what changed. SIGHUP does the same and logs it.`,
	"check": `oevpn check [-s SOCKET | -c FILE] [--json] ADDRESS

Say what happens now to traffic to ADDRESS, and why. Exit status:
0 encrypted (authenticated or not: --json says which), 1 clear,
2 blocked, 3 pending or an error.`,
	"shunts": `oevpn shunts [-s SOCKET | -c FILE] [--json]

List the destinations opportunism fell back for (the negative cache):
class, verdict (clear or drop), why, and when the verdict runs out.`,
	"flush": `oevpn flush [-s SOCKET | -c FILE] [--json] [ADDRESS]

Forget the fallback verdicts of all destinations, or of ADDRESS: their
next packet starts discovery and IKE again.`,
	"cleanup": `oevpn cleanup -c FILE

Remove the rules and prohibit routes that a killed endpoint left (they
keep its protected traffic blocked until it runs again).`,
	"peers": `oevpn peers [-s SOCKET | -c FILE | -store FILE] [--json]

List the AutoVPN peers of the trust store: fingerprint, state, shared
secret, last seen, DN and contact details.`,
	"trust": `oevpn trust [-s SOCKET | -c FILE | -store FILE] [--json] FINGERPRINT|DN

Mark an AutoVPN peer trusted.`,
	"untrust": `oevpn untrust [-s SOCKET | -c FILE | -store FILE] [--json] FINGERPRINT|DN

Mark an AutoVPN peer untrusted.`,
	"forget": `oevpn forget [-s SOCKET | -c FILE | -store FILE] [--json] FINGERPRINT|DN

Forget an AutoVPN peer.`,
	"keygen": `oevpn keygen [-t ed25519|ecdsa|rsa] -o FILE [-cert DN -cert-out FILE]

Write a new key pair (mode 0600) and print its public key; with -cert,
also a self-signed certificate (AutoVPN).`,
	"dns-records": `oevpn dns-records -k KEYFILE [-gateway ADDR|@FQDN] [-p N] ADDRESS|FQDN

Print the IPSECKEY, KEY (and for RSA, TXT) records that publish the key
for opportunistic IPsec.`,
	"demo": demoHelp(),
	"completion": `oevpn completion bash|zsh|fish

Print a completion script for the shell, generated from these commands
and their options. Load it with, e.g., source <(oevpn completion bash),
or install it where the shell looks for completions.`,
	"help": `oevpn help [COMMAND]

Print the list of commands, or COMMAND's help and options.`,
	"version": `oevpn version

Print the version.`,
}

// cmdHelp prints the overview, or a command's help (oevpn help CMD); the
// hidden "oevpn help --man" prints the manual page, oevpn(8), in roff.
func cmdHelp(args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 || args[0] != "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	switch name := args[1]; {
	case name == "--man":
		return writeMan(stdout, commands())
	case name == "-h" || name == "--help":
		return helpRequest{name: "help"}
	case commandHelp[name] == "":
		fmt.Fprintf(stderr, "oevpn: no command %q\n\n%s", name, usage)
		return exitStatus(2)
	default:
		return dispatch([]string{name, "-h"}, stdout, stderr)
	}
}

// command is what the man page and the completion scripts know of a
// command: its name, help text (synopsis, blank line, description) and
// options.
type command struct {
	name, help string
	flags      []*flag.Flag
}

// synopsis returns the command's synopsis lines.
func (c command) synopsis() string {
	s, _, _ := strings.Cut(c.help, "\n\n")
	return s
}

// description returns the text after the synopsis.
func (c command) description() string {
	_, d, _ := strings.Cut(c.help, "\n\n")
	return d
}

// summary returns the description's first sentence, or clause.
func (c command) summary() string {
	d := strings.Join(strings.Fields(c.description()), " ")
	for _, end := range []string{". ", ": ", "; "} {
		d, _, _ = strings.Cut(d, end)
	}
	return strings.TrimSuffix(d, ".")
}

// commands returns every command of commandHelp with the flags its -h
// shows, in the order of the overview (usage), then by name.
func commands() []command {
	var cs []command
	for name, h := range commandHelp {
		c := command{name: name, help: h}
		if fs := commandFlags(name); fs != nil {
			fs.VisitAll(func(f *flag.Flag) { c.flags = append(c.flags, f) })
		}
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b command) int {
		return cmp.Or(cmp.Compare(overviewLine(a.name), overviewLine(b.name)), strings.Compare(a.name, b.name))
	})
	return cs
}

// overviewLine is the line of the overview (usage) that first names the
// command, or a number past its end.
func overviewLine(name string) int {
	lines := strings.Split(usage, "\n")
	for i, l := range lines {
		if w, ok := strings.CutPrefix(l, "  oevpn "); ok {
			w, _, _ = strings.Cut(w, " ")
			if slices.Contains(strings.Split(w, "|"), name) {
				return i
			}
		}
	}
	return len(lines)
}

// commandFlags returns the flags of command name, as its -h sees them (nil
// for a command without any).
func commandFlags(name string) *flag.FlagSet {
	var h helpRequest
	if errors.As(dispatch([]string{name, "-h"}, io.Discard, io.Discard), &h) {
		return h.fs
	}
	return nil
}

// helpRequest is returned by parseArgs for -h or --help: run prints the
// command's help to stdout.
type helpRequest struct {
	name string
	fs   *flag.FlagSet
}

func (h helpRequest) Error() string { return "help requested" }

// newFlags returns a flag set for the command name whose errors parseArgs
// reports.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseArgs parses a command's arguments, flags before or after the
// positional ones, and returns the positional ones; -h asks for help.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	rest, err := parseInterspersed(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil, helpRequest{fs.Name(), fs}
	case err != nil:
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return rest, nil
}

// printHelp writes a command's help and its options.
func printHelp(w io.Writer, name string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n", commandHelp[name])
	if fs == nil {
		return
	}
	var opts strings.Builder
	fs.SetOutput(&opts)
	fs.PrintDefaults()
	if opts.Len() > 0 {
		fmt.Fprintf(w, "\nOptions:\n%s", opts.String())
	}
}

// usageOf returns the synopsis of a command, for usage errors.
func usageOf(name string) string {
	h, ok := commandHelp[name]
	if !ok {
		return ""
	}
	synopsis, _, _ := strings.Cut(h, "\n\n")
	return "Usage: " + synopsis + "\nRun \"oevpn help " + name + "\" for more."
}
