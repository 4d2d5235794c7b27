package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/policy"
)

// check applies defaults and validates what the TOML types cannot, section
// by section; the first error wins.
func (c *Config) check() error {
	for _, check := range []func() error{c.checkInterface, c.checkSAs, c.checkPolicy, c.checkOE, c.checkAutoVPN, c.checkPeers, c.checkProxies, c.checkPurpose} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// ErrNothingToDo is returned for a configuration that would start an
// endpoint doing nothing: no peer, no static SA, no policy class, no
// AutoVPN, no proxy.
var ErrNothingToDo = errors.New("nothing to do: no [[peer]], [[sa]], [policy] class, [autovpn] or [proxy] is configured (see config.example.toml)")

// checkPurpose refuses a configuration that does nothing: most likely the
// wrong file, or sections misspelt into it.
func (c *Config) checkPurpose() error {
	p := c.Policy
	if len(c.Peers)+len(c.SAs)+len(p.Block)+len(p.Clear)+len(p.Private)+len(p.PrivateOrClear)+len(p.ClearOrPrivate)+len(p.Exceptions) > 0 ||
		c.AutoVPN.Enabled() || c.Proxy.SOCKS5 != "" || c.Proxy.HTTP != "" || len(c.Forwards) > 0 {
		return nil
	}
	return ErrNothingToDo
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
	if in.IKEPort == nil && in.Mode == ModeNetstack && !privileged() {
		// Port 500 needs privileges: initiate from any port, and let
		// peers reach us on the NAT-T port (RFC 3948 framing).
		free := 0
		in.IKEPort = &free
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
	switch in.LogFormat {
	case "":
		in.LogFormat = "text"
	case "text", "json":
	default:
		return keyErr("interface.log_format", "%q is not \"text\" or \"json\"", in.LogFormat)
	}
	if in.Metrics != "" {
		if _, err := netip.ParseAddrPort(in.Metrics); err != nil {
			return keyErr("interface.metrics", "%q is not an address and port to listen on, e.g. \"127.0.0.1:9474\" or \"[::1]:9474\"", in.Metrics)
		}
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
	c.Policy.Classes, c.Policy.Rules = classes, exceptions
	return nil
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
		a.TrustStore = filepath.Join(c.Interface.StateDir, c.Interface.Name+".trust")
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

// checkProxies checks [proxy] and [[forward]], which serve applications of
// a netstack device (on a TUN they use the device itself).
func (c *Config) checkProxies() error {
	p := &c.Proxy
	if c.Interface.Mode != ModeNetstack {
		for _, f := range []struct {
			key string
			set bool
		}{{"proxy.socks5", p.SOCKS5 != ""}, {"proxy.http", p.HTTP != ""}, {"proxy.dns", p.DNS.IsValid()}} {
			if f.set {
				return keyErr(f.key, "the proxies serve a %q device (on a TUN, applications use the device): set interface.mode = %q", ModeNetstack, ModeNetstack)
			}
		}
	}
	for _, f := range []struct{ key, addr string }{{"proxy.socks5", p.SOCKS5}, {"proxy.http", p.HTTP}} {
		if f.addr == "" {
			continue
		}
		if err := checkHostPort(f.addr, false); err != nil {
			return keyErr(f.key, "%q: %v", f.addr, err)
		}
	}
	if p.SOCKS5 != "" && p.SOCKS5 == p.HTTP {
		return keyErr("proxy.http", "%q is also proxy.socks5: each proxy needs an address of its own", p.HTTP)
	}
	switch {
	case p.Username != "" && p.Password == "":
		return keyErr("proxy.username", "username and password go together: set both or neither")
	case p.Username == "" && p.Password != "":
		return keyErr("proxy.password", "username and password go together: set both or neither")
	}
	for i := range c.Forwards {
		f := &c.Forwards[i]
		k := func(s string) string { return fmt.Sprintf("forward[%d].%s", i, s) }
		if c.Interface.Mode != ModeNetstack {
			return keyErr(k("listen"), "port forwards serve a %q device: set interface.mode = %q", ModeNetstack, ModeNetstack)
		}
		switch f.From {
		case "":
			f.From = "host"
		case "host", "tunnel":
		default:
			return keyErr(k("from"), "%q is not \"host\" (listen on the host, connect through the tunnel) or \"tunnel\" (listen in the tunnel, connect from the host)", f.From)
		}
		if f.Listen == "" {
			return keyErr(k("listen"), "missing: the address to listen on, e.g. \"127.0.0.1:8022\"")
		}
		if err := checkHostPort(f.Listen, false); err != nil {
			return keyErr(k("listen"), "%q: %v", f.Listen, err)
		}
		if f.Connect == "" {
			return keyErr(k("connect"), "missing: where to connect, e.g. \"10.9.0.2:22\"")
		}
		if err := checkHostPort(f.Connect, true); err != nil {
			return keyErr(k("connect"), "%q: %v", f.Connect, err)
		}
	}
	return nil
}

// checkHostPort checks a "host:port" address: an IP address (or, if names
// is set, a name) and a port; a listen address may leave the host out.
func checkHostPort(s string, names bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("not host:port: %v", err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (names && n == 0) {
		return fmt.Errorf("%q is not a port", port)
	}
	switch {
	case host == "" && !names:
	case host == "":
		return fmt.Errorf("no host")
	default:
		if _, err := netip.ParseAddr(host); err != nil && !names {
			return fmt.Errorf("%q is not an IP address", host)
		}
	}
	return nil
}
