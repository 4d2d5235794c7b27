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
		owner := strings.ToLower(rr.Header().Name)
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

// maxChain bounds the delegations followed from a trust anchor.
const maxChain = 12

// validator checks RRsets against trust anchors, fetching DNSKEY and DS
// records through the resolver with checking disabled. Zone keys it has
// validated are cached until their signatures' TTL runs out.
type validator struct {
	anchors *TrustAnchors
	query   func(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)

	mu    sync.Mutex
	zones map[string]zoneKeys
}

type zoneKeys struct {
	keys    []*dns.DNSKEY // validated; nil: the zone is not secure
	expires time.Time
}

// verify reports whether rrs (one RRset) carries a valid signature among
// sigs by a key of a zone that chains to a trust anchor.
func (v *validator) verify(ctx context.Context, rrs []dns.RR, sigs []*dns.RRSIG, depth int) bool {
	if len(rrs) == 0 || depth > maxChain {
		return false
	}
	owner := strings.ToLower(rrs[0].Header().Name)
	now := time.Now()
	for _, sig := range sigs {
		signer := strings.ToLower(sig.SignerName)
		if sig.TypeCovered != rrs[0].Header().Rrtype || !dns.IsSubDomain(signer, owner) || !sig.ValidityPeriod(now) {
			continue
		}
		for _, k := range v.keysOf(ctx, signer, depth) {
			if k.KeyTag() == sig.KeyTag && k.Algorithm == sig.Algorithm && sig.Verify(k, rrs) == nil {
				return true
			}
		}
	}
	return false
}

// keysOf returns the validated DNSKEYs of zone, or nil.
func (v *validator) keysOf(ctx context.Context, zone string, depth int) []*dns.DNSKEY {
	v.mu.Lock()
	if z, ok := v.zones[zone]; ok && time.Now().Before(z.expires) {
		v.mu.Unlock()
		return z.keys
	}
	v.mu.Unlock()
	keys, ttl := v.fetchKeys(ctx, zone, depth)
	v.mu.Lock()
	if v.zones == nil {
		v.zones = map[string]zoneKeys{}
	}
	v.zones[zone] = zoneKeys{keys: keys, expires: time.Now().Add(ttl)}
	v.mu.Unlock()
	return keys
}

// fetchKeys fetches zone's DNSKEY RRset and accepts it if a key that a
// trust anchor or a validated DS names signed it.
func (v *validator) fetchKeys(ctx context.Context, zone string, depth int) ([]*dns.DNSKEY, time.Duration) {
	const retry = 30 * time.Second // how long a failure is remembered
	in, err := v.query(ctx, zone, dns.TypeDNSKEY)
	if err != nil || in.Rcode != dns.RcodeSuccess {
		return nil, retry
	}
	var set []dns.RR
	var keys []*dns.DNSKEY
	var sigs []*dns.RRSIG
	ttl := uint32(3600)
	for _, rr := range in.Answer {
		if !strings.EqualFold(rr.Header().Name, zone) {
			continue
		}
		switch rr := rr.(type) {
		case *dns.DNSKEY:
			set, keys = append(set, rr), append(keys, rr)
			ttl = min(ttl, rr.Hdr.Ttl)
		case *dns.RRSIG:
			sigs = append(sigs, rr)
		}
	}
	if len(keys) == 0 {
		return nil, retry
	}
	// The entry points: keys an anchor names, or that a validated DS
	// from the parent names.
	entry := map[uint16]*dns.DNSKEY{}
	for _, ak := range v.anchors.keys[zone] {
		for _, k := range keys {
			if k.Algorithm == ak.Algorithm && k.PublicKey == ak.PublicKey {
				entry[k.KeyTag()] = k
			}
		}
	}
	ds := v.anchors.ds[zone]
	if len(ds) == 0 && len(v.anchors.keys[zone]) == 0 {
		ds = v.parentDS(ctx, zone, depth)
	}
	for _, d := range ds {
		for _, k := range keys {
			if k.KeyTag() == d.KeyTag && k.Algorithm == d.Algorithm {
				if own := k.ToDS(d.DigestType); own != nil && strings.EqualFold(own.Digest, d.Digest) {
					entry[k.KeyTag()] = k
				}
			}
		}
	}
	now := time.Now()
	for _, sig := range sigs {
		if sig.TypeCovered != dns.TypeDNSKEY || !sig.ValidityPeriod(now) {
			continue
		}
		if k := entry[sig.KeyTag]; k != nil && sig.Verify(k, set) == nil {
			return keys, time.Duration(ttl) * time.Second
		}
	}
	return nil, retry
}

// parentDS fetches and validates zone's DS RRset from its parent.
func (v *validator) parentDS(ctx context.Context, zone string, depth int) []*dns.DS {
	if zone == "." {
		return nil
	}
	in, err := v.query(ctx, zone, dns.TypeDS)
	if err != nil || in.Rcode != dns.RcodeSuccess {
		return nil
	}
	var set []dns.RR
	var ds []*dns.DS
	var sigs []*dns.RRSIG
	for _, rr := range in.Answer {
		if !strings.EqualFold(rr.Header().Name, zone) {
			continue
		}
		switch rr := rr.(type) {
		case *dns.DS:
			set, ds = append(set, rr), append(ds, rr)
		case *dns.RRSIG:
			if rr.TypeCovered == dns.TypeDS {
				sigs = append(sigs, rr)
			}
		}
	}
	if !v.verify(ctx, set, sigs, depth+1) {
		return nil
	}
	return ds
}
