// Package ike implements IKEv2 (RFC 7296) for oevpn: the message codec, the
// key schedule, and the exchanges that authenticate peers and negotiate
// Child SAs, with the extensions oevpn speaks (NAT traversal, RFC 7383
// fragmentation, RFC 7427 signatures, RFC 7619 AUTH_NULL, AutoVPN).
//
// One goroutine, the Daemon's, owns every IKE SA: received messages,
// timers and local requests reach it through queues (queue.go) that never
// drop control work and drop only inbound packets, counted, under load.
// Nothing it decides reaches the datapath but through the Datapath
// interface: Child SAs are installed and removed there, and named by their
// inbound SPI.
//
// Where things are:
//   - wire format: message.go (header, payload chain), payloads.go (each
//     payload), frag.go (RFC 7383), sa.go (the SK payload);
//   - crypto: crypto.go, suite.go (proposals and their parsing), auth.go
//     (AUTH payloads, certificates, CERTREQ);
//   - the exchanges, per role: handshake_initiator.go and
//     handshake_responder.go (IKE_SA_INIT and IKE_AUTH), handshake.go
//     (what both share: installing the first Child SA, verifying the
//     peer), handshake_state.go (what an IKE SA holds only until it is
//     established: DH, COOKIE, the messages AUTH signs; sa.go holds the
//     established SA), children.go and rekey_child.go (CREATE_CHILD_SA for new and
//     rekeyed Child SAs), rekey_ike.go (IKE SA rekeying), informational.go
//     (Delete and notifies), duplicate.go (RFC 7296 §2.8 duplicates),
//     invalidspi.go and liveness.go (lost state, INVALID_SPI and
//     INVALID_IKE_SPI);
//   - the request window and retransmission: window.go; timers (rekey,
//     DPD, keepalive, restarts): timers.go; backoff.go;
//   - configuration of a peer and its defaults: peer.go; the bounds on
//     what remote input may make us keep: limits.go.
//
// A step that refuses returns the notify to answer with as its error (a
// NotifyType, or a *NotifyPayload when it carries data).
package ike
