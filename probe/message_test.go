package probe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/oevpn/oevpn/internal/ipview"
)

// tcpSYN is an IPv4 TCP SYN from 10.1.0.5:40000 to 10.2.0.9:80 (header
// and 8 octets of TCP).
var tcpSYN = []byte{
	0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 5, 10, 2, 0, 9,
	0x9c, 0x40, 0, 80, 1, 2, 3, 4,
}

func nonce(b byte) []byte { return bytes.Repeat([]byte{b}, 17) }

func messages() []*Message {
	return []*Message{
		{Type: Request, NonceR: nonce(0xaa), NAT: &NATDetect{Addr: netip.MustParseAddr("10.1.0.5"), Port: 40000}, Fragment: tcpSYN},
		{Type: Response, NonceI: nonce(0xbb), NonceR: nonce(0xaa), VendorID: []byte("oevpn")},
		{Type: Complete, NonceI: nonce(0xbb), NonceR: nonce(0xaa), Fragment: tcpSYN},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, m := range messages() {
		u, err := ParseUDP(m.AppendUDP(nil))
		if err != nil || !reflect.DeepEqual(u, m) {
			t.Errorf("UDP %v: %+v %v", m.Type, u, err)
		}
		if m.Fragment == nil {
			continue
		}
		b := m.AppendICMP(nil)
		if ipview.Checksum(b) != 0 {
			t.Errorf("ICMP %v: checksum does not verify", m.Type)
		}
		i, err := ParseICMP(b)
		if err != nil || !reflect.DeepEqual(i, m) {
			t.Errorf("ICMP %v: %+v %v", m.Type, i, err)
		}
	}
}

// TestWireLayout checks the octets against the draft's figures and RFC
// 4884, independently of the decoder.
func TestWireLayout(t *testing.T) {
	m := messages()[0]
	u := m.AppendUDP(nil)
	want := append(append([]byte{}, Preamble[:]...),
		1, 0, 0, 7, 1, 1, 0, // Version: version 1, probe request, reserved
		3, 0, 0, 21) // Nonce-R header
	if !bytes.HasPrefix(u, want) {
		t.Fatalf("UDP prefix % x", u[:len(want)])
	}
	nat := u[len(want)+17:]
	// NAT-Detect: 10.1.0.5 XOR 0x0F0F0F0F = 05.0E.0F.0A, port 40000.
	if !bytes.HasPrefix(nat, []byte{4, 0, 0, 10, 0x05, 0x0e, 0x0f, 0x0a, 0x9c, 0x40}) {
		t.Fatalf("NAT-Detect % x", nat)
	}
	b := m.AppendICMP(nil)
	if b[0] != 12 || b[1] != 1 || b[4] != 0 || b[5] != 128/4 {
		t.Fatalf("ICMP header % x", b[:8])
	}
	if !bytes.Equal(b[8:8+len(tcpSYN)], tcpSYN) || !bytes.Equal(b[8+len(tcpSYN):8+128], make([]byte, 128-len(tcpSYN))) {
		t.Fatal("original datagram not the fragment, zero-padded to 128 octets")
	}
	ext := b[8+128:]
	if ext[0] != 0x20 || ipview.Checksum(ext) != 0 {
		t.Fatalf("extension header % x", ext[:4])
	}
	// First object: Version, Class-Num 250, C-Type 1.
	if !bytes.Equal(ext[4:11], []byte{0, 7, ClassNum, 1, 1, 1, 0}) {
		t.Fatalf("first object % x", ext[4:11])
	}
}

func TestMalformed(t *testing.T) {
	good := messages()[1].AppendUDP(nil)
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"no preamble":      good[1:],
		"truncated header": append(bytes.Clone(good), 9, 0),
		"length too long":  edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[PreambleLen+2:], 200); return b }),
		"length too short": edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[PreambleLen+2:], 3); return b }),
		"version 2":        edit(func(b []byte) []byte { b[PreambleLen+4] = 2; return b }),
		"type 9":           edit(func(b []byte) []byte { b[PreambleLen+5] = 9; return b }),
		"short nonce":      (&Message{Type: Response, NonceI: nonce(1)[:7], NonceR: nonce(2)}).AppendUDP(nil),
		"long nonce":       (&Message{Type: Response, NonceI: bytes.Repeat([]byte{1}, 65), NonceR: nonce(2)}).AppendUDP(nil),
		"missing nonce":    (&Message{Type: Complete, NonceR: nonce(2)}).AppendUDP(nil),
		"request w/o NAT":  (&Message{Type: Request, NonceR: nonce(2)}).AppendUDP(nil),
		"duplicate":        append(bytes.Clone(good), good[PreambleLen:PreambleLen+7]...),
		"only preamble":    Preamble[:],
	}
	for name, b := range cases {
		if _, err := ParseUDP(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Unknown payloads are ignored.
	withUnknown := append(bytes.Clone(good), 77, 0, 0, 6, 1, 2)
	if _, err := ParseUDP(withUnknown); err != nil {
		t.Errorf("unknown payload: %v", err)
	}

	icmp := messages()[2].AppendICMP(nil)
	bad := bytes.Clone(icmp)
	bad[len(bad)-1] ^= 1
	if _, err := ParseICMP(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("ICMP checksum: %v", err)
	}
	short := bytes.Clone(icmp[:8+128+2])
	binary.BigEndian.PutUint16(short[2:], 0)
	binary.BigEndian.PutUint16(short[2:], ipview.Checksum(short))
	if _, err := ParseICMP(short); !errors.Is(err, ErrMalformed) {
		t.Errorf("ICMP truncated extension: %v", err)
	}
	// Other ICMP messages are not ours.
	plain := []byte{3, 1, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(plain[2:], ipview.Checksum(plain))
	if _, err := ParseICMP(plain); !errors.Is(err, ErrNotProbe) {
		t.Errorf("destination unreachable: %v", err)
	}
	// A Parameter Problem with extensions of another class.
	other := bytes.Clone(icmp)
	other[8+128+4+2] = 1 // first object's Class-Num
	binary.BigEndian.PutUint16(other[8+128+2:], 0)
	binary.BigEndian.PutUint16(other[2:], 0)
	binary.BigEndian.PutUint16(other[2:], ipview.Checksum(other))
	if _, err := ParseICMP(other); err == nil {
		t.Errorf("object of another class decoded as a probe")
	}
}

func TestNonces(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	n := &Nonces{Rollover: time.Minute, Now: func() time.Time { return now }}
	g1, g2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	x := n.Mint(g1, tcpSYN)
	if len(x) < MinNonce || len(x) > MaxNonce || !n.Valid(x, g1, tcpSYN) {
		t.Fatalf("fresh nonce %x invalid", x)
	}
	if n.Valid(x, g2, tcpSYN) || n.Valid(x, g1, tcpSYN[:27]) {
		t.Fatal("nonce valid for another gateway or fragment")
	}
	forged := bytes.Clone(x)
	forged[5] ^= 1
	if n.Valid(forged, g1, tcpSYN) || n.Valid(x[:10], g1, tcpSYN) {
		t.Fatal("forged or truncated nonce valid")
	}
	// Minted just before a rollover: still good after it.
	now = now.Add(59 * time.Second)
	late := n.Mint(g1, tcpSYN)
	now = now.Add(2 * time.Second)
	if !n.Valid(late, g1, tcpSYN) || !n.Valid(x, g1, tcpSYN) {
		t.Fatal("nonce of the previous key rejected")
	}
	// Two rollovers later the old key is gone (a stale key).
	now = now.Add(2 * time.Minute)
	if n.Valid(late, g1, tcpSYN) {
		t.Fatal("nonce of a retired key accepted")
	}
	if y := n.Mint(g1, tcpSYN); !n.Valid(y, g1, tcpSYN) {
		t.Fatal("new nonce invalid")
	}
	// Another instance (another gateway's secret) rejects ours.
	if (&Nonces{}).Valid(x, g1, tcpSYN) {
		t.Fatal("nonce valid under another key")
	}
}

func TestFragment(t *testing.T) {
	pkt := append(bytes.Clone(tcpSYN), 9, 9, 9, 9)
	if f := Fragment(pkt); !bytes.Equal(f, tcpSYN) {
		t.Fatalf("fragment % x", f)
	}
	if f := Fragment(tcpSYN[:22]); len(f) != 28 || !bytes.Equal(f[:22], tcpSYN[:22]) {
		t.Fatalf("short packet fragment % x", f)
	}
}

func FuzzParseUDP(f *testing.F) {
	for _, m := range messages() {
		f.Add(m.AppendUDP(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseUDP(b)
		if err != nil {
			return
		}
		again, err := ParseUDP(m.AppendUDP(nil))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoding changed the message: %+v %+v %v", m, again, err)
		}
	})
}

func FuzzParseICMP(f *testing.F) {
	for _, m := range messages() {
		if m.Fragment != nil {
			f.Add(m.AppendICMP(nil))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseICMP(b)
		if err != nil {
			return
		}
		again, err := ParseICMP(m.AppendICMP(nil))
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoding changed the message: %+v %+v %v", m, again, err)
		}
	})
}

// FuzzFlowOf checks the flow and original-datagram readers on the packet
// fragments a hostile probe carries.
func FuzzFlowOf(f *testing.F) {
	f.Add(tcpSYN)
	f.Add(Fragment(tcpSYN))
	f.Add(make([]byte, 48))
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, err := FlowOf(b)
		if err != nil {
			return
		}
		if !fl.Src.IsValid() || !fl.Dst.IsValid() || fl.Src.Is4() != fl.Dst.Is4() {
			t.Fatalf("flow %+v of % x", fl, b)
		}
		if o, err := Original(b); err == nil && len(o) != len(Fragment(b)) {
			t.Fatalf("original of % x is % x", b, o)
		}
	})
}
