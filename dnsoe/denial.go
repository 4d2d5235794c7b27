package dnsoe

import (
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/oevpn/oevpn/internal/dnsname"
)

// denied is what a denial of existence proved.
type denied struct {
	// sec is secure when proven, insecure for an NSEC3 opt-out span
	// (RFC 5155 §6: an unsigned delegation may be there), bogus when
	// not proven.
	sec security
	// nxdomain: the name does not exist; else it has no record of the
	// type asked.
	nxdomain bool
	// types, for a denial by a record of the name itself, are the types
	// it has (its NSEC or NSEC3 type bitmap).
	types map[uint16]bool
	ttl   time.Duration
}

// denial checks that in, a negative answer to name/qtype from zone z
// (secure), proves what its rcode says: with NSEC (RFC 4035 §5.4) or NSEC3
// (RFC 5155 §8) records of z, signed by z's keys.
func (v *validator) denial(z zone, name string, qtype uint16, in *dns.Msg, now time.Time) denied {
	p := v.proofs(z, in, now)
	var d denied
	if len(p.nsec3) > 0 {
		d = p.deny3(name, qtype)
	} else {
		d = p.denyNSEC(name, qtype)
	}
	if d.sec == secure && d.nxdomain != (in.Rcode == dns.RcodeNameError) {
		d.sec = bogus // e.g. an NXDOMAIN "proven" by a NODATA proof
	}
	d.ttl = p.ttl
	return d
}

// proofs are the validated NSEC or NSEC3 records of one zone in an answer.
type proofs struct {
	zone  string
	nsec  []*dns.NSEC
	nsec3 []*dns.NSEC3
	ttl   time.Duration
}

// proofs collects the NSEC and NSEC3 records of the authority section
// that z signed; others are ignored.
func (v *validator) proofs(z zone, in *dns.Msg, now time.Time) *proofs {
	p := &proofs{zone: z.name, ttl: time.Hour}
	seen := map[string]bool{}
	for _, rr := range in.Ns {
		h := rr.Header()
		if h.Rrtype != dns.TypeNSEC && h.Rrtype != dns.TypeNSEC3 {
			continue
		}
		k := canonical(h.Name) + "/" + dns.TypeToString[h.Rrtype]
		if seen[k] {
			continue
		}
		if seen[k] = true; len(seen) > maxProofs {
			break
		}
		set, sigs := rrset(in.Ns, h.Name, h.Rrtype)
		if len(set) != 1 {
			continue // an owner has one NSEC (NSEC3) record
		}
		if r, ok := set[0].(*dns.NSEC3); ok {
			// RFC 5155 §8.1-2: SHA-1 only, no unknown flags; RFC 9276:
			// bounded iterations; the owner is a hash just under the zone.
			if r.Hash != dns.SHA1 || r.Flags&^1 != 0 || r.Iterations > maxNSEC3Iterations ||
				dns.CountLabel(r.Hdr.Name) != dns.CountLabel(z.name)+1 {
				continue
			}
		}
		// NSEC and NSEC3 records are never expanded from a wildcard.
		sigs = slices.DeleteFunc(sigs, func(s *dns.RRSIG) bool { return int(s.Labels) != dns.CountLabel(h.Name) })
		ttl, ok := v.verify(set, sigs, z, now)
		if !ok {
			continue
		}
		p.ttl = min(p.ttl, ttl)
		switch r := set[0].(type) {
		case *dns.NSEC:
			p.nsec = append(p.nsec, r)
		case *dns.NSEC3:
			p.nsec3 = append(p.nsec3, r)
		}
	}
	return p
}

func bitmap(types []uint16) map[uint16]bool {
	m := make(map[uint16]bool, len(types))
	for _, t := range types {
		m[t] = true
	}
	return m
}

// nodataAt checks the types of a record that exists at name for a NODATA
// answer to qtype.
func nodataAt(types map[uint16]bool, qtype uint16) denied {
	switch {
	case types[qtype], types[dns.TypeCNAME]:
		return denied{sec: bogus} // the type exists
	case qtype != dns.TypeDS && types[dns.TypeNS] && !types[dns.TypeSOA]:
		return denied{sec: bogus} // the parent's side of a delegation says nothing of the child's data
	case qtype == dns.TypeDS && types[dns.TypeSOA]:
		return denied{sec: bogus} // the child's apex: DS lives in the parent
	}
	return denied{sec: secure, types: types}
}

// --- NSEC (RFC 4035 §5.4) ---

func (p *proofs) matchNSEC(name string) *dns.NSEC {
	for _, n := range p.nsec {
		if sameName(n.Hdr.Name, name) {
			return n
		}
	}
	return nil
}

// coverNSEC returns the NSEC whose span holds name (owner < name < next,
// the last one wrapping to the apex), unless name is below a delegation or
// a DNAME at its owner.
func (p *proofs) coverNSEC(name string) *dns.NSEC {
	for _, n := range p.nsec {
		o, next := n.Hdr.Name, n.NextDomain
		if !dns.IsSubDomain(p.zone, next) {
			continue
		}
		t := bitmap(n.TypeBitMap)
		if dns.IsSubDomain(o, name) && (t[dns.TypeNS] && !t[dns.TypeSOA] || t[dns.TypeDNAME]) {
			continue
		}
		lo, hi := dnsname.Compare(o, name), dnsname.Compare(name, next)
		if lo < 0 && (hi < 0 || dnsname.Compare(next, o) <= 0) {
			return n
		}
	}
	return nil
}

func (p *proofs) denyNSEC(name string, qtype uint16) denied {
	if m := p.matchNSEC(name); m != nil {
		return nodataAt(bitmap(m.TypeBitMap), qtype)
	}
	c := p.coverNSEC(name)
	if c == nil {
		return denied{sec: bogus}
	}
	if dns.IsSubDomain(name, c.NextDomain) {
		return denied{sec: secure, types: map[uint16]bool{}} // an empty non-terminal
	}
	// The closest encloser is the longest ancestor of name that the
	// covering NSEC shows to exist; its wildcard must not exist either.
	ce := lastLabels(name, max(dns.CompareDomainName(name, c.Hdr.Name), dns.CompareDomainName(name, c.NextDomain)))
	if !dns.IsSubDomain(p.zone, ce) {
		return denied{sec: bogus}
	}
	wc := "*." + ce
	if w := p.matchNSEC(wc); w != nil {
		d := nodataAt(bitmap(w.TypeBitMap), qtype) // NODATA by a wildcard
		d.types = nil
		return d
	}
	if p.coverNSEC(wc) == nil {
		return denied{sec: bogus}
	}
	return denied{sec: secure, nxdomain: true}
}

// --- NSEC3 (RFC 5155 §8) ---

func (p *proofs) match3(name string) *dns.NSEC3 {
	for _, n := range p.nsec3 {
		if n.Match(name) {
			return n
		}
	}
	return nil
}

func (p *proofs) cover3(name string) *dns.NSEC3 {
	for _, n := range p.nsec3 {
		if n.Cover(name) && !n.Match(name) {
			return n
		}
	}
	return nil
}

// closestEncloser gives the closest encloser proof of name (RFC 5155
// §8.3): the longest ancestor with a matching NSEC3, which is no
// delegation or DNAME, and the NSEC3 covering the next closer name.
func (p *proofs) closestEncloser(name string) (string, *dns.NSEC3, bool) {
	for ce := parent(name); dns.IsSubDomain(p.zone, ce); ce = parent(ce) {
		if m := p.match3(ce); m != nil {
			t := bitmap(m.TypeBitMap)
			if t[dns.TypeNS] && !t[dns.TypeSOA] || t[dns.TypeDNAME] {
				return "", nil, false
			}
			cov := p.cover3(nextCloser(name, ce))
			return ce, cov, cov != nil
		}
		if ce == "." || sameName(ce, p.zone) {
			break
		}
	}
	return "", nil, false
}

func (p *proofs) deny3(name string, qtype uint16) denied {
	if m := p.match3(name); m != nil {
		return nodataAt(bitmap(m.TypeBitMap), qtype) // §8.5, §8.6
	}
	ce, cov, ok := p.closestEncloser(name)
	if !ok {
		return denied{sec: bogus}
	}
	optOut := cov.Flags&1 != 0
	wc := "*." + ce
	if w := p.match3(wc); w != nil {
		d := nodataAt(bitmap(w.TypeBitMap), qtype) // §8.7: NODATA by a wildcard
		d.types = nil
		return d
	}
	if qtype == dns.TypeDS && optOut {
		return denied{sec: insecure} // §8.6: maybe an unsigned delegation in an opt-out span
	}
	if p.cover3(wc) == nil { // §8.4: no wildcard either
		return denied{sec: bogus}
	}
	if optOut {
		return denied{sec: insecure, nxdomain: true} // §9.2: the name may be an unsigned delegation
	}
	return denied{sec: secure, nxdomain: true}
}

// --- names ---

// canonical is name, fully qualified and in lower case (names unpacked
// from the wire are escaped, so this is one string per wire name).
func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func sameName(a, b string) bool { return strings.EqualFold(dns.Fqdn(a), dns.Fqdn(b)) }

// parent is name without its first label ("." for the root).
func parent(name string) string {
	off, end := dns.NextLabel(name, 0)
	if end || off >= len(name) {
		return "."
	}
	return name[off:]
}

// lastLabels is the ancestor of name with n labels.
func lastLabels(name string, n int) string {
	idx := dns.Split(name)
	if n <= 0 || len(idx) == 0 {
		return "."
	}
	if n >= len(idx) {
		return name
	}
	return name[idx[len(idx)-n]:]
}

// nextCloser is the ancestor of name one label longer than ce.
func nextCloser(name, ce string) string {
	return lastLabels(name, dns.CountLabel(ce)+1)
}
