package ike

import "net/netip"

// Resource limits on what remote input can make the daemon keep or do. Each
// bounds a table keyed by, or grown by, packets from the network; what
// goes beyond is dropped (IKE_SA_INIT, fragments) or refused
// (CREATE_CHILD_SA, IKE_AUTH). With the defaults a half-open IKE SA holds
// at most about 30 KiB, so MaxHalfOpen of them about 15 MiB.
const (
	// MaxHalfOpen is the number of half-open IKE SAs (IKE_SA_INIT
	// answered, IKE_AUTH not yet done) kept in all; further IKE_SA_INIT
	// requests are dropped until some complete or time out (after
	// halfOpenTimeout). Beyond Config.CookieThreshold (default 32) every
	// request must already carry a valid COOKIE.
	MaxHalfOpen = 512
	// MaxHalfOpenPerAddr is the number of half-open IKE SAs kept for one
	// source address (whatever its port); more are dropped. From
	// cookieThresholdPerAddr half-open SAs on, requests from that address
	// must carry a COOKIE, so that a spoofer cannot use up the allowance
	// of an address it does not receive at.
	MaxHalfOpenPerAddr = 4
	// MaxIKESAsPerAddr is the number of IKE SAs (half-open, established,
	// or replaced by a rekey and not yet deleted) the peers at one
	// address may make us hold as responder; IKE_SA_INIT beyond it is
	// dropped and an IKE SA rekey refused with NO_ADDITIONAL_SAS.
	MaxIKESAsPerAddr = 8
	// MaxChildSAs is the number of Child SAs one IKE SA may carry; a
	// CREATE_CHILD_SA for another is answered with NO_ADDITIONAL_SAS
	// (RFC 7296 §1.3). Rekeys are allowed while the Child SAs, those
	// being replaced included, number fewer than twice as many.
	MaxChildSAs = 16
	// MaxInitRequest is the largest IKE_SA_INIT request accepted, in
	// octets. Its exact bytes are kept until IKE_AUTH (they are signed),
	// so this bounds what a half-open SA holds; real requests are well
	// under 2 KiB (IKE_SA_INIT cannot be fragmented, RFC 7383 §2.5).
	MaxInitRequest = 8 << 10
	// MaxHalfOpenReassembly is the most a half-open IKE SA reassembles
	// of a fragmented IKE_AUTH request (RFC 7383), in octets: ample for a
	// few certificates. Established IKE SAs reassemble up to 64 KiB.
	MaxHalfOpenReassembly = 16 << 10
	// MaxPeerCerts is the number of X.509 certificates (end entity and
	// intermediates) accepted from the peer in one IKE_AUTH: each one
	// may cost a signature check while the chain is built.
	MaxPeerCerts = 5

	// cookieThresholdPerAddr is the number of half-open IKE SAs from one
	// address from which its requests must carry a COOKIE.
	cookieThresholdPerAddr = 2
)

// ikeSAsAt counts the IKE SAs whose peer is at a, as responder: the ones
// remote input made us create. (An SA leaves d.sas as it dies: teardown.)
func (d *Daemon) ikeSAsAt(a netip.Addr) int { return d.respByAddr[a] }

// addHalf records sa as half-open under key.
func (d *Daemon) addHalf(key halfKey, sa *ikeSA) {
	d.half[key] = sa
	d.halfByAddr[key.from.Addr()]++
	sa.halfKey = &key
	d.publishHalf()
}

// dropHalf forgets that sa is half-open (it completed IKE_AUTH, or died).
func (d *Daemon) dropHalf(sa *ikeSA) {
	k := sa.halfKey
	if k == nil {
		return
	}
	sa.halfKey = nil
	delete(d.half, *k)
	a := k.from.Addr()
	if d.halfByAddr[a]--; d.halfByAddr[a] <= 0 {
		delete(d.halfByAddr, a)
	}
	d.publishHalf()
}
