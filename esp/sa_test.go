package esp

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
	"unsafe"
)

func testKey(t Transform, seed byte) []byte {
	k := make([]byte, t.KeyLen())
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return k
}

func testPair(tb testing.TB, t Transform, esn bool, window int) (out, in *SA) {
	tb.Helper()
	key := testKey(t, 1)
	var err error
	out, err = NewSA(Config{Transform: t, SPI: 0x1000, Key: key, ESN: esn})
	if err != nil {
		tb.Fatal(err)
	}
	in, err = NewSA(Config{Transform: t, SPI: 0x1000, Key: key, ESN: esn, ReplayWindow: window})
	if err != nil {
		tb.Fatal(err)
	}
	return out, in
}

// innerPacket builds a plausible IPv4 or IPv6 packet of n octets.
func innerPacket(v6 bool, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 31)
	}
	if n == 0 {
		return p
	}
	if v6 {
		p[0] = 0x60
	} else {
		p[0] = 0x45
	}
	return p
}

// sealPacket seals inner and returns a copy of the ESP packet.
func sealPacket(tb testing.TB, sa *SA, inner []byte, nh byte) []byte {
	tb.Helper()
	buf := make([]byte, Headroom+len(inner)+Tailroom)
	copy(buf[Headroom:], inner)
	pkt, err := sa.Seal(buf, Headroom, len(inner), nh)
	if err != nil {
		tb.Fatal(err)
	}
	return append([]byte(nil), pkt...)
}

// openPacket opens a copy of pkt.
func openPacket(sa *SA, pkt []byte) ([]byte, byte, error) {
	buf := make([]byte, Headroom+len(pkt))
	copy(buf[Headroom:], pkt)
	return sa.Open(buf, Headroom, len(pkt))
}

func TestRoundTrip(t *testing.T) {
	for _, tr := range Transforms {
		for _, esn := range []bool{false, true} {
			for _, v6 := range []bool{false, true} {
				name := fmt.Sprintf("%s/esn=%v/v6=%v", tr, esn, v6)
				t.Run(name, func(t *testing.T) {
					out, in := testPair(t, tr, esn, 0)
					nh := byte(4)
					if v6 {
						nh = 41
					}
					for _, n := range []int{0, 1, 20, 40, 63, 64, 65, 1399, 1400, 8192} {
						inner := innerPacket(v6, n)
						pkt := sealPacket(t, out, inner, nh)
						if len(pkt) > n+tr.Overhead() {
							t.Fatalf("n=%d: packet %d octets exceeds overhead bound %d", n, len(pkt), n+tr.Overhead())
						}
						if (len(pkt)-headerLen-tr.IVLen()-tr.ICVLen())%tr.blockAlign() != 0 {
							t.Fatalf("n=%d: ciphertext misaligned", n)
						}
						if n >= 16 && bytes.Contains(pkt, inner[:16]) {
							t.Fatalf("n=%d: plaintext visible in packet", n)
						}
						got, gotNH, err := openPacket(in, pkt)
						if err != nil {
							t.Fatalf("n=%d: open: %v", n, err)
						}
						if gotNH != nh || !bytes.Equal(got, inner) {
							t.Fatalf("n=%d: round trip mismatch", n)
						}
					}
					c := in.Counters()
					if c.Packets != 10 || c.ReplayDrops+c.IntegrityFailures+c.PaddingErrors != 0 {
						t.Fatalf("counters %+v", c)
					}
				})
			}
		}
	}
}

func TestEveryBitFlipFailsIntegrity(t *testing.T) {
	for _, tr := range Transforms {
		t.Run(tr.String(), func(t *testing.T) {
			out, _ := testPair(t, tr, true, 0)
			pkt := sealPacket(t, out, innerPacket(false, 60), 4)
			for bit := 0; bit < len(pkt)*8; bit++ {
				bad := append([]byte(nil), pkt...)
				bad[bit/8] ^= 1 << (bit % 8)
				_, in := testPair(t, tr, true, 0)
				_, _, err := openPacket(in, bad)
				if err == nil {
					t.Fatalf("bit %d flipped: packet accepted", bit)
				}
				if bit >= 64 && !errors.Is(err, ErrIntegrity) {
					t.Fatalf("bit %d flipped: %v, want ErrIntegrity", bit, err)
				}
			}
		})
	}
}

func TestMalformedPackets(t *testing.T) {
	for _, tr := range Transforms {
		t.Run(tr.String(), func(t *testing.T) {
			out, in := testPair(t, tr, false, 0)
			pkt := sealPacket(t, out, innerPacket(false, 100), 4)
			for n := 0; n < len(pkt); n++ {
				if _, _, err := openPacket(in, pkt[:n]); err == nil {
					t.Fatalf("truncated to %d: accepted", n)
				}
			}
			long := append(append([]byte(nil), pkt...), make([]byte, 16)...)
			if _, _, err := openPacket(in, long); err == nil {
				t.Fatal("oversized packet accepted")
			}
			garbage := bytes.Repeat([]byte{0x5a}, len(pkt))
			if _, _, err := openPacket(in, garbage); err == nil {
				t.Fatal("garbage accepted")
			}
			if _, _, err := in.Open(make([]byte, 10), 0, 10); !errors.Is(err, ErrBuffer) {
				t.Fatalf("no headroom: %v", err)
			}
			if _, _, err := openPacket(in, pkt); err != nil {
				t.Fatalf("intact packet after the bad ones: %v", err)
			}
		})
	}
}

func TestSealBufferChecks(t *testing.T) {
	out, _ := testPair(t, AESGCM128, false, 0)
	if _, err := out.Seal(make([]byte, 100), 10, 20, 4); !errors.Is(err, ErrBuffer) {
		t.Fatalf("short headroom: %v", err)
	}
	if _, err := out.Seal(make([]byte, Headroom+20), Headroom, 20, 4); !errors.Is(err, ErrBuffer) {
		t.Fatalf("short tailroom: %v", err)
	}
}

func TestPaddingChecked(t *testing.T) {
	out, in := testPair(t, AESGCM128, false, 0)
	tests := []struct {
		name    string
		payload [4]byte // the whole plaintext: data, padding, pad length, next header
		err     error
	}{
		{"valid", [4]byte{0xff, 1, 1, 4}, nil},
		{"pad length beyond payload", [4]byte{0, 0, 200, 4}, ErrPadding},
		{"non-monotonic padding", [4]byte{0, 9, 1, 4}, ErrPadding},
		{"pad length equals payload", [4]byte{1, 2, 2, 4}, nil},
	}
	for i, tt := range tests {
		buf := make([]byte, Headroom+4+Tailroom)
		copy(buf[Headroom:], tt.payload[:])
		_, _, err := openPacket(in, sealRaw(t, out, buf, uint64(i+1)))
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
		}
	}
	if got := in.Counters().PaddingErrors; got != 2 {
		t.Fatalf("padding errors counted %d, want 2", got)
	}
}

// sealRaw encrypts buf[Headroom:Headroom+4] as the complete ESP payload,
// trailer included, with sequence number seq.
func sealRaw(tb testing.TB, sa *SA, buf []byte, seq uint64) []byte {
	tb.Helper()
	start := Headroom - sa.ivLen - headerLen
	Header(buf[start:]).Encode(sa.spi, uint32(seq))
	nonce := buf[start-12 : start]
	copy(nonce, sa.c.salt[:])
	copy(nonce[4:], buf[start+headerLen:Headroom])
	sa.c.aead.Seal(buf[Headroom:Headroom], nonce, buf[Headroom:Headroom+4], sa.aad(buf, start, seq))
	return append([]byte(nil), buf[start:Headroom+4+16]...)
}

func TestDummyPacketDropped(t *testing.T) {
	out, in := testPair(t, ChaCha20Poly1305, false, 0)
	pkt := sealPacket(t, out, nil, NextHeaderNone)
	if _, _, err := openPacket(in, pkt); !errors.Is(err, ErrDummy) {
		t.Fatalf("dummy: %v", err)
	}
}

func TestReplay(t *testing.T) {
	for _, esn := range []bool{false, true} {
		t.Run(fmt.Sprintf("esn=%v", esn), func(t *testing.T) {
			out, in := testPair(t, AESGCM128, esn, 1024)
			var pkts [][]byte
			for i := 0; i < 3000; i++ {
				pkts = append(pkts, sealPacket(t, out, innerPacket(false, 40), 4))
			}
			accept := func(i int) {
				t.Helper()
				if _, _, err := openPacket(in, pkts[i]); err != nil {
					t.Fatalf("seq %d: %v", i+1, err)
				}
			}
			drops := 0
			reject := func(i int) {
				t.Helper()
				_, _, err := openPacket(in, pkts[i])
				// With ESN a number below the window is taken for the next
				// subspace (RFC 4303 Appendix A2.2) and fails the ICV.
				if !errors.Is(err, ErrReplay) && !(esn && errors.Is(err, ErrIntegrity)) {
					t.Fatalf("seq %d: %v, want ErrReplay", i+1, err)
				}
				drops++
			}
			accept(0)
			reject(0) // duplicate
			accept(2000)
			accept(1500) // out of order, within the window
			accept(1000) // 1000 behind: still inside a 1024 window
			reject(1500) // duplicate out of order
			reject(900)  // too old
			reject(2000) // duplicate of the highest
			accept(2999) // jump ahead
			reject(1000) // fell out of the window
			for i := 2998; i > 2999-1024; i-- {
				if i != 2000 {
					accept(i)
				}
			}
			reject(2999 - 1024)
			c := in.Counters()
			if got := int(c.ReplayDrops + c.IntegrityFailures); got != drops {
				t.Fatalf("drops counted %d, want %d", got, drops)
			}
			if !esn && c.IntegrityFailures != 0 {
				t.Fatalf("integrity failures %d without ESN", c.IntegrityFailures)
			}
		})
	}
}

func TestReplayWindowSizes(t *testing.T) {
	for _, size := range []int{32, 64, 1000, 1024, 4096, 65536} {
		var w replayWindow
		w.init(size)
		w.update(100000)
		if !w.check(100000 - uint64(size) + 1) {
			t.Fatalf("size %d: oldest in-window number refused", size)
		}
		if w.check(100000 - uint64(size)) {
			t.Fatalf("size %d: number just outside the window accepted", size)
		}
	}
	var w replayWindow
	w.init(1024)
	if w.check(0) {
		t.Fatal("sequence number 0 accepted")
	}
}

func TestReplayIntegrityFailureDoesNotAdvance(t *testing.T) {
	out, in := testPair(t, AESGCM256, false, 64)
	good := sealPacket(t, out, innerPacket(false, 40), 4)
	for i := 0; i < 500; i++ {
		sealPacket(t, out, innerPacket(false, 40), 4)
	}
	forged := sealPacket(t, out, innerPacket(false, 40), 4)
	forged[len(forged)-1] ^= 1 // seq 502, bad ICV
	if _, _, err := openPacket(in, forged); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("forged: %v", err)
	}
	if _, _, err := openPacket(in, good); err != nil {
		t.Fatalf("forgery moved the window: %v", err)
	}
}

func TestESNWrap(t *testing.T) {
	for _, tr := range []Transform{AESGCM128, ChaCha20Poly1305, AESCBC256HMACSHA256} {
		t.Run(tr.String(), func(t *testing.T) {
			out, in := testPair(t, tr, true, 0)
			start := uint64(1<<32 - 3)
			out.seq.Store(start - 1)
			in.replay.last = start - 1
			var pkts [][]byte
			for i := 0; i < 8; i++ {
				pkts = append(pkts, sealPacket(t, out, innerPacket(true, 80), 41))
			}
			// Deliver out of order across the wrap of the low 32 bits.
			for _, i := range []int{0, 4, 1, 2, 5, 3, 7, 6} {
				if _, _, err := openPacket(in, pkts[i]); err != nil {
					t.Fatalf("packet %d (seq %#x): %v", i, start+uint64(i), err)
				}
			}
			if in.replay.last != start+7 {
				t.Fatalf("highest %#x, want %#x", in.replay.last, start+7)
			}
			if _, _, err := openPacket(in, pkts[1]); !errors.Is(err, ErrReplay) {
				t.Fatalf("replay across wrap: %v", err)
			}
			// An SA without ESN must not verify a packet whose ICV covered
			// the high bits.
			noESN, _ := NewSA(Config{Transform: tr, SPI: 0x1000, Key: testKey(tr, 1)})
			if _, _, err := openPacket(noESN, pkts[6]); err == nil {
				t.Fatal("ESN packet accepted by a non-ESN SA")
			}
		})
	}
}

func TestInferESN(t *testing.T) {
	const w = 1024
	tests := []struct {
		last uint64
		low  uint32
		want uint64
		ok   bool
	}{
		{0, 1, 1, true},
		{5, 3, 3, true},
		{5, 0xffffff00, 0, false}, // before the first subspace
		{1<<32 + 10, 5, 1<<32 + 5, true},
		{1<<32 + 10, 0xfffffff0, 0xfffffff0, true},
		{0xfffffff0, 3, 1<<32 + 3, true},
		{0xfffffff0, 0xffffffe0, 0xffffffe0, true},
		{5<<32 | 0x80000000, 0x7fffffff, 5<<32 | 0x7fffffff, true},
		{5<<32 | 0x80000000, 0x10, 6<<32 | 0x10, true},
	}
	for _, tt := range tests {
		got, ok := inferESN(tt.last, w, tt.low)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("inferESN(%#x, %#x) = %#x, %v; want %#x, %v", tt.last, tt.low, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSequenceExhaustion(t *testing.T) {
	var events []Event
	out, err := NewSA(Config{Transform: AESGCM128, SPI: 0x2000, Key: testKey(AESGCM128, 3),
		OnEvent: func(_ *SA, e Event) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	out.seq.Store(1<<32 - 2)
	sealPacket(t, out, innerPacket(false, 40), 4) // seq 2^32-1, the last one
	buf := make([]byte, Headroom+40+Tailroom)
	for i := 0; i < 3; i++ {
		if _, err := out.Seal(buf, Headroom, 40, 4); !errors.Is(err, ErrSeqExhausted) && !errors.Is(err, ErrExpired) {
			t.Fatalf("seal past 2^32-1: %v", err)
		}
	}
	if len(events) != 1 || events[0] != EventHardExpire {
		t.Fatalf("events %v, want one hard-expire", events)
	}
}

func TestLifetimes(t *testing.T) {
	var events []Event
	cfg := Config{Transform: AESGCM128, SPI: 0x3000, Key: testKey(AESGCM128, 5),
		Soft: Lifetime{Packets: 3, Time: time.Minute}, Hard: Lifetime{Packets: 5, Bytes: 1 << 20, Time: 2 * time.Minute},
		OnEvent: func(_ *SA, e Event) { events = append(events, e) }}
	out, err := NewSA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		sealPacket(t, out, innerPacket(false, 40), 4)
	}
	buf := make([]byte, Headroom+40+Tailroom)
	if _, err := out.Seal(buf, Headroom, 40, 4); !errors.Is(err, ErrExpired) {
		t.Fatalf("sixth packet: %v, want ErrExpired", err)
	}
	if len(events) != 2 || events[0] != EventSoftExpire || events[1] != EventHardExpire {
		t.Fatalf("events %v", events)
	}

	events = nil
	cfg.Soft.Packets, cfg.Hard.Packets = 0, 0
	cfg.Soft.Bytes = 100
	byBytes, _ := NewSA(cfg)
	sealPacket(t, byBytes, innerPacket(false, 60), 4)
	sealPacket(t, byBytes, innerPacket(false, 60), 4)
	if len(events) != 1 || events[0] != EventSoftExpire {
		t.Fatalf("byte soft limit: events %v", events)
	}

	events = nil
	byTime, _ := NewSA(cfg)
	byTime.Tick(byTime.Created().Add(30 * time.Second))
	byTime.Tick(byTime.Created().Add(61 * time.Second))
	byTime.Tick(byTime.Created().Add(62 * time.Second))
	if len(events) != 1 || events[0] != EventSoftExpire {
		t.Fatalf("soft time: events %v", events)
	}
	byTime.Tick(byTime.Created().Add(3 * time.Minute))
	if !byTime.Expired() {
		t.Fatal("not expired after the hard time")
	}
	if _, err := byTime.Seal(buf, Headroom, 40, 4); !errors.Is(err, ErrExpired) {
		t.Fatalf("seal after hard time: %v", err)
	}
}

func TestNewSAErrors(t *testing.T) {
	if _, err := NewSA(Config{Transform: AESGCM128, SPI: 5, Key: testKey(AESGCM128, 1)}); !errors.Is(err, ErrReservedSPI) {
		t.Fatalf("reserved SPI: %v", err)
	}
	if _, err := NewSA(Config{Transform: AESGCM128, SPI: 300, Key: make([]byte, 16)}); !errors.Is(err, ErrKeyLength) {
		t.Fatalf("short key: %v", err)
	}
	if _, err := NewSA(Config{Transform: 99, SPI: 300}); !errors.Is(err, ErrUnknownTransform) {
		t.Fatalf("bad transform: %v", err)
	}
	if _, err := ParseTransform("des"); !errors.Is(err, ErrUnknownTransform) {
		t.Fatalf("parse: %v", err)
	}
	for _, tr := range Transforms {
		got, err := ParseTransform(tr.String())
		if err != nil || got != tr {
			t.Fatalf("ParseTransform(%q) = %v, %v", tr, got, err)
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	for _, tr := range Transforms {
		out, in := testPair(t, tr, true, 0)
		buf := make([]byte, Headroom+1400+Tailroom)
		rx := make([]byte, len(buf))
		var pkt []byte
		seal := testing.AllocsPerRun(100, func() {
			var err error
			if pkt, err = out.Seal(buf, Headroom, 1400, 4); err != nil {
				t.Fatal(err)
			}
		})
		in.replay.init(-1) // the same packet opened many times
		copy(rx[Headroom:], pkt)
		saved := append([]byte(nil), pkt...)
		open := testing.AllocsPerRun(100, func() {
			copy(rx[Headroom:], saved)
			if _, _, err := in.Open(rx, Headroom, len(saved)); err != nil {
				t.Fatal(err)
			}
		})
		if seal != 0 || open != 0 {
			t.Errorf("%s: %v allocs per Seal, %v per Open; want 0", tr, seal, open)
		}
	}
}

// TestSALayout checks that an SA takes whole cache lines (so the heap
// aligns it to them) and that what every packet reads sits in the first
// three.
func TestSALayout(t *testing.T) {
	var sa SA
	if s := unsafe.Sizeof(sa); s%64 != 0 {
		t.Errorf("SA takes %d octets, not a multiple of 64", s)
	}
	if end := unsafe.Offsetof(sa.c) + unsafe.Offsetof(sa.c.salt) + unsafe.Sizeof(sa.c.salt); end > 192 {
		t.Errorf("the hot fields end at octet %d", end)
	}
}
