package policy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TrustState is the state of a peer gateway's certificate
// (draft-sheffer-autovpn §9.1, Figure 6). A certificate in no state is
// unknown.
type TrustState string

// Trust states.
const (
	Unverified TrustState = "unverified"
	Trusted    TrustState = "trusted"
	Untrusted  TrustState = "untrusted"
	Managed    TrustState = "managed"
)

func parseState(s string) (TrustState, bool) {
	switch st := TrustState(s); st {
	case Unverified, Trusted, Untrusted, Managed:
		return st, true
	}
	return "", false
}

// DefaultUnverifiedTTL is how long an unverified certificate is kept
// after it was last used (the draft recommends more than 7 days).
const DefaultUnverifiedTTL = 30 * 24 * time.Hour

// Peer is one entry of the trust store: a peer gateway's certificate,
// found by its DN, never by address.
type Peer struct {
	State       TrustState
	Fingerprint string // SHA-256 of the certificate, hex
	DN          string
	FirstSeen   time.Time
	LastSeen    time.Time
	// SharedSecret is the AutoVPN shared secret (§9.2), if one was made:
	// it pins the entry, which then never expires.
	SharedSecret []byte
	Contact      string // the peer's Contact Details, plain text
	Cert         []byte // DER
	// LastAddr is the address the peer was last authenticated at: only a
	// hint of which shared secret to try first, never a reason to trust.
	LastAddr netip.Addr
}

// Errors of the trust store.
var (
	// ErrUntrusted refuses a certificate marked untrusted.
	ErrUntrusted = errors.New("policy: the peer's certificate is untrusted")
	// ErrConflict refuses a certificate whose DN belongs to another
	// known certificate (§9.3).
	ErrConflict = errors.New("policy: another certificate is known for this DN")
	// ErrRevoked refuses a certificate its issuer revoked.
	ErrRevoked = errors.New("policy: the peer's certificate is revoked")
	// ErrNoPeer is returned for a fingerprint or DN not in the store.
	ErrNoPeer = errors.New("policy: no such peer in the trust store")
	// ErrStoreFile wraps errors of the store's file.
	ErrStoreFile = errors.New("policy: trust store")
)

// Fingerprint returns the SHA-256 fingerprint of a certificate, hex.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// TrustStore keeps the peer gateways' certificates in their trust states,
// in a human-readable file (one peer per line, like ssh's known_hosts)
// that every change rewrites atomically: a crash at any instant leaves
// the old file or the new one, never a mix. Safe for concurrent use.
type TrustStore struct {
	path string
	// UnverifiedTTL is how long an unverified entry without a shared
	// secret lives after it was last seen (default DefaultUnverifiedTTL).
	UnverifiedTTL time.Duration
	// Roots, if set, are trusted third parties: a certificate they issued
	// is trusted on its first successful exchange (Figure 6).
	Roots *x509.CertPool
	// CRLs are revocation lists, each already checked against its issuer:
	// a revoked certificate is deleted from the store and refused (§9.1).
	CRLs []*x509.RevocationList

	mu    sync.Mutex
	peers map[string]*Peer // by DN
}

// OpenTrustStore loads the store at path (a missing file is an empty
// store). The file must not be readable by others: it holds shared
// secrets.
func OpenTrustStore(path string) (*TrustStore, error) {
	s := &TrustStore{path: path, peers: map[string]*Peer{}}
	// Temporary files of writes that a crash interrupted.
	if stale, err := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".*")); err == nil {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStoreFile, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s holds shared secrets but is readable by others (mode %04o); chmod 600 it", ErrStoreFile, path, fi.Mode().Perm())
	}
	peers, err := ParseTrustStore(f, path)
	if err != nil {
		return nil, err
	}
	for _, p := range peers {
		s.peers[p.DN] = p
	}
	return s, nil
}

// header starts the file.
const storeHeader = "# oevpn AutoVPN trust store: state fingerprint first-seen last-seen shared-secret certificate DN contact [last-address]\n"

// ParseTrustStore reads the file format; name is used in errors, which
// give the line.
func ParseTrustStore(r io.Reader, name string) ([]*Peer, error) {
	var out []*Peer
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, err := parsePeer(line)
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %v", ErrStoreFile, name, n, err)
		}
		if seen[p.DN] {
			return nil, fmt.Errorf("%w: %s:%d: DN %q appears twice", ErrStoreFile, name, n, p.DN)
		}
		seen[p.DN] = true
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrStoreFile, name, err)
	}
	return out, nil
}

func parsePeer(line string) (*Peer, error) {
	f := strings.Fields(line)
	if len(f) < 8 {
		return nil, errors.New("want: state fingerprint first-seen last-seen secret certificate \"DN\" \"contact\"")
	}
	p := &Peer{}
	var ok bool
	if p.State, ok = parseState(f[0]); !ok {
		return nil, fmt.Errorf("state %q (want unverified, trusted, untrusted or managed)", f[0])
	}
	var err error
	if p.FirstSeen, err = time.Parse(time.RFC3339, f[2]); err != nil {
		return nil, fmt.Errorf("first-seen: %v", err)
	}
	if p.LastSeen, err = time.Parse(time.RFC3339, f[3]); err != nil {
		return nil, fmt.Errorf("last-seen: %v", err)
	}
	if f[4] != "-" {
		if p.SharedSecret, err = hex.DecodeString(f[4]); err != nil || len(p.SharedSecret) < 16 {
			return nil, errors.New("shared secret: want at least 16 octets in hex, or -")
		}
	}
	if p.Cert, err = base64.StdEncoding.DecodeString(f[5]); err != nil {
		return nil, fmt.Errorf("certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(p.Cert)
	if err != nil {
		return nil, fmt.Errorf("certificate: %v", err)
	}
	p.Fingerprint = Fingerprint(p.Cert)
	if f[1] != p.Fingerprint {
		return nil, fmt.Errorf("fingerprint %s is not the certificate's (%s)", f[1], p.Fingerprint)
	}
	// The quoted DN and contact follow the six plain fields.
	rest := line
	for i := 0; i < 6; i++ {
		rest = strings.TrimLeft(rest, " \t")
		rest = rest[strings.IndexAny(rest, " \t"):]
	}
	rest = strings.TrimLeft(rest, " \t")
	dnQ, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return nil, errors.New("DN: want a quoted string")
	}
	p.DN, _ = strconv.Unquote(dnQ)
	rest = strings.TrimLeft(rest[len(dnQ):], " \t")
	cQ, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return nil, errors.New("contact: want a quoted string")
	}
	p.Contact, _ = strconv.Unquote(cQ)
	if tail := strings.TrimSpace(rest[len(cQ):]); tail != "" {
		if p.LastAddr, err = netip.ParseAddr(tail); err != nil {
			return nil, fmt.Errorf("last address %q: %v", tail, err)
		}
	}
	if p.DN != cert.Subject.String() {
		return nil, fmt.Errorf("DN %q is not the certificate's subject %q", p.DN, cert.Subject.String())
	}
	return p, nil
}

func (p *Peer) line() string {
	secret := "-"
	if len(p.SharedSecret) > 0 {
		secret = hex.EncodeToString(p.SharedSecret)
	}
	addr := ""
	if p.LastAddr.IsValid() {
		addr = " " + p.LastAddr.String()
	}
	return fmt.Sprintf("%s %s %s %s %s %s %s %s%s\n", p.State, p.Fingerprint, p.FirstSeen.UTC().Format(time.RFC3339),
		p.LastSeen.UTC().Format(time.RFC3339), secret, base64.StdEncoding.EncodeToString(p.Cert), strconv.Quote(p.DN), strconv.Quote(p.Contact), addr)
}

// saveLocked writes the store: a temporary file in the same directory,
// synced, renamed over the old one, and the directory synced.
func (s *TrustStore) saveLocked() error {
	var buf bytes.Buffer
	buf.WriteString(storeHeader)
	dns := make([]string, 0, len(s.peers))
	for dn := range s.peers {
		dns = append(dns, dn)
	}
	sort.Strings(dns)
	for _, dn := range dns {
		buf.WriteString(s.peers[dn].line())
	}
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: %v", ErrStoreFile, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".*")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStoreFile, err)
	}
	_, err = tmp.Write(buf.Bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("%w: %v", ErrStoreFile, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// expiredLocked reports whether an entry has timed out at now.
func (s *TrustStore) expiredLocked(p *Peer, now time.Time) bool {
	ttl := s.UnverifiedTTL
	if ttl <= 0 {
		ttl = DefaultUnverifiedTTL
	}
	return p.State == Unverified && len(p.SharedSecret) == 0 && now.Sub(p.LastSeen) > ttl
}

// Accept is the trust store's one decision on a peer gateway, asked by
// every path that lets an AutoVPN peer in: a certificate taken on a leap
// of faith or issued by one of Roots (cert set, bySecret false), the
// shared secret kept for a DN (bySecret true; cert is the certificate the
// peer presents with it, if any), and the recording of a finished
// exchange (Seen). dn is the DN the peer claims; cert, if set, must be
// for it.
//
// A peer is refused when its kept or presented certificate is revoked
// (the entry is then deleted), when it is marked untrusted, when it
// claims a shared secret none is kept for, or when it presents, without
// the shared secret, another certificate than the one known for its DN
// (a conflict, §9.3). Otherwise Accept returns a copy of its entry, or
// nil for an unknown peer. Expired unverified entries are forgotten
// first.
func (s *TrustStore) Accept(dn string, cert *x509.Certificate, bySecret bool, now time.Time) (*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.decideLocked(dn, cert, bySecret, now)
	if p == nil || err != nil {
		return nil, err
	}
	c := *p
	return &c, nil
}

// Check is Accept for a certificate presented without the shared secret.
func (s *TrustStore) Check(cert *x509.Certificate, now time.Time) (*Peer, error) {
	return s.Accept(cert.Subject.String(), cert, false, now)
}

// decideLocked is Accept on the store itself: it returns the entry (nil
// for an unknown peer), not a copy.
func (s *TrustStore) decideLocked(dn string, cert *x509.Certificate, bySecret bool, now time.Time) (*Peer, error) {
	if cert != nil && cert.Subject.String() != dn {
		return nil, fmt.Errorf("%w: certificate %q presented for DN %q", ErrConflict, cert.Subject.String(), dn)
	}
	if !bySecret && cert == nil {
		return nil, fmt.Errorf("%w: %s presents neither a certificate nor the shared secret", ErrNoPeer, dn)
	}
	p := s.peers[dn]
	if p != nil && s.revokedDER(p.Cert) {
		delete(s.peers, dn) // revoked certificates leave the table, and their secret with them
		s.saveLocked()
		return nil, fmt.Errorf("%w: %s (the certificate kept for it)", ErrRevoked, dn)
	}
	if cert != nil && s.revoked(cert) {
		if p != nil && p.Fingerprint == Fingerprint(cert.Raw) {
			delete(s.peers, dn)
			s.saveLocked()
		}
		return nil, fmt.Errorf("%w: %s (serial %s)", ErrRevoked, dn, cert.SerialNumber)
	}
	if p != nil && s.expiredLocked(p, now) {
		delete(s.peers, dn)
		s.saveLocked()
		p = nil
	}
	switch {
	case p != nil && p.State == Untrusted:
		return nil, fmt.Errorf("%w: %s", ErrUntrusted, dn)
	case bySecret && (p == nil || len(p.SharedSecret) == 0):
		return nil, fmt.Errorf("%w: no shared secret is kept for %s", ErrNoPeer, dn)
	case !bySecret && p != nil && p.Fingerprint != Fingerprint(cert.Raw):
		return nil, fmt.Errorf("%w: %s (known %s, presented %s)", ErrConflict, dn, p.Fingerprint[:16], Fingerprint(cert.Raw)[:16])
	}
	return p, nil
}

// revoked reports whether a CRL of the certificate's issuer lists it.
func (s *TrustStore) revoked(cert *x509.Certificate) bool {
	for _, crl := range s.CRLs {
		if !bytes.Equal(crl.RawIssuer, cert.RawIssuer) {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return true
			}
		}
	}
	return false
}

// revokedDER is revoked for a kept certificate.
func (s *TrustStore) revokedDER(der []byte) bool {
	if len(s.CRLs) == 0 {
		return false
	}
	cert, err := x509.ParseCertificate(der)
	return err == nil && s.revoked(cert)
}

// Seen records a successful IKE exchange with the certificate, after
// asking Accept (bySecret: the peer proved the shared secret): an unknown
// certificate becomes unverified, or trusted if one of Roots issued it
// (Figure 6); a new certificate proved by the shared secret replaces the
// kept one (a roll, §9.2); the contact details, address and last-seen
// time are updated. The store is written before Seen returns.
func (s *TrustStore) Seen(cert *x509.Certificate, contact string, addr netip.Addr, bySecret bool, now time.Time) (*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dn := cert.Subject.String()
	p, err := s.decideLocked(dn, cert, bySecret, now)
	if err != nil {
		return nil, err
	}
	switch {
	case p == nil:
		p = &Peer{State: Unverified, Fingerprint: Fingerprint(cert.Raw), DN: dn, FirstSeen: now, Cert: cert.Raw}
		s.peers[dn] = p
	case p.Fingerprint != Fingerprint(cert.Raw): // bySecret: a roll
		p.Cert, p.Fingerprint = cert.Raw, Fingerprint(cert.Raw)
	}
	if p.State == Unverified && s.Roots != nil {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: s.Roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			p.State = Trusted // vouched for by a trusted third party
		}
	}
	p.LastSeen = now
	if addr.IsValid() {
		p.LastAddr = addr
	}
	if contact != "" {
		p.Contact = contact
	}
	c := *p
	return &c, s.saveLocked()
}

// find returns the entry whose fingerprint (or a prefix of at least 8
// hex digits of it) or DN is key.
func (s *TrustStore) findLocked(key string) (*Peer, error) {
	if p := s.peers[key]; p != nil {
		return p, nil
	}
	var found *Peer
	for _, p := range s.peers {
		if len(key) >= 8 && strings.HasPrefix(p.Fingerprint, strings.ToLower(key)) {
			if found != nil {
				return nil, fmt.Errorf("%w: %q matches more than one fingerprint", ErrNoPeer, key)
			}
			found = p
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoPeer, key)
	}
	return found, nil
}

// SetState marks a peer (by fingerprint, its prefix, or DN) trusted or
// untrusted by hand (Figure 6's manual marking).
func (s *TrustStore) SetState(key string, st TrustState) (*Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.findLocked(key)
	if err != nil {
		return nil, err
	}
	p.State = st
	c := *p
	return &c, s.saveLocked()
}

// Forget deletes a peer (manually, or because its certificate was
// revoked): it is unknown again, its shared secret gone.
func (s *TrustStore) Forget(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.findLocked(key)
	if err != nil {
		return err
	}
	delete(s.peers, p.DN)
	return s.saveLocked()
}

// SetSharedSecret keeps the AutoVPN shared secret made with a peer; it
// pins the entry.
func (s *TrustStore) SetSharedSecret(dn string, secret []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peers[dn]
	if p == nil {
		return fmt.Errorf("%w: %q", ErrNoPeer, dn)
	}
	p.SharedSecret = bytes.Clone(secret)
	return s.saveLocked()
}

// ByAddr returns the entry last authenticated at addr: a hint only.
func (s *TrustStore) ByAddr(addr netip.Addr) (*Peer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *Peer
	for _, p := range s.peers {
		if p.LastAddr == addr && (best == nil || p.LastSeen.After(best.LastSeen)) {
			best = p
		}
	}
	if best == nil {
		return nil, false
	}
	c := *best
	return &c, true
}

// ByDN returns the entry of a DN, if it is known.
func (s *TrustStore) ByDN(dn string) (*Peer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peers[dn]
	if p == nil {
		return nil, false
	}
	c := *p
	return &c, true
}

// Peers returns the entries, by DN.
func (s *TrustStore) Peers() []Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Peer, 0, len(s.peers))
	for _, p := range s.peers {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DN < out[j].DN })
	return out
}
