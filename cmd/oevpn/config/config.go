// Package config reads oevpn's TOML configuration. Every error names the
// file, the line and the key it is about.
package config

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
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

// DefaultControl is the control socket of the endpoint whose device is
// name, in RuntimeDir.
func DefaultControl(name string) string {
	if runtime.GOOS == "windows" {
		return filepath.Join(os.TempDir(), "oevpn-"+name+".sock")
	}
	return filepath.Join(RuntimeDir(), name+".sock")
}

// SystemRuntimeDir holds the control sockets of endpoints run by root.
const SystemRuntimeDir = "/run/oevpn"

// RuntimeDir holds the control sockets of this user's endpoints:
// SystemRuntimeDir for root, $XDG_RUNTIME_DIR/oevpn for others (or, without
// it, oevpn-UID in the temporary directory).
func RuntimeDir() string {
	if privileged() {
		return SystemRuntimeDir
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "oevpn")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("oevpn-%d", os.Geteuid()))
}

// DefaultStateDir is where the state that must outlive a run is kept:
// /var/lib/oevpn for root, $XDG_STATE_HOME/oevpn (~/.local/state/oevpn)
// for others.
func DefaultStateDir() string {
	if runtime.GOOS == "windows" {
		return filepath.Join(os.Getenv("ProgramData"), "oevpn")
	}
	if privileged() {
		return "/var/lib/oevpn"
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "oevpn")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "oevpn")
	}
	return filepath.Join(RuntimeDir(), "state")
}

// privileged reports whether we run as root (Windows: always, its paths
// do not depend on it). Tests replace it.
var privileged = func() bool { return os.Geteuid() <= 0 }

// Proxy is [proxy]: in netstack mode, proxies on the host through which
// applications reach the tunnel.
type Proxy struct {
	// SOCKS5 and HTTP are the host addresses the SOCKS5 server (RFC 1928)
	// and the HTTP CONNECT and forward proxy listen on ("" for none).
	SOCKS5 string `toml:"socks5"`
	HTTP   string `toml:"http"`
	// Username and Password, if set, are required of every client.
	Username string `toml:"username"`
	Password string `toml:"password"`
	// DNS, if set, is the DNS server ("addr:port") that names given to the
	// proxies are resolved with, reached through the tunnel (e.g. a
	// peer's); by default the opportunistic resolver, else the host's.
	DNS netip.AddrPort `toml:"dns"`
}

// Enabled reports whether a proxy is configured.
func (p *Proxy) Enabled() bool { return p.SOCKS5 != "" || p.HTTP != "" }

// Forward is one [[forward]]: TCP connections accepted on Listen are relayed
// to Connect. From "host" (the default) listens on the host and connects
// through the tunnel; from "tunnel" listens on the netstack, for peers, and
// connects from the host.
type Forward struct {
	From    string `toml:"from"`
	Listen  string `toml:"listen"`
	Connect string `toml:"connect"`
}

// Config is a whole configuration file.
type Config struct {
	Interface Interface `toml:"interface"`
	SAs       []SA      `toml:"sa"`
	Peers     []Peer    `toml:"peer"`
	Policy    Policy    `toml:"policy"`
	OE        OE        `toml:"opportunism"`
	AutoVPN   AutoVPN   `toml:"autovpn"`
	Proxy     Proxy     `toml:"proxy"`
	Forwards  []Forward `toml:"forward"`
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
	// LogFormat is "text" (the default) or "json" (one JSON object a
	// line, log/slog's JSONHandler).
	LogFormat string `toml:"log_format"`
	// Metrics, if set, is the address ("127.0.0.1:9474") of an HTTP
	// server of Prometheus metrics at /metrics.
	Metrics string `toml:"metrics"`
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

	// Classes is the table built from the above by the checks, and Rules
	// the exceptions it was built with.
	Classes *policy.Classes    `toml:"-"`
	Rules   []policy.Exception `toml:"-"`
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

// ControlSocket returns the control socket of the endpoint that the
// configuration at path describes, reading only [interface]: no key,
// certificate or trust store is opened, and the file's mode does not
// matter, so that commands that only talk to a running endpoint work for
// whoever may reach its socket.
func ControlSocket(path string) (string, error) {
	data, err := readFile(path)
	if err != nil {
		return "", err
	}
	var c struct {
		Interface struct {
			Name    string `toml:"name"`
			Control string `toml:"control"`
		} `toml:"interface"`
	}
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c); err != nil {
		return "", decodeError(path, locator{lines: strings.Split(string(data), "\n")}, err)
	}
	if c.Interface.Control != "" {
		return c.Interface.Control, nil
	}
	name := c.Interface.Name
	if name == "" {
		name = DefaultName
	}
	return DefaultControl(name), nil
}

// Parse reads and checks a configuration; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	var c Config
	loc := locator{lines: strings.Split(string(data), "\n")}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		return nil, decodeError(name, loc, err)
	}
	c.Path = name
	c.loc = loc
	if un := md.Undecoded(); len(un) > 0 {
		k := un[0]
		msg := "unknown key"
		if len(k) == 1 {
			msg += sectionHint(k[0])
		}
		return nil, &Error{File: name, Line: loc.find(k), Key: k.String(), Err: errors.New(msg)}
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

// badType matches the decoder's error for a value of the wrong type.
var badType = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): incompatible types: TOML value has type (.+); destination has type (.+)$`)

// tomlTypes and goTypes name the types of badType for people.
var (
	tomlTypes = map[string]string{"string": "a string", "int64": "a number", "float64": "a decimal number", "bool": "true or false",
		"[]any": "a list", "[]map[string]any": "a list of tables", "map[string]any": "a table", "time.Time": "a date"}
	goTypes = map[string]string{"map": "a table ([section] or { key = value })", "slice": `a list (e.g. ["…", "…"])`,
		"string": "a string in quotes", "primitive (string-like)": "a string in quotes", "float": "a number",
		"integer": "a whole number", "boolean": "true or false"}
)

// netipError matches the errors of net/netip's parsers, which values of
// addresses, prefixes and address:port pairs give.
var netipError = regexp.MustCompile(`^(?:netip\.)?Parse(Addr|Prefix|AddrPort)\("((?:[^"\\]|\\.)*)"\): (.*)$`)
