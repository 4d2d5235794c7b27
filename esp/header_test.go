package esp

import (
	"errors"
	"sync"
	"testing"
)

func TestClassify(t *testing.T) {
	probe := append(ProbePreamble[:], 1, 0, 0, 4)
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
		{"probe", probe, KindProbe, nil},
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
