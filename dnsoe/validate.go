package dnsoe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// TrustAnchors are the DS or DNSKEY records oevpn's own DNSSEC validation
// starts from (the root's, or islands of trust), by zone.
type TrustAnchors struct {
	ds   map[string][]*dns.DS
	keys map[string][]*dns.DNSKEY
}

// ErrAnchors wraps errors in a trust-anchor file.
var ErrAnchors = errors.New("dnsoe: trust anchors")

// LoadTrustAnchors reads a file of DS and DNSKEY records in zone-file
// format (as unbound's trust-anchor-file, or the output of
// ldns-key2ds).
func LoadTrustAnchors(path string) (*TrustAnchors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAnchors, err)
	}
	defer f.Close()
	return ParseTrustAnchors(f, path)
}

// ParseTrustAnchors reads DS and DNSKEY records; name is used in errors.
func ParseTrustAnchors(r io.Reader, name string) (*TrustAnchors, error) {
	ta := &TrustAnchors{ds: map[string][]*dns.DS{}, keys: map[string][]*dns.DNSKEY{}}
	zp := dns.NewZoneParser(bufio.NewReader(r), ".", name)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		owner := canonical(rr.Header().Name)
		switch rr := rr.(type) {
		case *dns.DS:
			ta.ds[owner] = append(ta.ds[owner], rr)
		case *dns.DNSKEY:
			ta.keys[owner] = append(ta.keys[owner], rr)
		default:
			return nil, fmt.Errorf("%w: %s: a %s record is not a trust anchor (want DS or DNSKEY)", ErrAnchors, name, dns.TypeToString[rr.Header().Rrtype])
		}
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAnchors, err)
	}
	if len(ta.ds)+len(ta.keys) == 0 {
		return nil, fmt.Errorf("%w: %s holds no DS or DNSKEY record", ErrAnchors, name)
	}
	return ta, nil
}

// closest returns the anchored zone nearest above name (or name itself),
// or "" when no anchor covers name.
func (ta *TrustAnchors) closest(name string) string {
	for z := canonical(name); ; z = parent(z) {
		if len(ta.ds[z])+len(ta.keys[z]) > 0 {
			return z
		}
		if z == "." {
			return ""
		}
	}
}

// security is what validation concluded about an answer.
type security int

const (
	// insecure: no anchor covers the name, or a validated delegation
	// (a DS denial, or an NSEC3 opt-out span) proves that its zone is
	// unsigned.
	insecure security = iota
	// secure: the records or the denial validated up to an anchor.
	secure
	// bogus: the zone is signed and the answer failed validation.
	bogus
)

// worst is the weaker of two conclusions: bogus, then insecure, then
// secure.
func worst(a, b security) security {
	if a == bogus || b == bogus {
		return bogus
	}
	if a == insecure || b == insecure {
		return insecure
	}
	return secure
}

const (
	// maxChain bounds the CNAME/DNAME links followed.
	maxChain = 16
	// maxWalk bounds the labels walked down from a trust anchor (an
	// ip6.arpa name has 34).
	maxWalk = 40
	// maxVerify bounds the signature checks spent on one RRset, so that
	// colliding key tags and piles of signatures (KeyTrap,
	// CVE-2023-50387) cannot make one answer cost seconds.
	maxVerify = 8
	// maxProofs bounds the NSEC or NSEC3 RRsets considered in one
	// answer (a proof needs at most three).
	maxProofs = 8
	// maxNSEC3Iterations: answers with more iterations are refused as
	// bogus (RFC 9276 §3.2 lets validators do so), bounding hash work.
	maxNSEC3Iterations = 150
	// maxZoneCache bounds each of the validator's caches (zone keys and
	// zone cuts).
	maxZoneCache = 4096
	// failTTL is how long a failure to get a zone's keys or cut is
	// remembered.
	failTTL = 5 * time.Second
)

// validator checks answers against trust anchors, fetching DNSKEY and DS
// records through the resolver with checking disabled. It decides the zone
// of a name itself, by walking down from the closest anchor with DS
// queries, never from what an answer claims; every record set used must be
// owned by the name asked (or by the validated CNAME/DNAME chain from it)
// and signed by that zone's validated keys, and every denial of existence
// must be proven with that zone's NSEC or NSEC3 records.
type validator struct {
	anchors *TrustAnchors
	query   func(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)

	mu    sync.Mutex
	zones map[string]zoneKeys // validated DNSKEYs by zone
	cuts  map[string]zoneCut  // what a DS query at a name found
}

type zoneKeys struct {
	keys    []*dns.DNSKEY // validated; nil: none could be validated
	expires time.Time
}

// cutKind is what a DS query at a name proved.
type cutKind int

const (
	cutNone     cutKind = iota // no zone cut here
	cutSecure                  // a signed delegation: keys are the child's
	cutInsecure                // a delegation proven unsigned
	cutNXDomain                // the name does not exist (nor anything below it)
	cutBogus                   // the parent's answer failed validation
)

type zoneCut struct {
	kind    cutKind
	keys    []*dns.DNSKEY
	expires time.Time
}

// zone is where a name's records live and how far they can be trusted.
type zone struct {
	name string
	keys []*dns.DNSKEY // validated, when sec is secure
	sec  security
}

// zoneOf finds the zone of name by walking down from the closest trust
// anchor, one label at a time, asking for the DS records of each name on
// the way (RFC 4035 §5.2): a validated DS set is a signed delegation, a
// validated denial with NS in its type bitmap an unsigned one.
//
// hint, the signer that the answer names, saves most of those queries:
// when the walk shows it to be a signed zone above name, it is the zone
// (its data is then checked with its keys, and its denials prove on their
// own that no delegation lies between it and name). Otherwise, or without
// a hint, the walk goes on to name itself.
func (v *validator) zoneOf(ctx context.Context, name, hint string) (zone, error) {
	name = canonical(name)
	anchor := v.anchors.closest(name)
	if anchor == "" {
		return zone{sec: insecure}, nil
	}
	keys, err := v.keysOf(ctx, anchor, nil)
	if err != nil {
		return zone{}, err
	}
	top := zone{name: anchor, keys: keys, sec: secure}
	if keys == nil {
		return zone{name: anchor, sec: bogus}, nil
	}
	if hint = canonical(hint); hint != name && dns.IsSubDomain(anchor, hint) && dns.IsSubDomain(hint, name) {
		z, err := v.walk(ctx, top, hint)
		if err != nil || z.sec == secure && z.name == hint {
			return z, err
		}
	}
	return v.walk(ctx, top, name)
}

// walk goes down from z, a secure zone, to name.
func (v *validator) walk(ctx context.Context, z zone, name string) (zone, error) {
	below := ancestorsBelow(name, z.name)
	if len(below) > maxWalk {
		return zone{name: z.name, sec: bogus}, nil
	}
	for _, n := range below {
		c, err := v.cut(ctx, z, n)
		if err != nil {
			return zone{}, err
		}
		switch c.kind {
		case cutSecure:
			z = zone{name: n, keys: c.keys, sec: secure}
		case cutInsecure:
			return zone{name: n, sec: insecure}, nil
		case cutNXDomain:
			return z, nil
		case cutBogus:
			return zone{name: z.name, sec: bogus}, nil
		}
	}
	return z, nil
}

// signer is the deepest zone that signed the records owned by name in the
// answer, or the denial in its authority section: a hint of name's zone,
// to be checked.
func signer(in *dns.Msg, name string) string {
	best := ""
	consider := func(sig *dns.RRSIG) {
		if dns.IsSubDomain(sig.SignerName, name) && dns.CountLabel(sig.SignerName) > dns.CountLabel(best) {
			best = sig.SignerName
		}
	}
	for _, rr := range in.Answer {
		if sig, ok := rr.(*dns.RRSIG); ok && sameName(sig.Hdr.Name, name) {
			consider(sig)
		}
	}
	for _, rr := range in.Ns {
		if sig, ok := rr.(*dns.RRSIG); ok && (sig.TypeCovered == dns.TypeNSEC || sig.TypeCovered == dns.TypeNSEC3 || sig.TypeCovered == dns.TypeSOA) {
			consider(sig)
		}
	}
	return best
}

// ancestorsBelow lists the names from just below top down to name.
func ancestorsBelow(name, top string) []string {
	var out []string
	for n := name; n != top && n != "."; n = parent(n) {
		out = append(out, n)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// cut asks for the DS records of n, whose parent zone is z (secure).
func (v *validator) cut(ctx context.Context, z zone, n string) (zoneCut, error) {
	now := time.Now()
	v.mu.Lock()
	if c, ok := v.cuts[n]; ok && now.Before(c.expires) {
		v.mu.Unlock()
		return c, nil
	}
	v.mu.Unlock()
	in, err := v.query(ctx, n, dns.TypeDS)
	if err != nil {
		return zoneCut{}, err
	}
	c := zoneCut{kind: cutBogus}
	ttl := failTTL
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return zoneCut{}, fmt.Errorf("DS %s: %s", n, dns.RcodeToString[in.Rcode])
	}
	set, sigs := rrset(in.Answer, n, dns.TypeDS)
	switch {
	case len(set) > 0:
		if t, ok := v.verify(set, sigs, z, now); ok {
			var ds []*dns.DS
			for _, rr := range set {
				if d, ok := rr.(*dns.DS); ok {
					ds = append(ds, d)
				}
			}
			keys, err := v.keysOf(ctx, n, ds)
			if err != nil {
				return zoneCut{}, err
			}
			if keys != nil {
				c, ttl = zoneCut{kind: cutSecure, keys: keys}, t
			}
		}
	case len(rrsetOnly(in.Answer, n, dns.TypeCNAME)) > 0:
		// A CNAME (RFC 2317 classless reverse delegation): no zone cut
		// here, once z's signature over it checks.
		cn, sigs := rrset(in.Answer, n, dns.TypeCNAME)
		if t, ok := v.verify(cn, sigs, z, now); ok {
			c.kind, ttl = cutNone, t
		}
	case len(in.Answer) == 0:
		d := v.denial(z, n, dns.TypeDS, in, now)
		ttl = d.ttl
		switch {
		case d.sec == insecure: // an NSEC3 opt-out span: maybe an unsigned delegation
			c.kind = cutInsecure
		case d.sec != secure:
		case d.nxdomain:
			c.kind = cutNXDomain
		case d.types != nil && d.types[dns.TypeNS] && !d.types[dns.TypeSOA]:
			c.kind = cutInsecure // a delegation without DS
		default:
			c.kind = cutNone
		}
	}
	if c.kind == cutBogus {
		ttl = failTTL
	}
	c.expires = now.Add(min(ttl, time.Hour))
	v.mu.Lock()
	v.cuts = store(v.cuts, n, c, now, func(c zoneCut) time.Time { return c.expires })
	v.mu.Unlock()
	return c, nil
}

// store puts v in m, first making room when m holds maxZoneCache entries:
// expired ones go, and if none had, an arbitrary one.
func store[V any](m map[string]V, k string, v V, now time.Time, expires func(V) time.Time) map[string]V {
	if m == nil {
		m = map[string]V{}
	}
	if _, ok := m[k]; !ok && len(m) >= maxZoneCache {
		for k, e := range m {
			if !now.Before(expires(e)) {
				delete(m, k)
			}
		}
		for k := range m {
			if len(m) < maxZoneCache {
				break
			}
			delete(m, k)
		}
	}
	m[k] = v
	return m
}

// keysOf returns the validated DNSKEYs of zone: those a trust anchor names
// or (for a zone below an anchor) those the validated ds names, and the
// keys they sign. nil: none validated.
func (v *validator) keysOf(ctx context.Context, zone string, ds []*dns.DS) ([]*dns.DNSKEY, error) {
	now := time.Now()
	v.mu.Lock()
	if z, ok := v.zones[zone]; ok && now.Before(z.expires) && (z.keys != nil || ds == nil) {
		v.mu.Unlock()
		return z.keys, nil
	}
	v.mu.Unlock()
	in, err := v.query(ctx, zone, dns.TypeDNSKEY)
	if err != nil {
		return nil, err
	}
	keys, ttl := v.checkKeys(zone, ds, in, now)
	v.mu.Lock()
	v.zones = store(v.zones, zone, zoneKeys{keys: keys, expires: now.Add(min(ttl, time.Hour))}, now,
		func(z zoneKeys) time.Time { return z.expires })
	v.mu.Unlock()
	return keys, nil
}

// checkKeys accepts zone's DNSKEY RRset in in if a key that a trust anchor
// or ds names signed it.
func (v *validator) checkKeys(zone string, ds []*dns.DS, in *dns.Msg, now time.Time) ([]*dns.DNSKEY, time.Duration) {
	if in.Rcode != dns.RcodeSuccess {
		return nil, failTTL
	}
	set, sigs := rrset(in.Answer, zone, dns.TypeDNSKEY)
	var keys []*dns.DNSKEY
	for _, rr := range set {
		if k, ok := rr.(*dns.DNSKEY); ok {
			keys = append(keys, k)
		}
	}
	if ds == nil {
		ds = v.anchors.ds[zone]
	}
	// The entry points: keys an anchor names, or that a DS names.
	var entry []*dns.DNSKEY
	for _, k := range keys {
		if k.Flags&dns.ZONE == 0 || k.Protocol != 3 {
			continue
		}
		for _, ak := range v.anchors.keys[zone] {
			if k.Algorithm == ak.Algorithm && k.PublicKey == ak.PublicKey {
				entry = append(entry, k)
			}
		}
		for _, d := range ds {
			if k.KeyTag() == d.KeyTag && k.Algorithm == d.Algorithm {
				if own := k.ToDS(d.DigestType); own != nil && strings.EqualFold(own.Digest, d.Digest) {
					entry = append(entry, k)
				}
			}
		}
	}
	if ttl, ok := v.verify(set, sigs, zoneKeyed(zone, entry), now); ok {
		return keys, ttl
	}
	return nil, failTTL
}

func zoneKeyed(name string, keys []*dns.DNSKEY) zone {
	return zone{name: name, keys: keys, sec: secure}
}

// verify reports whether set (one RRset) carries a valid signature among
// sigs by z, with one of z's keys, and the TTL to keep it for. The set
// must be in z.
func (v *validator) verify(set []dns.RR, sigs []*dns.RRSIG, z zone, now time.Time) (time.Duration, bool) {
	if len(set) == 0 || z.sec != secure {
		return 0, false
	}
	h := set[0].Header()
	if !dns.IsSubDomain(z.name, h.Name) {
		return 0, false
	}
	tries := 0
	for _, sig := range sigs {
		if sig.TypeCovered != h.Rrtype || canonical(sig.SignerName) != z.name || !sig.ValidityPeriod(now) ||
			int(sig.Labels) > dns.CountLabel(h.Name) {
			continue
		}
		for _, k := range z.keys {
			if k.KeyTag() != sig.KeyTag || k.Algorithm != sig.Algorithm || k.Flags&dns.ZONE == 0 {
				continue
			}
			if tries++; tries > maxVerify {
				return 0, false
			}
			if sig.Verify(k, set) == nil {
				ttl := min(h.Ttl, sig.OrigTtl)
				for _, rr := range set {
					ttl = min(ttl, rr.Header().Ttl)
				}
				left := time.Unix(int64(sig.Expiration), 0).Sub(now) // RFC 4035 §5.3.3
				return min(time.Duration(ttl)*time.Second, max(left, 0)), true
			}
		}
	}
	return 0, false
}

// rrset returns the records of qtype owned by name in rrs, and the
// signatures over them.
func rrset(rrs []dns.RR, name string, qtype uint16) ([]dns.RR, []*dns.RRSIG) {
	var set []dns.RR
	var sigs []*dns.RRSIG
	for _, rr := range rrs {
		h := rr.Header()
		if h.Class != dns.ClassINET || !sameName(h.Name, name) {
			continue
		}
		if sig, ok := rr.(*dns.RRSIG); ok {
			if sig.TypeCovered == qtype {
				sigs = append(sigs, sig)
			}
		} else if h.Rrtype == qtype {
			set = append(set, rr)
		}
	}
	return set, sigs
}

// rrsetOnly is rrset without the signatures.
func rrsetOnly(rrs []dns.RR, name string, qtype uint16) []dns.RR {
	set, _ := rrset(rrs, name, qtype)
	return set
}

// checked is the outcome of validating one answer.
type checked struct {
	rrs []dns.RR // of the type asked, owned by the name or its chain's end
	sec security
	ttl time.Duration // of the records or the proof
}

// check validates in, the answer to name/qtype: it follows a validated
// CNAME or DNAME chain from name, and returns the RRset of qtype at its
// end, or a proven denial (no records, sec secure). An RRset owned by any
// other name is ignored; one with a missing or bad signature, or a denial
// without proof, in a signed zone is bogus.
func (v *validator) check(ctx context.Context, name string, qtype uint16, in *dns.Msg) (checked, error) {
	now := time.Now()
	name = canonical(name)
	out := checked{sec: secure, ttl: time.Hour}
	worse := func(s security) { out.sec = worst(out.sec, s) }
	for hop := 0; ; hop++ {
		if hop > maxChain {
			return checked{sec: bogus}, nil
		}
		z, err := v.zoneOf(ctx, name, signer(in, name))
		if err != nil {
			return checked{}, err
		}
		worse(z.sec)
		if set, sigs := rrset(in.Answer, name, qtype); len(set) > 0 {
			out.rrs = set
			if z.sec == secure {
				ttl, ok := v.verify(set, sigs, z, now)
				if !ok || !v.wildcardProven(z, name, sigs, in, now) {
					worse(bogus)
				}
				out.ttl = min(out.ttl, ttl)
			}
			return out, nil
		}
		// A CNAME at name, or a DNAME above it: follow it.
		if cn, sigs := rrset(in.Answer, name, dns.TypeCNAME); len(cn) == 1 && qtype != dns.TypeCNAME {
			if z.sec == secure {
				ttl, ok := v.verify(cn, sigs, z, now)
				if !ok || !v.wildcardProven(z, name, sigs, in, now) {
					return checked{rrs: nil, sec: bogus}, nil
				}
				out.ttl = min(out.ttl, ttl)
			}
			target, ok := cn[0].(*dns.CNAME)
			if !ok {
				return checked{sec: bogus}, nil
			}
			name = canonical(target.Target)
			continue
		}
		if next, ok, err := v.dname(ctx, name, in, &out, now); err != nil {
			return checked{}, err
		} else if ok {
			name = next
			continue
		}
		// Neither: a denial of existence, to be proven in a signed zone.
		if z.sec == secure {
			d := v.denial(z, name, qtype, in, now)
			worse(d.sec)
			out.ttl = min(out.ttl, d.ttl)
		}
		return out, nil
	}
}

// dname follows a DNAME in in whose owner is above name, once validated.
func (v *validator) dname(ctx context.Context, name string, in *dns.Msg, out *checked, now time.Time) (string, bool, error) {
	for _, rr := range in.Answer {
		d, ok := rr.(*dns.DNAME)
		if !ok || !dns.IsSubDomain(d.Hdr.Name, name) || sameName(d.Hdr.Name, name) {
			continue
		}
		owner := canonical(d.Hdr.Name)
		z, err := v.zoneOf(ctx, owner, signer(in, owner))
		if err != nil {
			return "", false, err
		}
		set, sigs := rrset(in.Answer, owner, dns.TypeDNAME)
		out.sec = worst(out.sec, z.sec)
		if z.sec == secure {
			ttl, ok := v.verify(set, sigs, z, now)
			if !ok || len(set) != 1 {
				out.sec = bogus
			}
			out.ttl = min(out.ttl, ttl)
		}
		next := canonical(strings.TrimSuffix(name, owner) + canonical(d.Target))
		if _, ok := dns.IsDomainName(next); !ok || len(next) > 255 || out.sec == bogus {
			out.sec = bogus
			return "", false, nil
		}
		return next, true, nil
	}
	return "", false, nil
}

// wildcardProven checks, for an RRset whose signature says it was
// expanded from a wildcard (RFC 4035 §5.3.4), that the zone proves that
// name itself does not exist.
func (v *validator) wildcardProven(z zone, name string, sigs []*dns.RRSIG, in *dns.Msg, now time.Time) bool {
	labels := dns.CountLabel(name)
	expanded := false
	for _, s := range sigs {
		if canonical(s.SignerName) == z.name && int(s.Labels) < labels {
			expanded = true
		}
	}
	if !expanded {
		return true
	}
	p := v.proofs(z, in, now)
	if len(p.nsec3) > 0 {
		// The closest encloser is what the signature's labels keep; the
		// next closer name must be covered.
		var ce string
		for _, s := range sigs {
			if int(s.Labels) < labels {
				ce = lastLabels(name, int(s.Labels))
			}
		}
		return p.cover3(nextCloser(name, ce)) != nil
	}
	return p.coverNSEC(name) != nil
}
