package tunnel

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/oevpn/oevpn/dnsoe"
	"github.com/oevpn/oevpn/ike"
	"github.com/oevpn/oevpn/internal/memnet"
	"github.com/oevpn/oevpn/policy"
)

// TestOpportunisticFailureCause: when opportunism falls back for a
// destination that published a key, the reason (the log line, status,
// shunts and check) names what IKE said: the gateway did not answer
// (nothing listens at its address), or refused, and with which notify.
// It said "no gateway answered" whatever happened.
func TestOpportunisticFailureCause(t *testing.T) {
	for _, tc := range []struct {
		name  string
		peer  func(t *testing.T, mn *memnet.Network, dst netip.Addr)
		wants []string
	}{
		{"nothing listens", func(*testing.T, *memnet.Network, netip.Addr) {},
			[]string{"IKE failed with gateway 10.98.0.30: ike: no answer from the peer: IKE_SA_INIT sent 4 times over"}},
		{"refused", func(t *testing.T, mn *memnet.Network, dst netip.Addr) {
			// An IKE daemon that knows the victim's address as a PSK
			// peer: it refuses the AUTH_NULL the opportunist sends.
			b := newMemIKEEnd(mn, dst)
			startDaemon(t, b, &ike.PeerConfig{Name: "a", Addr: oeVictim, Auth: ike.Credential{PSK: []byte("a pre-shared key of some length")},
				PeerAuth: ike.PeerAuth{PSK: []byte("a pre-shared key of some length")}, LocalTS: hostSel(dst), RemoteTS: hostSel(oeVictim)})
		}, []string{"IKE failed with gateway 10.98.0.30: peer refused IKE_AUTH: AUTHENTICATION_FAILED", "AUTH_NULL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mn := &memnet.Network{}
			ns := startOEDNS(t)
			dst := netip.MustParseAddr("10.98.0.30")
			publish(t, ns, dst)
			tc.peer(t, mn, dst)
			a := newOENode(t, mn, oeVictim, ns.Addr)
			sendUDP(t, a.testEndpoint, dst, 1)
			var reason string
			waitFor(t, func() bool { reason = a.o.notes.get(dst).reason; return reason != "" }, "the fallback")
			for _, want := range tc.wants {
				if !strings.Contains(reason, want) {
					t.Errorf("reason %q\nwant %q", reason, want)
				}
			}
			if v, _, _ := a.eng.VerdictFor(dst); v != VerdictDrop {
				t.Errorf("verdict %v, want drop: the destination published a key", v)
			}
		})
	}
}

// TestIKEFailureReasons: the failure counters sort by the outcome the
// daemon wrapped, not by the words of its message.
func TestIKEFailureReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{ike.ErrNoAnswer, "no_answer"},
		{&ike.RefusedError{Exchange: ike.IKE_SA_INIT, Notify: ike.NO_PROPOSAL_CHOSEN}, "proposal"},
		{&ike.RefusedError{Exchange: ike.IKE_SA_INIT, Notify: ike.INVALID_KE_PAYLOAD}, "proposal"},
		{&ike.RefusedError{Exchange: ike.IKE_AUTH, Notify: ike.AUTHENTICATION_FAILED}, "auth"},
		{&ike.RefusedError{Exchange: ike.IKE_AUTH, Notify: ike.TS_UNACCEPTABLE}, "child_refused"},
		{ike.ErrChildRefused, "child_refused"},
		{ike.ErrAuth, "auth"},
		// Words in a message decide nothing: a peer's identity may say
		// anything.
		{errFromPeer("peer identity did not answer NO_PROPOSAL_CHOSEN"), "other"},
	} {
		if got := failureReason(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}

type errFromPeer string

func (e errFromPeer) Error() string { return string(e) }

// TestOpportunisticDNSSECHint: a lookup that failed DNSSEC validation
// gives a reason with the fix (dnsoe.Hint) in the log, status and check.
func TestOpportunisticDNSSECHint(t *testing.T) {
	te, _, _ := oeEndpoint(t)
	n := &Node{eng: te.eng}
	n.oe = NewOpportunism(te.eng, OEConfig{})
	dst := netip.MustParseAddr("10.98.0.7")
	expired := fmt.Errorf("%w (7.0.98.10.in-addr.arpa.): %w: RRSIG expired at 2026-11-30T00:00:00Z", dnsoe.ErrBogus, dnsoe.ErrSignatureExpired)
	n.oe.lookupFailed(dst, policy.ClassPrivateOrClear, dnsoe.Result{Err: expired}, time.Now())
	for what, got := range map[string]string{"shunt": n.Shunts()[0].Reason, "check": n.Check(dst).Reason} {
		if !strings.Contains(got, "expired at 2026-11-30T00:00:00Z; to fix: re-sign the zone") {
			t.Errorf("%s reason %q", what, got)
		}
	}
}
