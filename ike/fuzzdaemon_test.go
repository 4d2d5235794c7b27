package ike

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/oevpn/oevpn/policy"
)

// FuzzDaemon drives the daemons' state machines, not only the codec: each
// run brings up an IKE SA between two in-process daemons (real handshake,
// IKE fragmentation on), then feeds them the datagrams the fuzz input
// splits into. A datagram is sent raw (to either end, or to the responder
// from a stranger, which its opportunistic Responder answers), or, to reach
// the paths behind decryption, parsed as a cleartext message whose
// payloads the other end's IKE SA seals (fragmenting when large), or it
// is a local event (rekeys, a new Child SA, liveness check, Down). The
// daemons must never panic, and must leave no goroutine behind.
//
// Input: records of [kind, length (2 octets), data]; see fuzzKinds.
func FuzzDaemon(f *testing.F) {
	for _, s := range fuzzDaemonSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		runFuzzDaemon(t, in)
		for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > base; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d goroutines left behind, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
			}
		}
	})
}

// Record kinds of FuzzDaemon's input.
const (
	fuzzRawToResponder = iota
	fuzzSealedToResponder
	fuzzRawToInitiator
	fuzzSealedToInitiator
	fuzzRawFromStranger
	fuzzEvent
	fuzzKinds
)

var fuzzA1, fuzzA2 = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

// fuzzPair brings up an IKE SA between d1 (initiator) and d2.
func fuzzPair(tb testing.TB) (d1, d2 *Daemon, s1, s2 *ikeSA) {
	dp1 := &memDatapath{self: netip.AddrPortFrom(fuzzA1, 4500), nextSPI: 0x1000, children: map[uint32]bool{}}
	dp2 := &memDatapath{self: netip.AddrPortFrom(fuzzA2, 4500), nextSPI: 0x2000, children: map[uint32]bool{}}
	psk := []byte("fuzz fuzz fuzz fuzz")
	sel := func(s string) Selectors {
		v, err := policy.ParseSelector(s)
		if err != nil {
			tb.Fatal(err)
		}
		return Selectors{v}
	}
	mk := func(name string, self, addr netip.Addr, local, remote Selectors) *PeerConfig {
		return &PeerConfig{Name: name, Addr: addr, NATTPort: 4500, IKEPort: 4500, Auth: Credential{PSK: psk}, PeerAuth: PeerAuth{PSK: psk},
			LocalID: IdentityOf(self), RemoteID: IdentityOf(addr), LocalTS: local, RemoteTS: remote, DPD: -1, FragmentSize: 300,
			RetransmitBase: time.Hour}
	}
	local := sel("10.0.0.2")
	stranger := func(from netip.AddrPort, _ netip.Addr, _ []byte) *PeerConfig {
		remote, _ := policy.ParseSelector(from.Addr().String())
		return &PeerConfig{Name: from.Addr().String(), Addr: from.Addr(), Auth: Credential{Null: true}, PeerAuth: PeerAuth{Null: true},
			LocalTS: local, RemoteTS: Selectors{remote}, DPD: -1, RetransmitBase: time.Hour}
	}
	var err error
	if d1, err = New(Config{Datapath: dp1, Peers: []*PeerConfig{mk("two", fuzzA1, fuzzA2, sel("10.0.0.1"), sel("10.0.0.2"))}}); err != nil {
		tb.Fatal(err)
	}
	if d2, err = New(Config{Datapath: dp2, Peers: []*PeerConfig{mk("one", fuzzA2, fuzzA1, sel("10.0.0.2"), sel("10.0.0.1"))},
		Responder: stranger}); err != nil {
		tb.Fatal(err)
	}
	dp1.peer, dp2.peer = d2, d1
	if err := d1.Initiate("two"); err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Microsecond) {
		if s1, s2 = current(d1), current(d2); s1 != nil && s2 != nil {
			return d1, d2, s1, s2
		}
		if time.Now().After(deadline) {
			tb.Fatal("fuzz pair did not come up")
		}
	}
}

func runFuzzDaemon(t *testing.T, in []byte) {
	d1, d2, s1, s2 := fuzzPair(t)
	defer func() { d1.Close(); d2.Close() }()
	from1, from2 := netip.AddrPortFrom(fuzzA1, 4500), netip.AddrPortFrom(fuzzA2, 4500)
	settle := func() {
		for range 3 {
			d1.call(func() {})
			d2.call(func() {})
		}
	}
	// seal has the SA of the sender's end (its current one, after rekeys)
	// seal the payloads of a cleartext message.
	seal := func(d *Daemon, sa *ikeSA, b []byte) [][]byte {
		m, err := Parse(b)
		if err != nil || m.Encrypted() {
			return nil
		}
		var out [][]byte
		d.call(func() {
			sa = sa.current()
			if sa.state == stateDead || sa.out == nil {
				return
			}
			out, _ = sa.encryptFrags(m.Exchange, m.MessageID, m.IsResponse(), m.Payloads)
		})
		return out
	}
	for n := 0; len(in) >= 3 && n < 32; n++ {
		kind, l := int(in[0])%fuzzKinds, int(binary.BigEndian.Uint16(in[1:]))
		in = in[3:]
		data := in[:min(l, len(in))]
		in = in[len(data):]
		switch kind {
		case fuzzRawToResponder:
			d2.HandlePacket(data, from1, true)
		case fuzzSealedToResponder:
			for _, b := range seal(d1, s1, data) {
				d2.HandlePacket(b, from1, true)
			}
		case fuzzRawToInitiator:
			d1.HandlePacket(data, from2, true)
		case fuzzSealedToInitiator:
			for _, b := range seal(d2, s2, data) {
				d1.HandlePacket(b, from2, true)
			}
		case fuzzRawFromStranger:
			d2.HandlePacket(data, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(n)}), 500), false)
		case fuzzEvent:
			if len(data) == 0 {
				continue
			}
			d, sa := d1, s1
			if data[0]&1 != 0 {
				d, sa = d2, s2
			}
			d.call(func() {
				sa := sa.current()
				if sa.state != stateEstablished {
					return
				}
				switch data[0] >> 1 % 5 {
				case 0:
					d.rekeyIKE(sa)
				case 1:
					if len(sa.children) > 0 {
						d.rekeyChild(sa.children[0])
					}
				case 2:
					d.restoreChildren(sa)
				case 3:
					d.Acquire(sa.peer.Name)
				case 4:
					if len(sa.children) > 0 {
						d.deleteChild(sa.children[0])
					}
				}
			})
		}
		settle()
	}
	settle()
}

// fuzzRecord encodes one record of FuzzDaemon's input.
func fuzzRecord(kind int, data []byte) []byte {
	return append(binary.BigEndian.AppendUint16([]byte{byte(kind)}, uint16(len(data))), data...)
}

// fuzzDaemonSeeds are sequences that reach the encrypted exchanges: the
// messages of a real handshake (raw: stale keys; as strangers' IKE_SA_INIT),
// cleartext requests and responses of each exchange to be sealed, and
// local events.
func fuzzDaemonSeeds(tb testing.TB) [][]byte {
	d1, d2, s1, _ := fuzzPair(tb)
	var c *ChildSA
	d1.call(func() { c = s1.children[0] })
	d1.Close()
	d2.Close()
	var init []byte
	for _, b := range d1.cfg.Datapath.(*memDatapath).sends() {
		if h, err := ParseHeader(b); err == nil && h.Exchange == IKE_SA_INIT {
			init = b
		}
	}
	clear := func(exch ExchangeType, id uint32, response bool, ps ...Payload) []byte {
		m := &Message{Header: Header{Exchange: exch, MessageID: id}, Payloads: ps}
		if response {
			m.Flags |= FlagResponse
		}
		b, err := m.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	espProps, _ := ParseProposals(DefaultESPProposals, ProtoESP)
	for i := range espProps {
		espProps[i].SPI = []byte{0xc0, 0, 0, byte(i + 1)}
	}
	ikeProps, _ := ParseProposals(DefaultIKEProposals, ProtoIKE)
	for i := range ikeProps {
		ikeProps[i].SPI = []byte{1, 2, 3, 4, 5, 6, 7, byte(i + 1)}
	}
	g, _ := newDH(DH_CURVE25519)
	_, ke, _ := g.generate()
	ts := func(init bool, s string) *TSPayload {
		v, _ := policy.ParseSelector(s)
		return &TSPayload{Initiator: init, Selectors: wireSelectors(Selectors{v})}
	}
	spi := binary.BigEndian.AppendUint32(nil, c.Out.SPI)
	newChild := clear(CREATE_CHILD_SA, 2, false, &SAPayload{Proposals: espProps}, &NoncePayload{Data: seq(1, 32)},
		ts(true, "10.0.0.1"), ts(false, "10.0.0.2"))
	rekeyChild := clear(CREATE_CHILD_SA, 2, false, &NotifyPayload{Protocol: ProtoESP, SPI: spi, NotifyType: REKEY_SA},
		&SAPayload{Proposals: espProps}, &NoncePayload{Data: seq(1, 32)}, ts(true, "10.0.0.1"), ts(false, "10.0.0.2"))
	rekeyIKE := clear(CREATE_CHILD_SA, 2, false, &SAPayload{Proposals: ikeProps}, &NoncePayload{Data: seq(1, 32)},
		&KEPayload{Group: DH_CURVE25519, Data: ke})
	deleteChild := clear(INFORMATIONAL, 2, false, &DeletePayload{Protocol: ProtoESP, SPIs: [][]byte{spi}})
	deleteIKE := clear(INFORMATIONAL, 2, false, &DeletePayload{Protocol: ProtoIKE})
	// Requests to the initiator start at message ID 0.
	rekeyIKE0 := clear(CREATE_CHILD_SA, 0, false, &SAPayload{Proposals: ikeProps}, &NoncePayload{Data: seq(1, 32)},
		&KEPayload{Group: DH_CURVE25519, Data: ke})
	deleteIKE1 := clear(INFORMATIONAL, 1, false, &DeletePayload{Protocol: ProtoIKE})
	dpd := clear(INFORMATIONAL, 2, false)
	resp := clear(CREATE_CHILD_SA, 2, true, &NotifyPayload{NotifyType: NO_ADDITIONAL_SAS})
	big := clear(INFORMATIONAL, 2, false, &NotifyPayload{NotifyType: 40000, Data: make([]byte, 1500)})

	var seeds [][]byte
	cat := func(recs ...[]byte) []byte {
		var b []byte
		for _, r := range recs {
			b = append(b, r...)
		}
		return b
	}
	seeds = append(seeds,
		cat(fuzzRecord(fuzzSealedToResponder, newChild), fuzzRecord(fuzzSealedToResponder, newChild)),
		cat(fuzzRecord(fuzzSealedToResponder, rekeyChild), fuzzRecord(fuzzSealedToResponder, deleteChild)),
		cat(fuzzRecord(fuzzSealedToResponder, rekeyIKE), fuzzRecord(fuzzEvent, []byte{0})),
		cat(fuzzRecord(fuzzSealedToInitiator, rekeyIKE0), fuzzRecord(fuzzSealedToInitiator, deleteIKE1)),
		cat(fuzzRecord(fuzzSealedToResponder, dpd), fuzzRecord(fuzzSealedToResponder, dpd), fuzzRecord(fuzzRawToResponder, init)),
		cat(fuzzRecord(fuzzEvent, []byte{2}), fuzzRecord(fuzzSealedToInitiator, resp)),
		cat(fuzzRecord(fuzzEvent, []byte{1 << 1}), fuzzRecord(fuzzEvent, []byte{1<<1 | 1}), fuzzRecord(fuzzSealedToResponder, big)),
		cat(fuzzRecord(fuzzRawFromStranger, init), fuzzRecord(fuzzRawFromStranger, init)),
		cat(fuzzRecord(fuzzEvent, []byte{4 << 1}), fuzzRecord(fuzzEvent, []byte{3 << 1}), fuzzRecord(fuzzSealedToResponder, deleteIKE)),
	)
	return seeds
}
