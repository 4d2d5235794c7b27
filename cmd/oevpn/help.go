package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// commandHelp is each command's synopsis (its positional arguments
// included) and what it does: `oevpn help CMD` and `oevpn CMD -h` print
// it, with the options, to stdout.
var commandHelp = map[string]string{
	"up": `oevpn up -c FILE
       oevpn up [-s SOCKET | -c FILE] [--json] PEER

With -c FILE alone, run an endpoint from a TOML configuration (see
config.example.toml) until SIGINT or SIGTERM. Given a PEER, initiate the
IKE SA with that configured peer of the running endpoint instead.`,
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
	"demo": `oevpn demo [options]

Run two userspace endpoints in this process and show traffic flowing
between them through ESP.`,
	"version": `oevpn version

Print the version.`,
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
