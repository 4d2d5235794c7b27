package esp

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// memSeq is a SeqStore in memory; fail makes Reserve fail.
type memSeq struct {
	mu    sync.Mutex
	limit uint64
	calls int
	fail  bool
}

func (m *memSeq) Reserved() (uint64, error) { m.mu.Lock(); defer m.mu.Unlock(); return m.limit, nil }

func (m *memSeq) Reserve(l uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.fail {
		return errors.New("disk full")
	}
	m.limit = l
	return nil
}

// ivOf returns the IV of an ESP packet (what the AEAD nonce is made of,
// with the key's salt).
func ivOf(pkt []byte) [8]byte { return [8]byte(pkt[headerLen : headerLen+8]) }

// TestSeqStoreRestart performs the attack on statically keyed SAs: the same
// key after a restart (a crash, with no orderly shutdown) must never seal
// with an IV it used before. Without a SeqStore both runs start at 1.
func TestSeqStoreRestart(t *testing.T) {
	for _, tr := range Transforms {
		t.Run(tr.String(), func(t *testing.T) {
			store := &memSeq{}
			seen := map[[8]byte]int{}
			inner := innerPacket(false, 64)
			for run := 0; run < 3; run++ {
				sa, err := NewSA(Config{Transform: tr, SPI: 0x1000, Key: testKey(tr, 1), Sequence: store})
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < 100; i++ {
					iv := ivOf(sealPacket(t, sa, inner, 4))
					if prev, ok := seen[iv]; ok {
						t.Fatalf("run %d packet %d reuses the IV %x of run %d under the same key", run, i, iv, prev)
					}
					seen[iv] = run
				}
				if store.limit < sa.seq.Load() {
					t.Fatalf("sealed with sequence number %d, only %d reserved", sa.seq.Load(), store.limit)
				}
			}
		})
	}
}

// TestSeqStoreReservation checks that the next block is reserved ahead, in
// the background, and that with no reservation (the store fails) packets
// are dropped rather than sealed with an unreserved number.
func TestSeqStoreReservation(t *testing.T) {
	store := &memSeq{}
	sa, err := NewSA(Config{Transform: AESGCM128, SPI: 0x1000, Key: testKey(AESGCM128, 1), Sequence: store})
	if err != nil {
		t.Fatal(err)
	}
	if store.limit != SeqBlock {
		t.Fatalf("reserved %d at start, want %d", store.limit, SeqBlock)
	}
	inner := innerPacket(false, 64)
	sa.seq.Store(SeqBlock / 2) // half the block used
	sealPacket(t, sa, inner, 4)
	for deadline := time.Now().Add(5 * time.Second); sa.seqLimit.Load() != 2*SeqBlock; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("next block not reserved: limit %d", sa.seqLimit.Load())
		}
	}
	store.mu.Lock()
	store.fail = true
	store.mu.Unlock()
	sa.seq.Store(2*SeqBlock - 1)
	sealPacket(t, sa, inner, 4) // the last reserved number
	buf := make([]byte, Headroom+len(inner)+Tailroom)
	for i := 0; i < 3; i++ {
		copy(buf[Headroom:], inner)
		if _, err := sa.Seal(buf, Headroom, len(inner), 4); !errors.Is(err, ErrSeqNotReserved) {
			t.Fatalf("Seal past the reservation: %v, want ErrSeqNotReserved", err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	store.mu.Lock()
	store.fail = false
	store.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		copy(buf[Headroom:], inner)
		pkt, err := sa.Seal(buf, Headroom, len(inner), 4)
		if err == nil {
			if seq := uint64(Header(pkt).Seq()); seq <= 2*SeqBlock {
				t.Fatalf("sealed with %d after the failed reservations", seq)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no packet sealed after the store recovered: %v", err)
		}
	}
}
