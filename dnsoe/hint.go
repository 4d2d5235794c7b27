package dnsoe

import (
	"errors"
	"fmt"
	"time"

	"github.com/miekg/dns"
)

// Why an answer failed DNSSEC validation (wrapped in ErrBogus) or was not
// validated (wrapped in ErrUnvalidated). Hint says what to do about each.
var (
	// ErrSignatureExpired: the answer's signatures have all expired (or
	// this host's clock is ahead).
	ErrSignatureExpired = errors.New("dnsoe: DNSSEC signatures expired")
	// ErrSignatureNotYetValid: the answer's signatures are all from the
	// future (this host's clock is behind, or the signer's ahead).
	ErrSignatureNotYetValid = errors.New("dnsoe: DNSSEC signatures not yet valid")
	// ErrNoSignatures: a signed zone's answer came without RRSIG
	// records: something on the way strips them, or forged the answer.
	ErrNoSignatures = errors.New("dnsoe: answer without DNSSEC signatures from a signed zone")
	// ErrBadSignature: the signatures are current but do not verify with
	// keys that chain to the trust anchor.
	ErrBadSignature = errors.New("dnsoe: DNSSEC signatures do not verify")
	// ErrResolverBogus: the validating resolver refused the answer as
	// bogus, without saying why (extended DNS error 6).
	ErrResolverBogus = errors.New("dnsoe: the resolver found the answer bogus")
	// ErrNoTrustAnchor: own validation, and no trust anchor covers the
	// name.
	ErrNoTrustAnchor = errors.New("dnsoe: no trust anchor covers the name")
	// ErrZoneUnsigned: own validation proved the name's zone unsigned.
	ErrZoneUnsigned = errors.New("dnsoe: the zone is not signed")
	// ErrResolverNotValidating: the resolver returned signatures but did
	// not say it validated them (no AD bit).
	ErrResolverNotValidating = errors.New("dnsoe: the resolver did not validate the answer (no AD bit)")
	// ErrNoDNSSECRecords: the resolver returned no DNSSEC records though
	// asked for them (DO bit), and did not validate.
	ErrNoDNSSECRecords = errors.New("dnsoe: the resolver returned no DNSSEC records and no AD bit")
)

// Hint says how to fix a lookup failure, for the log line and oevpn check
// ("" when there is nothing to suggest).
func Hint(err error) string {
	switch {
	case errors.Is(err, ErrSignatureExpired):
		return "re-sign the zone (does its signer still run?); if the expiry is in the future, this host's clock is ahead: fix it (NTP)"
	case errors.Is(err, ErrSignatureNotYetValid):
		return "this host's clock is behind (or the signer's ahead): fix the clock (NTP)"
	case errors.Is(err, ErrNoSignatures):
		return "point [opportunism] resolver at a resolver that returns DNSSEC records (unbound, BIND, Knot Resolver) and not through a forwarder that strips them; or someone forges answers"
	case errors.Is(err, ErrBadSignature):
		return "the trust anchor or the parent's DS does not match the zone's keys (a key rollover?): compare trust_anchors and the DS with the zone's DNSKEY; or someone forges answers"
	case errors.Is(err, ErrResolverBogus):
		return "the resolver does not say why: set trust_anchors so that oevpn validates itself and names the cause, or check the zone with delv or dnsviz (expired signatures? keys that do not match the DS?)"
	case errors.Is(err, ErrNoTrustAnchor):
		return "add a trust anchor for the name's zone or a parent (e.g. the root's: trust_anchors = \"/usr/share/dns/root.ds\")"
	case errors.Is(err, ErrZoneUnsigned):
		return "sign the zone and publish its DS in the parent, or set dnssec = \"prefer\" to use unsigned answers (forgeable)"
	case errors.Is(err, ErrResolverNotValidating):
		return "point [opportunism] resolver at a validating resolver on this host, or set trust_anchors so that oevpn validates itself"
	case errors.Is(err, ErrNoDNSSECRecords):
		return "point [opportunism] resolver at a validating resolver on this host; if the zone is not signed, sign it, or set dnssec = \"prefer\" (forgeable)"
	case errors.Is(err, ErrBogus):
		return "the zone's DNSSEC is broken, or someone forges answers: check the zone with a DNSSEC debugger (e.g. delv or dnsviz)"
	}
	return ""
}

// whyBogus says why in, the answer for name/qtype, failed validation, from
// its signatures: none, all out of their validity period, or (with
// current ones) signatures that do not verify.
func whyBogus(in *dns.Msg, name string, qtype uint16, now time.Time) error {
	// The signatures over the records asked for, else (a denial) those
	// of the authority section.
	var sigs []*dns.RRSIG
	for _, rr := range in.Answer {
		if sig, ok := rr.(*dns.RRSIG); ok && sameName(sig.Hdr.Name, name) && (sig.TypeCovered == qtype || sig.TypeCovered == dns.TypeCNAME) {
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) == 0 && len(rrsetOnly(in.Answer, name, qtype)) == 0 {
		for _, rr := range in.Ns {
			if sig, ok := rr.(*dns.RRSIG); ok {
				sigs = append(sigs, sig)
			}
		}
	}
	what := name + " " + dns.TypeToString[qtype]
	if len(sigs) == 0 {
		return fmt.Errorf("%w (%s)", ErrNoSignatures, what)
	}
	var expired, early *dns.RRSIG
	for _, sig := range sigs {
		switch {
		case sig.ValidityPeriod(now):
			return fmt.Errorf("%w (%s)", ErrBadSignature, what)
		case now.Unix() > int64(sig.Expiration):
			expired = sig
		default:
			early = sig
		}
	}
	stamp := func(t uint32) string { return time.Unix(int64(t), 0).UTC().Format(time.RFC3339) }
	if expired != nil {
		return fmt.Errorf("%w: %s's RRSIG by %s expired at %s (this host's time is %s)", ErrSignatureExpired,
			what, expired.SignerName, stamp(expired.Expiration), now.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("%w: %s's RRSIG by %s is valid from %s (this host's time is %s)", ErrSignatureNotYetValid,
		what, early.SignerName, stamp(early.Inception), now.UTC().Format(time.RFC3339))
}

// whyUnvalidatedByResolver says why the resolver's answer in does not
// count as validated: it carried no DNSSEC records at all, or it did, and
// no AD bit.
func whyUnvalidatedByResolver(server string, in *dns.Msg) error {
	for _, rr := range append(in.Answer[:len(in.Answer):len(in.Answer)], in.Ns...) {
		switch rr.(type) {
		case *dns.RRSIG, *dns.NSEC, *dns.NSEC3:
			return fmt.Errorf("%w (resolver %s)", ErrResolverNotValidating, server)
		}
	}
	return fmt.Errorf("%w (resolver %s)", ErrNoDNSSECRecords, server)
}

// edeCauses are the hint sentinels of the extended DNS errors (RFC 8914)
// a validating resolver gives with a SERVFAIL (Unbound: ede: yes).
var edeCauses = map[uint16]error{
	dns.ExtendedErrorCodeSignatureExpired:            ErrSignatureExpired,
	dns.ExtendedErrorCodeSignatureExpiredBeforeValid: ErrSignatureExpired,
	dns.ExtendedErrorCodeSignatureNotYetValid:        ErrSignatureNotYetValid,
	dns.ExtendedErrorCodeRRSIGsMissing:               ErrNoSignatures,
	dns.ExtendedErrorCodeNSECMissing:                 ErrNoSignatures,
	dns.ExtendedErrorCodeDNSKEYMissing:               ErrBadSignature,
	dns.ExtendedErrorCodeNoZoneKeyBitSet:             ErrBadSignature,
	dns.ExtendedErrorCodeDNSBogus:                    ErrResolverBogus,
}

// maxEDEText bounds the resolver's text quoted in an error.
const maxEDEText = 120

// edeCause is the cause a failed answer's extended DNS error gives, with
// the resolver's words; nil without one. It is only a hint (the answer
// is not authenticated): it changes no verdict.
func edeCause(in *dns.Msg) error {
	opt := in.IsEdns0()
	if opt == nil {
		return nil
	}
	for _, o := range opt.Option {
		ede, ok := o.(*dns.EDNS0_EDE)
		if !ok {
			continue
		}
		text := ede.ExtraText
		if len(text) > maxEDEText {
			text = text[:maxEDEText]
		}
		what := fmt.Sprintf("extended DNS error %d (%s) %q", ede.InfoCode, dns.ExtendedErrorCodeToString[ede.InfoCode], text)
		if cause := edeCauses[ede.InfoCode]; cause != nil {
			return fmt.Errorf("%w: the resolver says: %s", cause, what)
		}
		return fmt.Errorf("the resolver says: %s", what)
	}
	return nil
}

// unvalidated is ErrUnvalidated with its cause, if known.
func unvalidated(cause error) error {
	if cause == nil {
		return ErrUnvalidated
	}
	return fmt.Errorf("%w: %w", ErrUnvalidated, cause)
}
