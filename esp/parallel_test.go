package esp

import (
	"bytes"
	"errors"
	"sync"
	"testing"
)

// TestParallelSealOrder frames packets in order, seals them on several
// goroutines at once (the datapath's workers) and checks that the
// sequence numbers on the wire follow the order of Frame and that every
// packet opens, with the lifetime counters right on both sides.
func TestParallelSealOrder(t *testing.T) {
	for _, tr := range Transforms {
		t.Run(tr.String(), func(t *testing.T) {
			out, in := testPair(t, tr, true, 0)
			const n = 64
			inner := innerPacket(false, 300)
			bufs := make([][]byte, n)
			frames := make([]Outbound, n)
			for i := range bufs {
				bufs[i] = make([]byte, Headroom+len(inner)+Tailroom)
				copy(bufs[i][Headroom:], inner)
				if err := out.Frame(&frames[i], bufs[i], Headroom, len(inner), 4); err != nil {
					t.Fatal(err)
				}
			}
			pkts := make([][]byte, n)
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					for i := n - 1 - w; i >= 0; i -= 4 { // backwards: not the order of Frame
						var err error
						if pkts[i], err = frames[i].Seal(); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			for i, p := range pkts {
				if seq := Header(p).Seq(); seq != uint32(i+1) {
					t.Fatalf("packet %d has sequence number %d, want %d", i, seq, i+1)
				}
				got, _, err := openPacket(in, p)
				if err != nil || !bytes.Equal(got, inner) {
					t.Fatalf("packet %d: %v", i, err)
				}
			}
			if c, d := out.Counters(), in.Counters(); c.Packets != n || d.Packets != n || c.Bytes != n*uint64(len(inner)) {
				t.Fatalf("counters: out %+v, in %+v", c, d)
			}
		})
	}
}

// TestDecryptedCopyReplayed performs the attack on the split Open: two
// copies of one packet in one received batch both pass Check (the window
// has not changed yet) and both decrypt; Accept must take only the first.
func TestDecryptedCopyReplayed(t *testing.T) {
	for _, tr := range Transforms {
		t.Run(tr.String(), func(t *testing.T) {
			out, in := testPair(t, tr, true, 0)
			pkt := sealPacket(t, out, innerPacket(false, 100), 4)
			var ins [2]Inbound
			for i := range ins {
				buf := make([]byte, Headroom+len(pkt))
				copy(buf[Headroom:], pkt)
				if err := in.Check(&ins[i], buf, Headroom, len(pkt)); err != nil {
					t.Fatalf("copy %d: Check: %v", i, err)
				}
				if err := ins[i].Decrypt(); err != nil {
					t.Fatalf("copy %d: Decrypt: %v", i, err)
				}
			}
			if _, _, err := ins[0].Accept(); err != nil {
				t.Fatalf("first copy: %v", err)
			}
			if _, _, err := ins[1].Accept(); !errors.Is(err, ErrReplay) {
				t.Fatalf("second copy: %v, want %v", err, ErrReplay)
			}
			if c := in.Counters(); c.Packets != 1 || c.ReplayDrops != 1 {
				t.Fatalf("counters %+v: want 1 packet, 1 replay drop", c)
			}
		})
	}
}
