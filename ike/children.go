package ike

import "github.com/oevpn/oevpn/policy"

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

func asked(r policy.Selector, l policy.Selectors) bool {
	for _, s := range l {
		if s == r {
			return true
		}
	}
	return false
}
