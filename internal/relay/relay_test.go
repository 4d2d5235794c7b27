package relay

import (
	"net"
	"sync"
	"testing"
	"time"
)

func TestRelay(t *testing.T) {
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	a, _ := net.ListenUDP("udp", lo)
	b, _ := net.ListenUDP("udp", lo)
	defer a.Close()
	defer b.Close()
	var mu sync.Mutex
	var seen []string
	r, err := New(b.LocalAddr().(*net.UDPAddr).AddrPort(), func(dir Direction, d []byte) Verdict {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(d))
		if string(d) == "drop me" {
			return Drop
		}
		return Forward
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 100)
	a.WriteToUDPAddrPort([]byte("drop me"), r.AddrForA())
	a.WriteToUDPAddrPort([]byte("hello b"), r.AddrForA())
	b.SetDeadline(time.Now().Add(5 * time.Second))
	n, from, err := b.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello b" || from != r.AddrForB() {
		t.Fatalf("b got %q from %v, %v", buf[:n], from, err)
	}
	b.WriteToUDPAddrPort([]byte("hello a"), r.AddrForB())
	a.SetDeadline(time.Now().Add(5 * time.Second))
	n, from, err = a.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello a" || from != r.AddrForA() {
		t.Fatalf("a got %q from %v, %v", buf[:n], from, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("filter saw %q", seen)
	}
}
