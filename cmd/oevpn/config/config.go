// Package config reads oevpn's TOML configuration. Every error names the
// file, the line and the key it is about.
package config

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/internal/ipview"
	"github.com/oevpn/oevpn/policy"
)

// Device modes.
const (
	ModeTUN      = "tun"
	ModeNetstack = "netstack"
)

// Defaults.
const (
	DefaultName     = "oevpn0"
	DefaultMTU      = 1400
	DefaultIKEPort  = 500
	DefaultNATTPort = 4500
	DefaultFwmark   = 0x4f45 // "OE"
	DefaultTable    = 0x4f45
)

// DefaultControl is the control socket of the endpoint whose device is name.
func DefaultControl(name string) string {
	if runtime.GOOS == "windows" {
		return filepath.Join(os.TempDir(), "oevpn-"+name+".sock")
	}
	return "/run/oevpn/" + name + ".sock"
}

// DefaultStateDir is where the state that must outlive a run is kept.
func DefaultStateDir() string {
	if runtime.GOOS == "windows" {
		return filepath.Join(os.Getenv("ProgramData"), "oevpn")
	}
	return "/var/lib/oevpn"
}

// Config is a whole configuration file.
type Config struct {
	Interface Interface `toml:"interface"`
	SAs       []SA      `toml:"sa"`
	Peers     []Peer    `toml:"peer"`
	Policy    Policy    `toml:"policy"`
	OE        OE        `toml:"opportunism"`
	AutoVPN   AutoVPN   `toml:"autovpn"`
	// Path is the file the configuration came from.
	Path string `toml:"-"`
	loc  locator
}

// KeyError returns err about key ("interface.outside", "sa[1].spi_in") as an
// *Error naming the file and the key's line, for what only shows when the
// configuration is used (an interface that does not exist on this host).
func (c *Config) KeyError(key string, err error) error {
	return &Error{File: c.Path, Line: c.loc.findDotted(key), Key: key, Err: err}
}

// Interface configures the local endpoint.
type Interface struct {
	Mode      string         `toml:"mode"`
	Name      string         `toml:"name"`
	MTU       int            `toml:"mtu"`
	Addresses []netip.Prefix `toml:"addresses"`
	IKEPort   *int           `toml:"ike_port"`
	NATTPort  *int           `toml:"natt_port"`
	Fwmark    *int64         `toml:"fwmark"`
	Table     int            `toml:"table"`
	Outside   string         `toml:"outside"`
	LogLevel  string         `toml:"log_level"`
	Control   string         `toml:"control"`
	// ControlGroup may use the control socket as root can (a group name
	// or number; Linux and macOS).
	ControlGroup string `toml:"control_group"`
	// StateDir keeps what must survive a restart: the outbound sequence
	// numbers of the [[sa]] keys (default DefaultStateDir).
	StateDir string `toml:"state_dir"`
}

// SA is one statically keyed pair of SAs.
type SA struct {
	Peer         netip.AddrPort    `toml:"peer"`
	Local        []policy.Selector `toml:"local"`
	Remote       []policy.Selector `toml:"remote"`
	Transform    esp.Transform     `toml:"transform"`
	ESN          bool              `toml:"esn"`
	SPIOut       uint32            `toml:"spi_out"`
	SPIIn        uint32            `toml:"spi_in"`
	KeyOut       Key               `toml:"key_out"`
	KeyIn        Key               `toml:"key_in"`
	ReplayWindow int               `toml:"replay_window"`
}

// Policy gives connection classes to destinations no configured peer
// covers: prefixes per class (the longest matching prefix wins).
type Policy struct {
	Block          []netip.Prefix `toml:"block"`
	Clear          []netip.Prefix `toml:"clear"`
	PrivateOrClear []netip.Prefix `toml:"private-or-clear"`
	ClearOrPrivate []netip.Prefix `toml:"clear-or-private"`
	Private        []netip.Prefix `toml:"private"`
	// Exceptions give one protocol and port range a class of its own.
	Exceptions []Exception `toml:"exception"`

	// Classes is the table built from the above by the checks.
	Classes *policy.Classes `toml:"-"`
}

// AutoVPN configures the AutoVPN probe handshake (draft-sheffer-autovpn).
type AutoVPN struct {
	// Protected are the hosts we stand in front of (gateway mode), or
	// our own addresses (host mode). AutoVPN is off without them.
	Protected []netip.Prefix `toml:"protected"`
	// Mode is "gateway" (the default: we forward for the protected hosts)
	// or "host" (protected are our own addresses).
	Mode string `toml:"mode"`
	// Certificate and PrivateKey are ours (`oevpn keygen -cert`).
	Certificate string `toml:"certificate"`
	PrivateKey  string `toml:"private_key"`
	// Contact is sent to peers as Contact Details.
	Contact string `toml:"contact"`
	// CA, if set, is a PEM file of trusted third parties: a peer whose
	// certificate one of them issued is trusted at once.
	CA string `toml:"ca"`
	// CRL lists PEM or DER revocation lists of the CA: revoked peer
	// certificates are deleted from the trust store and refused.
	CRL []string `toml:"crl"`
	// TrustStore is the file of peer certificates (default
	// /var/lib/oevpn/DEVICE.trust, or beside the configuration).
	TrustStore string `toml:"trust_store"`
	// UnverifiedTTL is how long an unverified peer is kept after it was
	// last seen (default 30 days).
	UnverifiedTTL Duration `toml:"unverified_ttl"`
	// SharedSecret asks new peers for an AutoVPN shared secret (default
	// true).
	SharedSecret *bool `toml:"shared_secret"`
	// Fallback is what traffic to a peer gets when no SA can be had, by
	// the peer's trust state: clear or drop (§9.4). Keys: unknown,
	// unverified, trusted, untrusted, managed.
	Fallback map[string]string `toml:"fallback"`

	Cert   *x509.Certificate      `toml:"-"`
	Signer crypto.Signer          `toml:"-"`
	Roots  *x509.CertPool         `toml:"-"`
	CRLs   []*x509.RevocationList `toml:"-"`
}

// Enabled reports whether AutoVPN is configured.
func (a *AutoVPN) Enabled() bool { return len(a.Protected) > 0 }

// Exception is one [[policy.exception]]: traffic to Prefix (default: every
// address) with protocol Proto ("tcp", "udp", "icmp", "icmpv6" or a number;
// default any) and destination Port ("22" or "6000-6010"; default any)
// gets Class, whatever the prefix lists say.
type Exception struct {
	Prefix string `toml:"prefix"`
	Proto  string `toml:"proto"`
	Port   string `toml:"port"`
	Class  string `toml:"class"`
}

// parse turns the exception into policy form.
func (e *Exception) parse(key string) ([]policy.Exception, error) {
	class, err := policy.ParseClass(e.Class)
	if err != nil {
		return nil, keyErr(key+".class", "%v", err)
	}
	pe := policy.Exception{Class: class}
	if e.Proto != "" {
		p, ok := ipview.ParseProto(e.Proto)
		if !ok {
			return nil, keyErr(key+".proto", "%q is not tcp, udp, icmp, icmpv6, sctp or a protocol number", e.Proto)
		}
		pe.Proto = p
	}
	if e.Port != "" {
		if pe.Proto != ipview.ProtoTCP && pe.Proto != ipview.ProtoUDP && pe.Proto != ipview.ProtoSCTP {
			return nil, keyErr(key+".port", "a port needs proto tcp, udp or sctp")
		}
		lo, hi, ok := strings.Cut(e.Port, "-")
		if !ok {
			hi = lo
		}
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || a == 0 || a > b {
			return nil, keyErr(key+".port", "%q is not a port or a range like \"6000-6010\"", e.Port)
		}
		pe.From, pe.To = uint16(a), uint16(b)
	}
	var prefixes []netip.Prefix
	if e.Prefix == "" {
		prefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	} else {
		p, err := netip.ParsePrefix(e.Prefix)
		if err != nil {
			a, err2 := netip.ParseAddr(e.Prefix)
			if err2 != nil {
				return nil, keyErr(key+".prefix", "%q is not a prefix or an address", e.Prefix)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		prefixes = []netip.Prefix{p.Masked()}
	}
	var out []policy.Exception
	for _, p := range prefixes {
		pe.Prefix = p
		out = append(out, pe)
	}
	return out, nil
}

// OE configures opportunistic encryption: how destinations of the
// private and private-or-clear classes are discovered in DNS, and how we
// authenticate to them and to opportunistic initiators.
type OE struct {
	// Resolver is the recursive resolver ("addr:port"); the default is
	// the first nameserver of /etc/resolv.conf.
	Resolver string `toml:"resolver"`
	// DNSSEC is require, prefer or off (default require).
	DNSSEC string `toml:"dnssec"`
	// TrustAnchors, if set, is a file of DS or DNSKEY records from which
	// oevpn validates DNSSEC itself instead of trusting the resolver's
	// AD bit.
	TrustAnchors string `toml:"trust_anchors"`
	// Auth is null (AUTH_NULL, RFC 7619: the default) or pubkey (our raw
	// public key, published in our reverse zone, from PrivateKey).
	Auth       string `toml:"auth"`
	PrivateKey string `toml:"private_key"`
	// ID is our identity with auth = "pubkey" when it is not our
	// address: the FQDN a TXT or IPSECKEY record names as gateway.
	ID string `toml:"id"`
	// Timeout bounds an opportunistic IKE negotiation before the
	// destination falls back per its class (default 2s).
	Timeout Duration `toml:"timeout"`
	// ShuntTTL is how long a failed destination is remembered (default
	// 15m).
	ShuntTTL Duration `toml:"shunt_ttl"`
	// Lifespan and ExtendedLifespan are the draft's §5.1 lifespans
	// (defaults 1m and 20m).
	Lifespan         Duration `toml:"lifespan"`
	ExtendedLifespan Duration `toml:"extended_lifespan"`
	// IKELifetime is when opportunistic IKE SAs are rekeyed (default
	// 4h); the peer's key is checked in DNS again at each rekey.
	IKELifetime Duration `toml:"ike_lifetime"`
	// DNSListen, if set, runs the DNS-triggered stub on this address
	// (e.g. "127.0.0.1:53"); DNSWait bounds how long it holds an answer
	// for the tunnels of its addresses (default 2s).
	DNSListen string   `toml:"dns_listen"`
	DNSWait   Duration `toml:"dns_wait"`

	Mode     dnsoe.DNSSEC        `toml:"-"`
	Anchors  *dnsoe.TrustAnchors `toml:"-"`
	Signer   crypto.Signer       `toml:"-"`
	Identity ike.Identity        `toml:"-"`
}

// Enabled reports whether any class makes or answers opportunistic
// negotiations.
func (p *Policy) Enabled() bool {
	return len(p.Private)+len(p.PrivateOrClear)+len(p.ClearOrPrivate) > 0
}

// Peer is a configured IKEv2 peer.
type Peer struct {
	Name            string            `toml:"name"`
	Address         netip.Addr        `toml:"address"`
	IKEPort         int               `toml:"ike_port"`
	NATTPort        int               `toml:"natt_port"`
	LocalID         string            `toml:"local_id"`
	RemoteID        string            `toml:"remote_id"`
	Auth            string            `toml:"auth"`
	PSK             string            `toml:"psk"`
	PrivateKey      string            `toml:"private_key"`
	RemotePublicKey string            `toml:"remote_public_key"`
	Certificate     string            `toml:"certificate"`
	RemoteCert      string            `toml:"remote_certificate"`
	CA              string            `toml:"ca"`
	IKEProposals    string            `toml:"ike_proposals"`
	ESPProposals    string            `toml:"esp_proposals"`
	Local           []policy.Selector `toml:"local"`
	Remote          []policy.Selector `toml:"remote"`
	Start           string            `toml:"start"`
	IKELifetime     Duration          `toml:"ike_lifetime"`
	ChildLifetime   Duration          `toml:"child_lifetime"`
	DPD             Duration          `toml:"dpd"`
	RetransmitBase  Duration          `toml:"retransmit_timeout"`
	RetransmitTries int               `toml:"retransmit_tries"`
	FragmentSize    int               `toml:"fragment_size"`

	// Filled in by the checks: the parsed proposals, identities and keys.
	IKE, ESP       []ike.Proposal      `toml:"-"`
	LocalIdentity  ike.Identity        `toml:"-"`
	RemoteIdentity ike.Identity        `toml:"-"`
	Signer         crypto.Signer       `toml:"-"`
	RemoteKey      crypto.PublicKey    `toml:"-"`
	Cert           *x509.Certificate   `toml:"-"`
	RemoteCerts    []*x509.Certificate `toml:"-"`
	Roots          *x509.CertPool      `toml:"-"`
	// CertChain are the certificates after ours in certificate (its
	// issuer first), sent with it; CACerts are those of ca, in Roots.
	CertChain, CACerts []*x509.Certificate `toml:"-"`
}

// Peer auth methods and start modes.
const (
	AuthPSK      = "psk"
	AuthPubkey   = "pubkey"
	AuthCert     = "cert"
	AuthNull     = "null"
	StartNow     = "start"
	StartTraffic = "traffic"
	StartNever   = "none"
)

// Duration is a time.Duration written as "30s", "1h", "500ms".
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return errors.New("not a duration like \"30s\" or \"1h\"")
	}
	*d = Duration(v)
	return nil
}

// Key is keying material written in hex. Its String never shows it.
type Key []byte

// UnmarshalText decodes hex, ignoring ':' and spaces.
func (k *Key) UnmarshalText(b []byte) error {
	s := strings.NewReplacer(":", "", " ", "").Replace(string(b))
	s = strings.TrimPrefix(s, "0x")
	v, err := hex.DecodeString(s)
	if err != nil {
		return errors.New("not a hex string")
	}
	*k = v
	return nil
}

// String hides the key.
func (k Key) String() string { return fmt.Sprintf("<%d-octet key>", len(k)) }

// Error is a configuration error located in a file.
type Error struct {
	File string
	Line int    // 0 if unknown
	Key  string // dotted key, e.g. "sa[1].spi_in"
	Err  error
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %v", loc, e.Key, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrInsecureFile is returned for a file holding keys that others can read.
var ErrInsecureFile = errors.New("file holds keys but is readable by group or others; chmod 600 it")

// Load reads and checks the configuration at path.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	secrets := len(c.SAs) > 0
	for _, p := range c.Peers {
		secrets = secrets || p.PSK != ""
	}
	if fi, err := os.Stat(path); err == nil && secrets && fi.Mode().Perm()&0o077 != 0 {
		return nil, &Error{File: path, Err: fmt.Errorf("%w (mode %04o)", ErrInsecureFile, fi.Mode().Perm())}
	}
	return c, nil
}

// Parse reads and checks a configuration; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	var c Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Line: pe.Position.Line, Key: pe.LastKey, Err: errors.New(pe.Message)}
		}
		return nil, &Error{File: name, Err: err}
	}
	c.Path = name
	loc := locator{lines: strings.Split(string(data), "\n")}
	c.loc = loc
	if un := md.Undecoded(); len(un) > 0 {
		k := un[0]
		return nil, &Error{File: name, Line: loc.find(k), Key: k.String(), Err: errors.New("unknown key")}
	}
	if err := c.check(); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = name
			ce.Line = loc.findDotted(ce.Key)
			return nil, ce
		}
		return nil, &Error{File: name, Err: err}
	}
	return &c, nil
}

func keyErr(key string, format string, args ...any) error {
	return &Error{Key: key, Err: fmt.Errorf(format, args...)}
}

// check applies defaults and validates what the TOML types cannot, section
// by section; the first error wins.
func (c *Config) check() error {
	for _, check := range []func() error{c.checkInterface, c.checkSAs, c.checkPolicy, c.checkOE, c.checkAutoVPN, c.checkPeers} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// checkInterface applies the defaults of [interface] and checks it.
func (c *Config) checkInterface() error {
	in := &c.Interface
	switch in.Mode {
	case "":
		in.Mode = ModeTUN
	case ModeTUN, ModeNetstack:
	default:
		return keyErr("interface.mode", "%q is not a device mode (want %q or %q)", in.Mode, ModeTUN, ModeNetstack)
	}
	if in.Name == "" {
		in.Name = DefaultName
	}
	if len(in.Name) > 15 {
		return keyErr("interface.name", "%q is longer than 15 characters", in.Name)
	}
	if in.MTU == 0 {
		in.MTU = DefaultMTU
	}
	if in.MTU < 1280 || in.MTU > 65535-100 {
		return keyErr("interface.mtu", "%d is outside 1280..65435", in.MTU)
	}
	if in.Mode == ModeNetstack && len(in.Addresses) == 0 {
		return keyErr("interface.addresses", "a netstack device needs at least one address")
	}
	for _, p := range []struct {
		v   **int
		def int
		key string
	}{{&in.IKEPort, DefaultIKEPort, "interface.ike_port"}, {&in.NATTPort, DefaultNATTPort, "interface.natt_port"}} {
		if *p.v == nil {
			d := p.def
			*p.v = &d
		}
		if v := **p.v; v < 0 || v > 65535 {
			return keyErr(p.key, "%d is not a port", v)
		}
	}
	if in.Fwmark == nil {
		m := int64(DefaultFwmark)
		in.Fwmark = &m
	}
	if *in.Fwmark < 0 || *in.Fwmark > 0xffffffff {
		return keyErr("interface.fwmark", "%d is not a 32-bit mark", *in.Fwmark)
	}
	if in.Table == 0 {
		in.Table = DefaultTable
	}
	if in.Table < 1 || in.Table > 0x7fffffff || in.Table == 253 || in.Table == 254 || in.Table == 255 {
		return keyErr("interface.table", "%d is not a usable routing table (not default, main or local)", in.Table)
	}
	if in.Outside != "" && in.Mode != ModeTUN {
		return keyErr("interface.outside", "only a %q device has an outside interface", ModeTUN)
	}
	if in.Control == "" {
		in.Control = DefaultControl(in.Name)
	}
	if in.StateDir == "" {
		in.StateDir = DefaultStateDir()
	} else {
		in.StateDir = c.resolve(in.StateDir)
	}
	switch strings.ToLower(in.LogLevel) {
	case "", "info", "debug", "warn", "error":
	default:
		return keyErr("interface.log_level", "%q is not one of debug, info, warn, error", in.LogLevel)
	}
	return nil
}

// checkSAs checks the static SAs ([[sa]]): selectors, SPIs unique and
// outside the reserved range, a key of its own for every direction.
func (c *Config) checkSAs() error {
	spis := map[uint32]string{}
	keys := map[string]string{}
	for i := range c.SAs {
		sa := &c.SAs[i]
		k := func(f string) string { return fmt.Sprintf("sa[%d].%s", i, f) }
		if !sa.Peer.IsValid() {
			return keyErr(k("peer"), "missing: the peer's outer address and port, e.g. \"192.0.2.2:4500\"")
		}
		if len(sa.Local) == 0 {
			return keyErr(k("local"), "missing: the local traffic selectors")
		}
		if len(sa.Remote) == 0 {
			return keyErr(k("remote"), "missing: the remote traffic selectors")
		}
		if sa.Transform == 0 {
			sa.Transform = esp.AESGCM256
		}
		for _, f := range []struct {
			spi  uint32
			name string
		}{{sa.SPIOut, "spi_out"}, {sa.SPIIn, "spi_in"}} {
			if f.spi < esp.MinSPI {
				return keyErr(k(f.name), "%d: SPIs below %d are reserved (RFC 4303 §2.1)", f.spi, esp.MinSPI)
			}
		}
		if prev, ok := spis[sa.SPIIn]; ok {
			return keyErr(k("spi_in"), "%#x is already the inbound SPI of %s", sa.SPIIn, prev)
		}
		spis[sa.SPIIn] = fmt.Sprintf("sa[%d]", i)
		for _, f := range []struct {
			key  Key
			name string
		}{{sa.KeyOut, "key_out"}, {sa.KeyIn, "key_in"}} {
			if len(f.key) != sa.Transform.KeyLen() {
				return keyErr(k(f.name), "%s takes %d octets of keying material (%d hex digits), got %d",
					sa.Transform, sa.Transform.KeyLen(), 2*sa.Transform.KeyLen(), len(f.key))
			}
			// The IV is the sequence number, which each direction
			// counts on its own: two directions under one key repeat
			// nonces (RFC 4106 §8.1; with CBC, IVs).
			if prev, ok := keys[string(f.key)]; ok {
				return keyErr(k(f.name), "the same key as %s: every direction of every SA needs a key of its own (two directions under one key reuse IVs and nonces)", prev)
			}
			keys[string(f.key)] = k(f.name)
		}
		if sa.ReplayWindow < 0 || sa.ReplayWindow > esp.MaxReplayWindow {
			return keyErr(k("replay_window"), "%d is outside 0..%d", sa.ReplayWindow, esp.MaxReplayWindow)
		}
	}
	return nil
}

// checkPolicy builds the connection classes of [policy] and its
// exceptions.
func (c *Config) checkPolicy() error {
	byClass := map[policy.Class][]netip.Prefix{policy.ClassBlock: c.Policy.Block, policy.ClassClear: c.Policy.Clear,
		policy.ClassPrivateOrClear: c.Policy.PrivateOrClear, policy.ClassClearOrPrivate: c.Policy.ClearOrPrivate, policy.ClassPrivate: c.Policy.Private}
	var exceptions []policy.Exception
	for i := range c.Policy.Exceptions {
		ex, err := c.Policy.Exceptions[i].parse(fmt.Sprintf("policy.exception[%d]", i))
		if err != nil {
			return err
		}
		exceptions = append(exceptions, ex...)
	}
	classes, err := policy.NewClasses(byClass, exceptions, nil)
	if err != nil {
		return keyErr("policy.block", "%v", err)
	}
	c.Policy.Classes = classes
	return nil
}

// checkPeers checks the [[peer]] tables: each peer in turn, and their names
// unique.
func (c *Config) checkPeers() error {
	names := map[string]bool{}
	for i := range c.Peers {
		if err := c.checkPeer(i, names); err != nil {
			return err
		}
	}
	return nil
}

// checkPeer applies the defaults of peer i and checks it; names holds the
// names of the peers before it.
func (c *Config) checkPeer(i int, names map[string]bool) error {
	p := &c.Peers[i]
	k := func(f string) string { return fmt.Sprintf("peer[%d].%s", i, f) }
	if p.Name == "" {
		p.Name = fmt.Sprintf("peer%d", i)
	}
	if names[p.Name] {
		return keyErr(k("name"), "%q names two peers", p.Name)
	}
	if strings.HasPrefix(p.Name, "oe-") {
		return keyErr(k("name"), "%q: names starting with \"oe-\" are opportunistic peers", p.Name)
	}
	names[p.Name] = true
	if !p.Address.IsValid() {
		return keyErr(k("address"), "missing: the peer's IP address")
	}
	for _, port := range []struct {
		v    *int
		def  int
		name string
	}{{&p.IKEPort, 500, "ike_port"}, {&p.NATTPort, 4500, "natt_port"}} {
		if *port.v == 0 {
			*port.v = port.def
		}
		if *port.v < 1 || *port.v > 65535 {
			return keyErr(k(port.name), "%d is not a port", *port.v)
		}
	}
	if len(p.Local) == 0 {
		return keyErr(k("local"), "missing: the local traffic selectors")
	}
	if len(p.Remote) == 0 {
		return keyErr(k("remote"), "missing: the remote traffic selectors")
	}
	if err := p.checkAuth(k); err != nil {
		return err
	}
	if err := p.parseIdentities(k); err != nil {
		return err
	}
	if err := p.parseProposals(k); err != nil {
		return err
	}
	if err := c.loadCredentials(p, k); err != nil {
		return err
	}
	return p.checkTimers(k)
}

// checkAuth checks that the peer names an authentication method and the
// files or secret it needs.
func (p *Peer) checkAuth(k func(string) string) error {
	switch p.Auth {
	case AuthPSK:
		if len(p.PSK) < 16 {
			return keyErr(k("psk"), "a pre-shared key needs at least 16 characters")
		}
	case AuthPubkey:
		if p.PrivateKey == "" {
			return keyErr(k("private_key"), "missing: the PEM file of our private key")
		}
		if p.RemotePublicKey == "" {
			return keyErr(k("remote_public_key"), "missing: the PEM file of the peer's public key")
		}
	case AuthCert:
		if p.PrivateKey == "" {
			return keyErr(k("private_key"), "missing: the PEM file of our private key")
		}
		if p.Certificate == "" {
			return keyErr(k("certificate"), "missing: the PEM file of our certificate")
		}
		if p.RemoteCert == "" && p.CA == "" {
			return keyErr(k("remote_certificate"), "missing: the peer's certificate to pin, or a ca to trust")
		}
	case AuthNull:
	case "":
		return keyErr(k("auth"), "missing: one of %q, %q, %q, %q", AuthPSK, AuthPubkey, AuthCert, AuthNull)
	default:
		return keyErr(k("auth"), "%q is not one of %q, %q, %q, %q", p.Auth, AuthPSK, AuthPubkey, AuthCert, AuthNull)
	}
	if p.Auth != AuthNull && p.Auth != AuthCert && p.LocalID == "" {
		return keyErr(k("local_id"), "missing: our identity (an address, a domain name or user@domain)")
	}
	return nil
}

// parseIdentities parses local_id and remote_id; without remote_id, a
// peer that authenticates must prove it is its address.
func (p *Peer) parseIdentities(k func(string) string) error {
	var err error
	if p.LocalID != "" {
		if p.LocalIdentity, err = ike.ParseIdentity(p.LocalID); err != nil {
			return keyErr(k("local_id"), "%v", err)
		}
	}
	switch {
	case p.RemoteID != "":
		if p.RemoteIdentity, err = ike.ParseIdentity(p.RemoteID); err != nil {
			return keyErr(k("remote_id"), "%v", err)
		}
	case p.Auth != AuthNull:
		// The peer must prove it is its address (with a certificate:
		// one that names the address), not whoever a CA vouches for.
		// AUTH_NULL peers prove nothing: no default.
		p.RemoteIdentity = ike.IdentityOf(p.Address)
	}
	return nil
}

// parseProposals parses the IKE and ESP proposals, defaults applied.
func (p *Peer) parseProposals(k func(string) string) error {
	if p.IKEProposals == "" {
		p.IKEProposals = ike.DefaultIKEProposals
	}
	if p.ESPProposals == "" {
		p.ESPProposals = ike.DefaultESPProposals
	}
	var err error
	if p.IKE, err = ike.ParseProposals(p.IKEProposals, ike.ProtoIKE); err != nil {
		return keyErr(k("ike_proposals"), "%v", err)
	}
	if p.ESP, err = ike.ParseProposals(p.ESPProposals, ike.ProtoESP); err != nil {
		return keyErr(k("esp_proposals"), "%v", err)
	}
	return nil
}

// loadCredentials loads the key, certificates and trust anchors the
// peer's authentication method names.
func (c *Config) loadCredentials(p *Peer, k func(string) string) error {
	var err error
	switch p.Auth {
	case AuthCert:
		return c.loadCertificates(p, k)
	case AuthPubkey:
		if p.Signer, err = loadPrivateKey(c.resolve(p.PrivateKey)); err != nil {
			return keyErr(k("private_key"), "%v", err)
		}
		if p.RemoteKey, err = loadPublicKey(c.resolve(p.RemotePublicKey)); err != nil {
			return keyErr(k("remote_public_key"), "%v", err)
		}
	}
	return nil
}

// loadCertificates loads a certificate peer's private key, our chain (each
// certificate issued by the next), the pinned certificates and the CAs.
func (c *Config) loadCertificates(p *Peer, k func(string) string) error {
	var err error
	if p.Signer, err = loadPrivateKey(c.resolve(p.PrivateKey)); err != nil {
		return keyErr(k("private_key"), "%v", err)
	}
	certs, err := loadCerts(c.resolve(p.Certificate))
	if err != nil {
		return keyErr(k("certificate"), "%v", err)
	}
	p.Cert, p.CertChain = certs[0], certs[1:]
	if !publicKeysEqual(p.Cert.PublicKey, p.Signer.Public()) {
		return keyErr(k("certificate"), "the certificate is not for the key in private_key")
	}
	for i := 1; i < len(certs); i++ {
		// Our certificate, then its issuer, and so on: the chain
		// sent to the peer.
		if err := certs[i-1].CheckSignatureFrom(certs[i]); err != nil {
			return keyErr(k("certificate"), "certificate %d (%s) did not issue certificate %d (%s): list the chain from ours to the root: %v",
				i+1, certs[i].Subject, i, certs[i-1].Subject, err)
		}
	}
	if p.RemoteCert != "" {
		if p.RemoteCerts, err = loadCerts(c.resolve(p.RemoteCert)); err != nil {
			return keyErr(k("remote_certificate"), "%v", err)
		}
	}
	if p.CA != "" {
		cas, err := loadCerts(c.resolve(p.CA))
		if err != nil {
			return keyErr(k("ca"), "%v", err)
		}
		p.Roots, p.CACerts = x509.NewCertPool(), cas
		for _, ca := range cas {
			p.Roots.AddCert(ca)
		}
	}
	return nil
}

// checkTimers checks the peer's lifetimes, retransmission, fragment size
// and start mode.
func (p *Peer) checkTimers(k func(string) string) error {
	for _, dur := range []struct {
		v    Duration
		name string
		min  time.Duration
	}{{p.IKELifetime, "ike_lifetime", time.Second}, {p.ChildLifetime, "child_lifetime", time.Second},
		{p.RetransmitBase, "retransmit_timeout", 10 * time.Millisecond}} {
		if dur.v != 0 && time.Duration(dur.v) < dur.min {
			return keyErr(k(dur.name), "%v is shorter than %v", time.Duration(dur.v), dur.min)
		}
	}
	if p.FragmentSize != 0 && (p.FragmentSize < 200 || p.FragmentSize > 65000) {
		return keyErr(k("fragment_size"), "%d is outside 200..65000", p.FragmentSize)
	}
	if p.RetransmitTries < 0 || p.RetransmitTries > 20 {
		return keyErr(k("retransmit_tries"), "%d is outside 1..20", p.RetransmitTries)
	}
	switch p.Start {
	case "":
		p.Start = StartNow
	case StartNow, StartTraffic, StartNever:
	default:
		return keyErr(k("start"), "%q is not %q, %q or %q", p.Start, StartNow, StartTraffic, StartNever)
	}
	return nil
}

// resolve makes a path relative to the configuration file's directory.
func (c *Config) resolve(p string) string {
	if filepath.IsAbs(p) || c.Path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.Path), p)
}

// loadPrivateKey reads a PEM private key: PKCS#8 ("PRIVATE KEY"; Ed25519,
// ECDSA or RSA), PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"),
// refusing a file that others can read.
func loadPrivateKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: private key readable by group or others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	blk, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	var k any
	switch blk.Type {
	case "RSA PRIVATE KEY": // PKCS#1, as strongSwan's pki --gen and openssl genrsa write
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY": // SEC 1
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %q PEM block: %v", path, blk.Type, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key type %T cannot sign", path, k)
	}
	return s, nil
}

// maxFileSize bounds the configuration, key and certificate files read.
const maxFileSize = 1 << 20

// readFile reads a regular file of at most maxFileSize octets (not a
// device or a FIFO that never ends).
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d octets", path, maxFileSize)
	}
	return data, nil
}

// loadCerts reads the PEM certificates in a file.
func loadCerts(path string) ([]*x509.Certificate, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return certs, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// readPEM reads the first PEM block of a file.
func readPEM(path string) (*pem.Block, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return blk, nil
}

// loadPublicKey reads a PEM SubjectPublicKeyInfo ("PUBLIC KEY").
func loadPublicKey(path string) (crypto.PublicKey, error) {
	blk, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return k, nil
}

// locator finds the line of a key in the file's text.
type locator struct{ lines []string }

// find returns the line of a toml.Key such as ["sa", "foo"], searching in
// the tables named by its leading parts.
func (l locator) find(k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	return l.lineOf(strings.Join(k[:len(k)-1], "."), -1, k[len(k)-1])
}

// findDotted locates a key written as "table.key" or "table[i].key".
func (l locator) findDotted(key string) int {
	dot := strings.LastIndex(key, ".")
	if dot < 0 {
		return 0
	}
	table, field := key[:dot], key[dot+1:]
	idx := -1
	if open := strings.Index(table, "["); open >= 0 {
		idx, _ = strconv.Atoi(strings.TrimSuffix(table[open+1:], "]"))
		table = table[:open]
	}
	return l.lineOf(table, idx, field)
}

// lineOf returns the 1-based line of field inside table (the idx-th array
// table of that name when idx ≥ 0), or of the table's header when the field
// is absent, or 0.
func (l locator) lineOf(table string, idx int, field string) int {
	cur, count, header := "", -1, 0
	for i, raw := range l.lines {
		s := strings.TrimSpace(raw)
		switch {
		case strings.HasPrefix(s, "[["):
			cur = strings.TrimSpace(strings.Trim(strings.SplitN(s, "#", 2)[0], "[] \t"))
			if cur == table {
				count++
			}
		case strings.HasPrefix(s, "["):
			cur = strings.TrimSpace(strings.Trim(strings.SplitN(s, "#", 2)[0], "[] \t"))
			if cur == table {
				count = 0
			}
		default:
			if cur != table || (idx >= 0 && count != idx) {
				continue
			}
			if name, _, ok := strings.Cut(s, "="); ok && strings.Trim(strings.TrimSpace(name), `"'`) == field {
				return i + 1
			}
			continue
		}
		if cur == table && (idx < 0 || count == idx) {
			header = i + 1
		}
	}
	return header
}

// checkOE validates [opportunism] and applies its defaults.
func (c *Config) checkOE() error {
	o := &c.OE
	if o.Resolver == "" {
		o.Resolver = systemResolver()
	} else if _, err := netip.ParseAddrPort(o.Resolver); err != nil {
		a, err2 := netip.ParseAddr(o.Resolver)
		if err2 != nil {
			return keyErr("opportunism.resolver", "%q is not an address or address:port", o.Resolver)
		}
		o.Resolver = netip.AddrPortFrom(a, 53).String()
	}
	if o.DNSSEC == "" {
		o.DNSSEC = "require"
	}
	if o.TrustAnchors != "" {
		var err error
		if o.Anchors, err = dnsoe.LoadTrustAnchors(c.resolve(o.TrustAnchors)); err != nil {
			return keyErr("opportunism.trust_anchors", "%v", err)
		}
	}
	if o.DNSListen != "" {
		if _, err := netip.ParseAddrPort(o.DNSListen); err != nil {
			return keyErr("opportunism.dns_listen", "%q is not address:port (e.g. \"127.0.0.1:53\")", o.DNSListen)
		}
	}
	switch strings.ToLower(o.DNSSEC) {
	case "require":
		o.Mode = dnsoe.DNSSECRequire
	case "prefer":
		o.Mode = dnsoe.DNSSECPrefer
	case "off":
		o.Mode = dnsoe.DNSSECOff
	default:
		return keyErr("opportunism.dnssec", "%q is not one of require, prefer, off", o.DNSSEC)
	}
	switch o.Auth {
	case "", AuthNull:
		o.Auth = AuthNull
		if o.PrivateKey != "" || o.ID != "" {
			return keyErr("opportunism.auth", "is %q, but private_key or id is set: use auth = %q to authenticate with the key", AuthNull, AuthPubkey)
		}
	case AuthPubkey:
		if o.PrivateKey == "" {
			return keyErr("opportunism.private_key", "missing: the PEM file of our private key (its public key is published in DNS)")
		}
		var err error
		if o.Signer, err = loadPrivateKey(c.resolve(o.PrivateKey)); err != nil {
			return keyErr("opportunism.private_key", "%v", err)
		}
		if o.ID != "" {
			if o.Identity, err = ike.ParseIdentity(o.ID); err != nil {
				return keyErr("opportunism.id", "%v", err)
			}
		}
	default:
		return keyErr("opportunism.auth", "%q is not one of %q, %q", o.Auth, AuthNull, AuthPubkey)
	}
	for _, d := range []struct {
		v        *Duration
		def, min time.Duration
		key      string
	}{{&o.Timeout, 2 * time.Second, 100 * time.Millisecond, "timeout"}, {&o.ShuntTTL, 15 * time.Minute, time.Second, "shunt_ttl"},
		{&o.Lifespan, policy.InitialLifespan, time.Second, "lifespan"}, {&o.ExtendedLifespan, policy.ExtendedLifespan, time.Second, "extended_lifespan"},
		{&o.DNSWait, 2 * time.Second, 10 * time.Millisecond, "dns_wait"}, {&o.IKELifetime, 4 * time.Hour, time.Second, "ike_lifetime"}} {
		if *d.v == 0 {
			*d.v = Duration(d.def)
		}
		if time.Duration(*d.v) < d.min {
			return keyErr("opportunism."+d.key, "%v is shorter than %v", time.Duration(*d.v), d.min)
		}
	}
	return nil
}

// systemResolver returns the first nameserver of /etc/resolv.conf, or
// 127.0.0.53:53.
func systemResolver() string {
	data, err := os.ReadFile("/etc/resolv.conf")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "nameserver" {
				if a, err := netip.ParseAddr(f[1]); err == nil {
					return netip.AddrPortFrom(a, 53).String()
				}
			}
		}
	}
	return "127.0.0.53:53"
}

// checkAutoVPN validates [autovpn] and applies its defaults.
func (c *Config) checkAutoVPN() error {
	a := &c.AutoVPN
	if !a.Enabled() {
		if a.Certificate != "" || a.PrivateKey != "" {
			return keyErr("autovpn.protected", "missing: the hosts (or own addresses) AutoVPN protects")
		}
		return nil
	}
	switch a.Mode {
	case "":
		a.Mode = "gateway"
	case "gateway", "host":
	default:
		return keyErr("autovpn.mode", "%q is not gateway or host", a.Mode)
	}
	if c.Interface.Mode != ModeTUN {
		return keyErr("autovpn.protected", "AutoVPN needs mode = %q (it routes and intercepts the hosts' packets)", ModeTUN)
	}
	if c.Interface.Table+1 == 253 {
		return keyErr("interface.table", "AutoVPN uses table+1, which must not be 253 (default)")
	}
	if a.Certificate == "" {
		return keyErr("autovpn.certificate", "missing: our certificate (oevpn keygen -cert DN)")
	}
	if a.PrivateKey == "" {
		return keyErr("autovpn.private_key", "missing: the PEM file of our private key")
	}
	var err error
	if a.Signer, err = loadPrivateKey(c.resolve(a.PrivateKey)); err != nil {
		return keyErr("autovpn.private_key", "%v", err)
	}
	certs, err := loadCerts(c.resolve(a.Certificate))
	if err != nil {
		return keyErr("autovpn.certificate", "%v", err)
	}
	a.Cert = certs[0]
	if !publicKeysEqual(a.Cert.PublicKey, a.Signer.Public()) {
		return keyErr("autovpn.certificate", "the certificate is not for the key in private_key")
	}
	var caCerts []*x509.Certificate
	if a.CA != "" {
		if caCerts, err = loadCerts(c.resolve(a.CA)); err != nil {
			return keyErr("autovpn.ca", "%v", err)
		}
		a.Roots = x509.NewCertPool()
		for _, ca := range caCerts {
			a.Roots.AddCert(ca)
		}
	}
	for i, path := range a.CRL {
		if a.CA == "" {
			return keyErr("autovpn.crl", "revocation lists need the ca that signs them")
		}
		crl, err := loadCRL(c.resolve(path), caCerts)
		if err != nil {
			return keyErr("autovpn.crl", "crl[%d]: %v", i, err)
		}
		a.CRLs = append(a.CRLs, crl)
	}
	if a.TrustStore == "" {
		a.TrustStore = "/var/lib/oevpn/" + c.Interface.Name + ".trust"
	} else {
		a.TrustStore = c.resolve(a.TrustStore)
	}
	if a.UnverifiedTTL == 0 {
		a.UnverifiedTTL = Duration(policy.DefaultUnverifiedTTL)
	}
	if a.SharedSecret == nil {
		t := true
		a.SharedSecret = &t
	}
	for state, v := range a.Fallback {
		switch state {
		case "unknown", "unverified", "trusted", "untrusted", "managed":
		default:
			return keyErr("autovpn.fallback", "%q is not a trust state (unknown, unverified, trusted, untrusted, managed)", state)
		}
		if v != "clear" && v != "drop" {
			return keyErr("autovpn.fallback", "%s = %q: want \"clear\" or \"drop\"", state, v)
		}
	}
	return nil
}

// loadCRL reads a PEM or DER revocation list and checks its signature by
// one of the CAs.
func loadCRL(path string, issuers []*x509.Certificate) (*x509.RevocationList, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(data); blk != nil {
		data = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, err
	}
	for _, ca := range issuers {
		if crl.CheckSignatureFrom(ca) == nil {
			return crl, nil
		}
	}
	return nil, errors.New("not signed by the configured ca")
}
