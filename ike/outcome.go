package ike

import "errors"

// The outcomes of a failed negotiation that a caller may act on, or tell
// an operator: the daemon wraps them (OnChange's err), and errors.Is and
// errors.As tell them apart.
var (
	// ErrNoAnswer is wrapped when the peer did not answer a request
	// after every retransmission (or an initiator did not finish its
	// handshake): nothing answers at its address, or the path drops IKE.
	ErrNoAnswer = errors.New("ike: no answer from the peer")
	// ErrNoProposal is wrapped when we and the peer have no proposal in
	// common; a RefusedError with NO_PROPOSAL_CHOSEN or
	// INVALID_KE_PAYLOAD is one too.
	ErrNoProposal = errors.New("ike: no proposal in common with the peer")
)

// RefusedError is a peer's refusal of one of our requests, with the error
// notify it answered.
type RefusedError struct {
	Exchange ExchangeType
	Notify   NotifyType
}

func (e *RefusedError) Error() string {
	return "peer refused " + e.Exchange.String() + ": " + e.Notify.String()
}

// Is sorts the refusal: for want of a common proposal it is an
// ErrNoProposal, of our authentication an ErrAuth, of the selectors an
// ErrChildRefused.
func (e *RefusedError) Is(target error) bool {
	switch e.Notify {
	case NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD:
		return target == ErrNoProposal
	case AUTHENTICATION_FAILED:
		return target == ErrAuth
	case TS_UNACCEPTABLE:
		return target == ErrChildRefused
	}
	return false
}
