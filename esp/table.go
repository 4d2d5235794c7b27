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

// Table maps inbound SPIs to values (the tunnel keeps its SA pairs here).
// Lookup is lock-free and O(1): it reads an immutable map that writers
// replace under a mutex, so the datapath never waits for the control plane.
type Table[V any] struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[uint32]V]
}

// Lookup returns the value for spi.
func (t *Table[V]) Lookup(spi uint32) (V, bool) {
	if m := t.m.Load(); m != nil {
		v, ok := (*m)[spi]
		return v, ok
	}
	var zero V
	return zero, false
}

// Len returns the number of entries.
func (t *Table[V]) Len() int {
	if m := t.m.Load(); m != nil {
		return len(*m)
	}
	return 0
}

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
	old := t.m.Load()
	if old != nil {
		if _, ok := (*old)[spi]; ok {
			return fmt.Errorf("%w: %#08x", ErrSPIInUse, spi)
		}
	}
	m := make(map[uint32]V, t.lenOf(old)+1)
	if old != nil {
		for k, e := range *old {
			m[k] = e
		}
	}
	m[spi] = v
	t.m.Store(&m)
	return nil
}

func (t *Table[V]) lenOf(m *map[uint32]V) int {
	if m == nil {
		return 0
	}
	return len(*m)
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
	old := t.m.Load()
	if old == nil {
		return fmt.Errorf("esp: SPI %#08x not allocated", spi)
	}
	if _, ok := (*old)[spi]; !ok {
		return fmt.Errorf("esp: SPI %#08x not allocated", spi)
	}
	m := make(map[uint32]V, len(*old))
	for k, e := range *old {
		m[k] = e
	}
	m[spi] = v
	t.m.Store(&m)
	return nil
}

// Remove deletes spi; it reports whether spi was present.
func (t *Table[V]) Remove(spi uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.m.Load()
	if old == nil {
		return false
	}
	if _, ok := (*old)[spi]; !ok {
		return false
	}
	m := make(map[uint32]V, len(*old))
	for k, e := range *old {
		if k != spi {
			m[k] = e
		}
	}
	t.m.Store(&m)
	return true
}
