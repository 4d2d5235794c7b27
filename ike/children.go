package ike

import (
	"math/rand/v2"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// coverSelectors negotiates, as initiator, a Child SA for the first
// configured remote selector of sa's peer that no Child SA's selectors
// touch, and goes on with the next when that is done. A responder may
// narrow the selectors we propose (RFC 7296 §2.9): strongSwan narrows them
// to those of one of its children, so with two children there for one of
// our peers, the traffic of the other never got a Child SA. A selector
// that a Child SA covers in part was narrowed on purpose, and asking again
// would only get a second Child SA for the same part. Each selector is
// asked for once per IKE SA, so a peer that narrows again cannot make this
// loop.
func (d *Daemon) coverSelectors(sa *ikeSA) {
	if sa.state != stateEstablished || sa.rekeyed || sa.creatingChild {
		return
	}
	for _, r := range sa.peer.RemoteTS {
		if touched(r, sa.children) || asked(r, sa.coverAsked) {
			continue
		}
		sa.coverAsked = append(sa.coverAsked, r)
		sa.creatingChild = true
		d.log.Info("the peer narrowed the Child SA; negotiating one for the rest", "peer", sa.peer.Name, "remote", r)
		d.requestChild(sa, nil, sa.peer.LocalTS, policy.Selectors{r}, func(nc *ChildSA, m *Message) {
			sa.creatingChild = false
			if nc == nil {
				d.log.Warn("Child SA for the rest of the selectors refused", "peer", sa.peer.Name, "remote", r, "notify", notifyList(m))
			}
			d.coverSelectors(sa)
		})
		return
	}
}

// touched reports whether a live Child SA's remote selectors overlap r.
func touched(r policy.Selector, children []*ChildSA) bool {
	want := wireSelectors(policy.Selectors{r})
	for _, c := range children {
		if !c.replaced && len(narrow(want, c.Remote)) > 0 {
			return true
		}
	}
	return false
}

// restoreChildren negotiates a Child SA for the configured remote
// selectors of sa's peer that no Child SA covers any more, because the
// peer deleted theirs while keeping the IKE SA (or refused a new one). It
// runs when the peer's Delete leaves such selectors for a peer configured
// to start, and when traffic for the peer was trapped (Acquire). Losses
// back off: a peer that keeps deleting what we make, or refusing it, is
// asked again after childRestoreDelay, not at once (restoreAt); a restore
// that comes earlier waits for it on a timer.
func (d *Daemon) restoreChildren(sa *ikeSA) {
	if sa.state != stateEstablished || sa.rekeyed || sa.creatingChild {
		return
	}
	missing := uncovered(sa.peer.RemoteTS, sa.children)
	if len(missing) == 0 {
		return
	}
	if wait := time.Until(sa.restoreAt); wait > 0 {
		if sa.restoreTimer == nil {
			sa.restoreTimer = d.after(wait, func() {
				sa.restoreTimer = nil
				d.restoreChildren(sa)
			})
		}
		return
	}
	sa.creatingChild = true
	d.log.Info("negotiating a Child SA for selectors without one", "peer", sa.peer.Name, "remote", missing)
	d.requestChild(sa, nil, sa.peer.LocalTS, missing, func(nc *ChildSA, m *Message) {
		sa.creatingChild = false
		if nc == nil {
			d.log.Warn("new Child SA refused", "peer", sa.peer.Name, "remote", missing, "notify", notifyList(m))
			d.childLost(sa)
			return
		}
		d.restoreChildren(sa) // the peer may have narrowed it: the rest
	})
}

// childLost counts a Child SA of sa that the peer deleted (not replaced
// by a rekey), lost or refused, and sets when the next restoreChildren may
// ask for one: at once after the first loss; after the retransmission base
// (500 ms by default) after the second less than maxRestartDelay after it,
// doubling with each further one, at most maxRestartDelay, less a random
// part up to a half.
func (d *Daemon) childLost(sa *ikeSA) {
	now := time.Now()
	if now.Sub(sa.lastChildLoss) > maxRestartDelay {
		sa.childLosses = 0
	}
	sa.lastChildLoss = now
	sa.childLosses++
	if sa.childLosses == 1 {
		sa.restoreAt = now
		return
	}
	delay := sa.peer.retransmitBase() << min(sa.childLosses-2, 16)
	if delay > maxRestartDelay || delay <= 0 {
		delay = maxRestartDelay
	}
	sa.restoreAt = now.Add(delay - rand.N(delay/2+1))
}

// uncovered returns the selectors of want that no live Child SA touches.
func uncovered(want policy.Selectors, children []*ChildSA) policy.Selectors {
	var out policy.Selectors
	for _, r := range want {
		if !touched(r, children) {
			out = append(out, r)
		}
	}
	return out
}

func asked(r policy.Selector, l policy.Selectors) bool {
	for _, s := range l {
		if s == r {
			return true
		}
	}
	return false
}
