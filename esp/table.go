package esp

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrSPIInUse is returned when an inbound SPI is already taken.
var ErrSPIInUse = errors.New("esp: SPI already in use")

// minTableSlots is the number of hash slots of a new Table.
const minTableSlots = 16

// Table maps inbound SPIs to values (the tunnel keeps its SA pairs here).
//
// Lookup is lock-free, allocation-free and O(1): it reads immutable slots
// of a hash table through atomic pointers, so the datapath never waits
// for the control plane. Writers serialise on a mutex and replace only
// the slot they change (a copy of its few entries), so Insert and Remove
// cost O(1); when the entries outnumber the slots the table doubles,
// which keeps them O(1) amortised.
type Table[V any] struct {
	mu sync.Mutex // serialises writers
	n  atomic.Int64
	t  atomic.Pointer[spiSlots[V]]
}

// spiSlots is a hash table of 1<<(32-shift) slots; a slot's entries are
// immutable once published.
type spiSlots[V any] struct {
	shift uint32
	slots []atomic.Pointer[[]spiEntry[V]]
}

type spiEntry[V any] struct {
	spi uint32
	v   V
}

func newSPISlots[V any](n int) *spiSlots[V] {
	bits := uint32(0)
	for 1<<bits < n {
		bits++
	}
	return &spiSlots[V]{shift: 32 - bits, slots: make([]atomic.Pointer[[]spiEntry[V]], 1<<bits)}
}

// slot returns the slot of spi. Fibonacci hashing spreads sequential
// SPIs; ours are random anyway, and remote input never chooses them.
func (s *spiSlots[V]) slot(spi uint32) *atomic.Pointer[[]spiEntry[V]] {
	return &s.slots[(spi*0x9e3779b1)>>s.shift&uint32(len(s.slots)-1)]
}

// find returns the index of spi in es, or -1.
func find[V any](es []spiEntry[V], spi uint32) int {
	for i := range es {
		if es[i].spi == spi {
			return i
		}
	}
	return -1
}

// Lookup returns the value for spi.
func (t *Table[V]) Lookup(spi uint32) (V, bool) {
	if s := t.t.Load(); s != nil {
		if es := s.slot(spi).Load(); es != nil {
			if i := find(*es, spi); i >= 0 {
				return (*es)[i].v, true
			}
		}
	}
	var zero V
	return zero, false
}

// Len returns the number of entries.
func (t *Table[V]) Len() int { return int(t.n.Load()) }

// Insert adds spi → v, failing if spi is taken or reserved.
func (t *Table[V]) Insert(spi uint32, v V) error {
	if spi < MinSPI {
		return fmt.Errorf("%w %d", ErrReservedSPI, spi)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.insertLocked(spi, v)
}

func (t *Table[V]) insertLocked(spi uint32, v V) error {
	s := t.t.Load()
	if s == nil {
		s = newSPISlots[V](minTableSlots)
		t.t.Store(s)
	}
	slot := s.slot(spi)
	var old []spiEntry[V]
	if es := slot.Load(); es != nil {
		old = *es
	}
	if find(old, spi) >= 0 {
		return fmt.Errorf("%w: %#08x", ErrSPIInUse, spi)
	}
	es := append(append(make([]spiEntry[V], 0, len(old)+1), old...), spiEntry[V]{spi, v})
	slot.Store(&es)
	if n := t.n.Add(1); n > int64(len(s.slots)) {
		t.grow(s)
	}
	return nil
}

// grow publishes a copy of s with twice as many slots.
func (t *Table[V]) grow(s *spiSlots[V]) {
	g := newSPISlots[V](2 * len(s.slots))
	for i := range s.slots {
		es := s.slots[i].Load()
		if es == nil {
			continue
		}
		for _, e := range *es {
			slot := g.slot(e.spi)
			var l []spiEntry[V]
			if p := slot.Load(); p != nil {
				l = *p
			}
			l = append(l, e)
			slot.Store(&l)
		}
	}
	t.t.Store(g)
}

// Allocate picks a random unused SPI of at least MinSPI, stores v under it
// and returns it.
func (t *Table[V]) Allocate(v V) (uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b [4]byte
	for range 64 {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("esp: allocating SPI: %w", err)
		}
		spi := binary.BigEndian.Uint32(b[:])
		if spi < MinSPI {
			continue
		}
		if err := t.insertLocked(spi, v); err == nil {
			return spi, nil
		}
	}
	return 0, fmt.Errorf("esp: allocating SPI: %w after 64 tries", ErrSPIInUse)
}

// Replace stores v under spi, which must be present (e.g. reserved by
// Allocate with a placeholder value).
func (t *Table[V]) Replace(spi uint32, v V) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	slot, old, i := t.locate(spi)
	if i < 0 {
		return fmt.Errorf("esp: SPI %#08x not allocated", spi)
	}
	es := append([]spiEntry[V](nil), old...)
	es[i].v = v
	slot.Store(&es)
	return nil
}

// Remove deletes spi; it reports whether spi was present.
func (t *Table[V]) Remove(spi uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	slot, old, i := t.locate(spi)
	if i < 0 {
		return false
	}
	if len(old) == 1 {
		slot.Store(nil)
	} else {
		es := append(append(make([]spiEntry[V], 0, len(old)-1), old[:i]...), old[i+1:]...)
		slot.Store(&es)
	}
	t.n.Add(-1)
	return true
}

// locate returns spi's slot, its entries and spi's index in them (-1 if
// absent). The caller holds t.mu.
func (t *Table[V]) locate(spi uint32) (*atomic.Pointer[[]spiEntry[V]], []spiEntry[V], int) {
	s := t.t.Load()
	if s == nil {
		return nil, nil, -1
	}
	slot := s.slot(spi)
	es := slot.Load()
	if es == nil {
		return slot, nil, -1
	}
	return slot, *es, find(*es, spi)
}
