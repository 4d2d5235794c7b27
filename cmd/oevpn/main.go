// Command oevpn is the opportunistic-encryption VPN endpoint.
//
// Usage:
//
//	oevpn up -c FILE     run an endpoint from a TOML configuration
//	oevpn up PEER        initiate a configured peer of the running endpoint
//	oevpn status         show a running endpoint's peers, SAs and tables (--json)
//	oevpn down PEER      delete the SAs with a configured peer
//	oevpn reload         apply the running endpoint's changed configuration file
//	oevpn shunts         list the opportunistic negative cache
//	oevpn flush [ADDR]   forget opportunistic fallback verdicts
//	oevpn cleanup -c FILE  remove the routing a killed endpoint left
//	oevpn demo           userspace nodes in this process: opportunism, policy, AutoVPN, SOCKS5
//	oevpn version        print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// version is stamped by the Makefile from git describe.
var version = "devel"

const usage = `oevpn — opportunistic IPsec (IKEv2/ESP) endpoint

Usage:
  oevpn up -c FILE   run an endpoint from a TOML configuration (see config.example.toml)
  oevpn up PEER      initiate the IKE SA with a configured peer of the running endpoint
  oevpn status       show a running endpoint's peers (configured ones too), IKE and
                     Child SAs, opportunistic table, AutoVPN peers and counters
                     (-c FILE or -s SOCKET to pick it, --json for JSON)
  oevpn down PEER    delete the IKE and Child SAs with a configured peer
  oevpn reload       apply the changed configuration file of the running endpoint:
                     peers and policy; unchanged peers keep their SAs (also SIGHUP)
  oevpn shunts       list the destinations opportunism fell back for (clear or drop)
  oevpn flush [ADDR] forget those verdicts (all, or ADDR's): the next packet negotiates
  oevpn cleanup -c FILE
                     remove the rules and prohibit routes a killed endpoint left
                     (they keep its protected traffic blocked until it runs again)
  oevpn check ADDR   what happens to traffic to ADDR now: encrypted-and-authenticated,
                     encrypted-unauthenticated, pending, blocked or clear
  oevpn demo         run userspace nodes in this process and show opportunism from
                     signed DNS, policy, AutoVPN and the SOCKS5 proxy (-h lists the parts)
  oevpn peers        list the AutoVPN peers of the trust store: fingerprint, state,
                     shared secret, last seen, DN, contact details
  oevpn trust|untrust|forget FINGERPRINT|DN
                     mark an AutoVPN peer trusted or untrusted, or forget it
                     (-store FILE works on the trust store while oevpn is down)
  oevpn keygen -o FILE        write a new key pair (ed25519; -t ecdsa|rsa), mode 0600;
                     with -cert DN -cert-out FILE also a self-signed certificate (AutoVPN)
  oevpn dns-records -k FILE ADDRESS|FQDN
                     print the IPSECKEY, KEY (and for RSA, TXT) records that
                     publish the key for opportunistic IPsec
  oevpn completion bash|zsh|fish
                     print a shell completion script
  oevpn version      print the version

Run "oevpn COMMAND -h" for a command's options.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors for which the usage text is worth showing.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	return report(args[0], dispatch(args, stdout, stderr), stdout, stderr)
}

// dispatch runs the command args[0] with its arguments.
func dispatch(args []string, stdout, stderr io.Writer) (err error) {
	switch args[0] {
	case "up":
		err = cmdUp(args[1:], stdout, stderr)
	case "shunts":
		err = cmdShunts(args[1:], stdout, stderr)
	case "flush":
		err = cmdFlush(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "down":
		err = cmdDown(args[1:], stdout, stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	case "cleanup":
		err = cmdCleanup(args[1:], stdout, stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "peers":
		err = cmdPeers(args[1:], stdout, stderr)
	case "trust", "untrust", "forget":
		err = cmdTrust(args[0])(args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(args[1:], stdout)
	case "keygen":
		err = cmdKeygen(args[1:], stdout, stderr)
	case "dns-records":
		err = cmdDNSRecords(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "oevpn %s %s/%s %s\n", version, runtime.GOOS, runtime.GOARCH, runtime.Version())
	case "completion":
		err = cmdCompletion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		return cmdHelp(args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "oevpn: unknown command %q\n\n%s", args[0], usage)
		return exitStatus(2)
	}
	return err
}

// report reports err of command name and returns the exit status.
func report(name string, err error, stdout, stderr io.Writer) int {
	var help helpRequest
	var status exitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &status):
		return int(status)
	case errors.As(err, &help):
		printHelp(stdout, help.name, help.fs)
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case name == "check":
		// Scripts tell the verdicts by the exit status (1 and 2 are
		// verdicts): every error is 3, as pending.
		fmt.Fprintf(stderr, "oevpn: %v\n", err)
		return checkError
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "oevpn: %v\n", err)
		if u := usageOf(name); u != "" && !strings.Contains(err.Error(), "oevpn "+name) {
			fmt.Fprintln(stderr, u)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "oevpn: %v\n", err)
		return 1
	}
}
