// Package config reads oevpn's TOML configuration. Every error names the
// file, the line and the key it is about.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/oevpn/oevpn/esp"
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

// Config is a whole configuration file.
type Config struct {
	Interface Interface `toml:"interface"`
	SAs       []SA      `toml:"sa"`
	// Path is the file the configuration came from.
	Path string `toml:"-"`
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
	LogLevel  string         `toml:"log_level"`
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
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && len(c.SAs) > 0 && fi.Mode().Perm()&0o077 != 0 {
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

// check applies defaults and validates what the TOML types cannot.
func (c *Config) check() error {
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
	switch strings.ToLower(in.LogLevel) {
	case "", "info", "debug", "warn", "error":
	default:
		return keyErr("interface.log_level", "%q is not one of debug, info, warn, error", in.LogLevel)
	}
	spis := map[uint32]string{}
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
		}
		if sa.ReplayWindow < 0 || sa.ReplayWindow > esp.MaxReplayWindow {
			return keyErr(k("replay_window"), "%d is outside 0..%d", sa.ReplayWindow, esp.MaxReplayWindow)
		}
	}
	return nil
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
	table, field, ok := strings.Cut(key, ".")
	if !ok {
		return 0
	}
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
