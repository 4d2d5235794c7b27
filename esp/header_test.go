package esp

import (
	"errors"
	"runtime"
	"sync"
	"testing"
)

func TestClassify(t *testing.T) {
	// An AutoVPN probe (package probe) starts with an SPI from the reserved
	// range: it is none of ESP's; the tunnel recognises its preamble.
	probe := append([]byte{0, 0, 0, 0xA5, 'A', 'U', 'T', 'O', 'V', 'P', 'N', 'P', 'R', 'O', 'B', 'E'}, 1, 0, 0, 4)
	tests := []struct {
		name string
		in   []byte
		kind Kind
		err  error
	}{
		{"keepalive", []byte{0xff}, KindKeepalive, nil},
		{"empty", nil, 0, ErrShortDatagram},
		{"one zero octet", []byte{0}, 0, ErrShortDatagram},
		{"short ESP", []byte{0, 0, 1, 0, 0, 0, 0}, 0, ErrShortDatagram},
		{"IKE behind the marker", append([]byte{0, 0, 0, 0}, make([]byte, 28)...), KindIKE, nil},
		{"ESP", []byte{0, 0, 1, 0, 0, 0, 0, 1, 9, 9}, KindESP, nil},
		{"probe", probe, 0, ErrReservedSPI},
		{"truncated probe", probe[:12], 0, ErrReservedSPI},
		{"reserved SPI", []byte{0, 0, 0, 0xa5, 'X', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0, ErrReservedSPI},
	}
	for _, tt := range tests {
		kind, err := Classify(tt.in)
		if kind != tt.kind || !errors.Is(err, tt.err) {
			t.Errorf("%s: Classify = %v, %v; want %v, %v", tt.name, kind, err, tt.kind, tt.err)
		}
	}
}

func TestTable(t *testing.T) {
	var tab Table[int]
	if _, ok := tab.Lookup(1000); ok {
		t.Fatal("empty table found an entry")
	}
	if err := tab.Insert(1000, 1); err != nil {
		t.Fatal(err)
	}
	if err := tab.Insert(1000, 2); !errors.Is(err, ErrSPIInUse) {
		t.Fatalf("duplicate insert: %v", err)
	}
	if err := tab.Insert(7, 2); !errors.Is(err, ErrReservedSPI) {
		t.Fatalf("reserved insert: %v", err)
	}
	seen := map[uint32]bool{}
	for i := 0; i < 1000; i++ {
		spi, err := tab.Allocate(i)
		if err != nil {
			t.Fatal(err)
		}
		if spi < MinSPI || seen[spi] {
			t.Fatalf("bad or repeated SPI %#x", spi)
		}
		seen[spi] = true
		if v, ok := tab.Lookup(spi); !ok || v != i {
			t.Fatalf("lookup %#x = %v, %v", spi, v, ok)
		}
	}
	if tab.Len() != 1001 {
		t.Fatalf("len %d", tab.Len())
	}
	if !tab.Remove(1000) || tab.Remove(1000) {
		t.Fatal("remove")
	}
	if _, ok := tab.Lookup(1000); ok {
		t.Fatal("removed entry still found")
	}
}

// TestTableConcurrent runs readers against a writer (meaningful under -race).
func TestTableConcurrent(t *testing.T) {
	var tab Table[*int]
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for spi := uint32(MinSPI); spi < MinSPI+64; spi++ {
					if v, ok := tab.Lookup(spi); ok && *v != int(spi) {
						t.Errorf("lookup %d = %d", spi, *v)
					}
				}
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		spi := uint32(MinSPI + i%64)
		v := int(spi)
		if tab.Insert(spi, &v) != nil {
			tab.Remove(spi)
		}
	}
	close(stop)
	wg.Wait()
}

// TestTableGrowth checks every entry through growth, replacement and
// removal.
func TestTableGrowth(t *testing.T) {
	var tab Table[int]
	const n = 5000
	for i := range n {
		if err := tab.Insert(MinSPI+uint32(i)*7, i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 2 {
		if !tab.Remove(MinSPI + uint32(i)*7) {
			t.Fatalf("remove %d", i)
		}
	}
	for i := 1; i < n; i += 4 {
		if err := tab.Replace(MinSPI+uint32(i)*7, -i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tab.Replace(MinSPI, 1); err == nil {
		t.Fatal("replaced a removed SPI")
	}
	for i := range n {
		v, ok := tab.Lookup(MinSPI + uint32(i)*7)
		want := i
		if i%4 == 1 {
			want = -i
		}
		if ok != (i%2 == 1) || ok && v != want {
			t.Fatalf("lookup %d = %d, %v", i, v, ok)
		}
	}
	if tab.Len() != n/2 {
		t.Fatalf("len %d, want %d", tab.Len(), n/2)
	}
}

// TestTableInsertCost checks that inserting into and removing from a
// large table costs what one entry does: the table used to copy itself
// whole on each change (4.5 ms per SA pair at 10,000).
func TestTableInsertCost(t *testing.T) {
	var tab Table[*int]
	const n, ops = 20000, 200
	for i := range n {
		if err := tab.Insert(MinSPI+uint32(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i := range ops {
		spi := uint32(MinSPI + n + i)
		if err := tab.Insert(spi, nil); err != nil {
			t.Fatal(err)
		}
		tab.Remove(spi)
	}
	runtime.ReadMemStats(&m1)
	if per := (m1.TotalAlloc - m0.TotalAlloc) / ops; per > 1024 {
		t.Errorf("an insert and a remove at %d entries allocate %d bytes, want ≤ 1024 (a copy of the table?)", n, per)
	}
}
