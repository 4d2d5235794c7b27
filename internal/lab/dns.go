//go:build linux

package lab

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSZone is one zone of a DNS lab: its records (zone-file lines relative
// to the zone, $ORIGIN is set) and how it is served.
type DNSZone struct {
	Name    string
	Records []string
	// Mode: "signed", "bogus" (signed, then the signatures over the
	// records broken), "expired" (signed, with signatures that expired
	// three days ago) or "unsigned".
	Mode string
	// Denial, for a signed zone: "nsec" (the default), "nsec3" (no
	// iterations, a salt) or "nsec3-optout" (unsigned delegations left
	// out of the chain, RFC 5155 §6).
	Denial string
}

// DNSLab is a Knot authoritative server with DNSSEC-signed zones and a
// validating Unbound resolver that trusts their keys, on loopback ports of
// their own. Resolver is the address to send queries to.
type DNSLab struct {
	Resolver string
	// Anchors is a file of the signed zones' DS records (the trust
	// anchors Unbound uses).
	Anchors string
	dir     string
}

func freePort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// StartDNS signs the zones (ldns-keygen, ldns-signzone), starts knotd and
// unbound, and waits until the resolver answers. The test's cleanup stops
// both.
func StartDNS(t *testing.T, zones []DNSZone) *DNSLab {
	t.Helper()
	return StartDNSIn(t, nil, zones)
}

// StartDNSIn is StartDNS with both servers in namespace ns (the root
// namespace if nil). In a namespace the resolver also answers on every
// address of it, on Resolver's port, for other namespaces.
//
// A zone below another zone of the list is delegated from it (NS, glue,
// and the DS when the child is signed), so that validators can walk the
// chain from the parent's anchor.
func StartDNSIn(t *testing.T, ns *Netns, zones []DNSZone) *DNSLab {
	t.Helper()
	Require(t, "knotd", "knotc", "unbound", "ldns-keygen", "ldns-signzone")
	dir := t.TempDir()
	for _, d := range []string{"zones", "keys", "knot/db", "unbound"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	authPort, resPort := freePort(t), freePort(t)
	auth := fmt.Sprintf("127.0.0.1@%d", authPort)
	knotZones, ubZones, anchors := writeZones(t, dir, auth, zones)
	anchorsPath := filepath.Join(dir, "unbound", "anchors.keys")
	os.WriteFile(anchorsPath, anchors, 0o644)
	knotConf := writeKnotConf(dir, auth, knotZones)
	ubConf := writeUnboundConf(t, dir, ns, resPort, auth, anchorsPath, ubZones)
	lab := &DNSLab{Resolver: fmt.Sprintf("127.0.0.1:%d", resPort), Anchors: anchorsPath, dir: dir}
	startDNSDaemon(t, ns, "knotd", "knotd", "-c", knotConf)
	waitDNSIn(t, ns, fmt.Sprintf("127.0.0.1:%d", authPort), zones[0].Name, false)
	startDNSDaemon(t, ns, "unbound", "unbound", "-d", "-c", ubConf)
	waitDNSIn(t, ns, lab.Resolver, zones[0].Name, true)
	return lab
}

// writeZones writes the zone files, signed where asked, children first so
// that a parent's file gets its children's delegations and DS. It returns
// knot's zone list, unbound's stub zones and the trust anchors (the DS of
// every signed zone).
func writeZones(t *testing.T, dir, auth string, zones []DNSZone) (knot, unbound string, anchors []byte) {
	t.Helper()
	var knotZones, ubZones strings.Builder
	var anchorBuf bytes.Buffer
	now := time.Now().UTC()
	// Children first: a parent's zone file gets its children's DS.
	order := append([]DNSZone(nil), zones...)
	sort.SliceStable(order, func(i, j int) bool { return dns.CountLabel(order[i].Name) > dns.CountLabel(order[j].Name) })
	delegations := map[string][]string{} // parent zone: lines
	for _, z := range order {
		plain := filepath.Join(dir, "zones", z.Name+".zone")
		var zf strings.Builder
		fmt.Fprintf(&zf, "$ORIGIN %s.\n$TTL 300\n@ SOA ns1.%s. hostmaster.%s. ( 1 3600 600 86400 300 )\n@ NS ns1.%s.\nns1 A 127.0.0.1\n",
			z.Name, z.Name, z.Name, z.Name)
		for _, r := range append(z.Records, delegations[z.Name]...) {
			zf.WriteString(r + "\n")
		}
		parent := ""
		for _, p := range zones {
			if p.Name != z.Name && dns.IsSubDomain(p.Name+".", z.Name+".") && dns.CountLabel(p.Name) > dns.CountLabel(parent) {
				parent = p.Name
			}
		}
		if parent != "" {
			delegations[parent] = append(delegations[parent], fmt.Sprintf("%s. NS ns1.%s.", z.Name, z.Name), fmt.Sprintf("ns1.%s. A 127.0.0.1", z.Name))
		}
		if err := os.WriteFile(plain, []byte(zf.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		served := plain
		if z.Mode == "signed" || z.Mode == "bogus" || z.Mode == "expired" {
			var ds []byte
			served, ds = signZone(t, dir, z, plain, now)
			anchorBuf.Write(ds)
			if parent != "" {
				delegations[parent] = append(delegations[parent], strings.TrimSpace(string(ds)))
			}
		}
		fmt.Fprintf(&knotZones, "  - domain: %q\n    file: %q\n", z.Name, served)
		for p := z.Name + "."; p != "" && p != "."; {
			fmt.Fprintf(&ubZones, "server:\n  local-zone: %q nodefault\n", p)
			if i := strings.Index(p, "."); i >= 0 {
				p = p[i+1:]
			} else {
				break
			}
		}
		fmt.Fprintf(&ubZones, "stub-zone:\n  name: %q\n  stub-addr: %s\n", z.Name, auth)
	}
	return knotZones.String(), ubZones.String(), anchorBuf.Bytes()
}

// signZone signs the zone file plain with a new KSK and ZSK (ldns) and the
// denial z asks for, breaking the signatures of a "bogus" zone; it returns
// the signed file and the KSK's DS.
func signZone(t *testing.T, dir string, z DNSZone, plain string, now time.Time) (string, []byte) {
	t.Helper()
	run := func(args ...string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = filepath.Join(dir, "keys")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ksk := run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", z.Name)
	zsk := run("ldns-keygen", "-a", "ECDSAP256SHA256", z.Name)
	stamp := func(t time.Time) string { return t.Format("20060102150405") }
	inception, expiration := now.Add(-time.Hour), now.Add(30*24*time.Hour)
	if z.Mode == "expired" {
		// Beyond Unbound's allowance for clock skew (val-sig-skew-max,
		// a day).
		inception, expiration = now.Add(-30*24*time.Hour), now.Add(-3*24*time.Hour)
	}
	args := []string{"ldns-signzone", "-o", z.Name, "-i", stamp(inception), "-e", stamp(expiration)}
	switch z.Denial {
	case "", "nsec":
	case "nsec3":
		args = append(args, "-n", "-t", "0", "-s", "ab12")
	case "nsec3-optout":
		args = append(args, "-n", "-t", "0", "-s", "ab12", "-p")
	default:
		t.Fatalf("zone %s: denial %q", z.Name, z.Denial)
	}
	run(append(args, "-f", plain+".signed", plain, ksk, zsk)...)
	ds, err := os.ReadFile(filepath.Join(dir, "keys", ksk+".ds"))
	if err != nil {
		t.Fatal(err)
	}
	served := plain + ".signed"
	if z.Mode == "bogus" {
		breakSignatures(t, served)
	}
	return served, ds
}

// writeKnotConf writes knot's configuration: the zones, served on auth.
func writeKnotConf(dir, auth, zones string) string {
	p := filepath.Join(dir, "knot", "knot.conf")
	os.WriteFile(p, []byte(fmt.Sprintf(`server:
    rundir: %q
    listen: %s
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: %q
log:
  - target: stderr
    any: info
template:
  - id: default
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
%s`, filepath.Join(dir, "knot"), auth, filepath.Join(dir, "knot", "db"), zones)), 0o644)
	return p
}

// writeUnboundConf writes unbound's configuration: a validating resolver
// on resPort (on every address of ns, if set), with the anchors, whose
// stub zones point at auth.
func writeUnboundConf(t *testing.T, dir string, ns *Netns, resPort int, auth, anchorsPath, stubZones string) string {
	t.Helper()
	p := filepath.Join(dir, "unbound", "unbound.conf")
	listen, allow := "127.0.0.1", "127.0.0.0/8"
	if ns != nil {
		listen, allow = "0.0.0.0", "0.0.0.0/0"
	}
	os.WriteFile(p, []byte(fmt.Sprintf(`server:
  interface: %s@%d
  port: %d
  do-ip6: no
  do-daemonize: no
  num-threads: 1
  so-reuseport: no
  username: ""
  chroot: ""
  directory: %q
  pidfile: %q
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-not-query-localhost: no
  module-config: "validator iterator"
  trust-anchor-file: %q
  val-permissive-mode: no
  harden-dnssec-stripped: yes
  ede: yes
  val-log-level: 2
  trust-anchor-signaling: no
  prefetch: no
  access-control: %s allow
remote-control:
  control-enable: no
stub-zone:
  name: "."
  stub-addr: %s
%s`, listen, resPort, resPort, filepath.Join(dir, "unbound"), filepath.Join(dir, "unbound", "unbound.pid"), anchorsPath, allow, auth, stubZones)), 0o644)
	if out, err := exec.Command("unbound-checkconf", p).CombinedOutput(); err != nil {
		t.Fatalf("unbound-checkconf: %v\n%s", err, out)
	}
	return p
}

// startDNSDaemon runs a DNS server in ns (the root namespace if nil) until
// the test ends, showing its log if the test failed.
func startDNSDaemon(t *testing.T, ns *Netns, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if ns != nil {
		cmd = ns.Cmd(args...)
	}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log.String())
		}
	})
}

// waitDNSIn waits until server answers for zone, in ns if set.
func waitDNSIn(t *testing.T, ns *Netns, server, zone string, recursive bool) {
	t.Helper()
	// t.Fatal must not run inside Do: the thread would die in the
	// namespace.
	var err error
	if ns == nil {
		err = waitDNS(server, zone, recursive)
	} else if derr := ns.Do(func() error { return waitDNS(server, zone, recursive) }); derr != nil {
		err = derr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// breakSignatures corrupts every RRSIG except those over the DNSKEY RRset,
// so the zone's keys validate but its data does not.
func breakSignatures(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[3] == "RRSIG" && f[4] != "DNSKEY" {
			sig := f[len(f)-1]
			c := byte('A')
			if sig[0] == 'A' {
				c = 'B'
			}
			f[len(f)-1] = string(c) + sig[1:]
			line = strings.Join(f, "\t")
		}
		out.WriteString(line + "\n")
	}
	os.WriteFile(path, []byte(out.String()), 0o644)
}

func waitDNS(server, zone string, recursive bool) error {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	m.RecursionDesired = recursive
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if in, _, err := c.Exchange(m, server); err == nil && in.Rcode == dns.RcodeSuccess {
			return nil
		}
	}
	return fmt.Errorf("no answer from %s for %s SOA", server, zone)
}
