package ike

import (
	"fmt"
	mrand "math/rand/v2"
	"time"
)

// send transmits msg to the peer on its current port.
func (d *Daemon) send(sa *ikeSA, msgs ...[]byte) {
	to := sa.remote
	for _, msg := range msgs {
		if err := d.dp.SendIKE(msg, to, sa.natt); err != nil {
			d.log.Warn("sending IKE message failed", "peer", sa.peer.Name, "to", to, "err", err)
			return
		}
	}
}

// sendRequest sends a request and retransmits it with exponential backoff
// until answered or given up.
func (d *Daemon) sendRequest(sa *ikeSA, msgs [][]byte, id uint32, onResponse func(*ikeSA, *Message)) {
	if sa.pending != nil && sa.pending.timer != nil {
		sa.pending.timer.Stop()
	}
	r := &request{msgs: msgs, id: id, onResponse: onResponse, sent: time.Now()}
	sa.pending = r
	d.send(sa, msgs...)
	var arm func(delay time.Duration)
	arm = func(delay time.Duration) {
		r.timer = time.AfterFunc(delay, func() {
			d.post(func() {
				if sa.pending != r || sa.state == stateDead {
					return
				}
				r.tries++
				if r.tries >= sa.retransmitTries() {
					d.log.Warn("peer does not answer; giving up", "peer", sa.peer.Name, "tries", r.tries)
					d.teardown(sa, fmt.Errorf("%w: %v sent %d times over %v", ErrNoAnswer, exchangeOf(msgs), r.tries,
						time.Since(r.sent).Round(time.Millisecond)))
					return
				}
				d.log.Debug("retransmitting", "peer", sa.peer.Name, "message_id", id, "try", r.tries)
				d.send(sa, msgs...)
				arm(delay * 2)
			})
		})
	}
	arm(sa.peer.retransmitBase())
}

func (d *Daemon) answered(sa *ikeSA) {
	if sa.pending != nil && sa.pending.timer != nil {
		sa.pending.timer.Stop()
	}
	sa.pending = nil
	// The window (of one) is free: start the next queued request.
	if len(sa.queue) > 0 && sa.state == stateEstablished {
		next := sa.queue[0]
		sa.queue = sa.queue[1:]
		d.startRequest(sa, next)
	}
}

// jitter returns d minus up to 10%, so that both ends do not rekey at once.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(mrand.Int64N(int64(d)/10+1))
}

// queueRequest sends ex now if the window is free, or after the requests
// before it were answered.
func (d *Daemon) queueRequest(sa *ikeSA, ex exchange) {
	if sa.pending == nil && sa.state == stateEstablished {
		d.startRequest(sa, ex)
		return
	}
	sa.queue = append(sa.queue, ex)
}

func (d *Daemon) startRequest(sa *ikeSA, ex exchange) {
	payloads, err := ex.payloads()
	if err != nil {
		d.log.Warn("building request", "peer", sa.peer.Name, "exchange", ex.exch, "err", err)
		return
	}
	id := sa.nextMsgID
	b, err := sa.encryptFrags(ex.exch, id, false, payloads)
	if err != nil {
		d.log.Warn("building request", "peer", sa.peer.Name, "exchange", ex.exch, "err", err)
		return
	}
	sa.nextMsgID++
	d.sendRequest(sa, b, id, ex.onResponse)
}

// exchange is a request of an established IKE SA waiting for the window.
type exchange struct {
	exch       ExchangeType
	payloads   func() ([]Payload, error) // built when sent
	onResponse func(*ikeSA, *Message)    // with the IKE SA the exchange ran in
	// movable requests (Child SA operations) go on in the new IKE SA if
	// this one is rekeyed before they are sent.
	movable bool
}

// exchangeOf returns the exchange type of a request we made.
func exchangeOf(msgs [][]byte) ExchangeType {
	if len(msgs) == 0 || len(msgs[0]) < HeaderLen {
		return 0
	}
	return ExchangeType(msgs[0][18])
}
