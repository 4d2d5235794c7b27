package memnet

import (
	"net/netip"
	"sync"
	"testing"

	conn "github.com/oevpn/oevpn/internal/wgconn"
)

// TestDeliverAndTap: a datagram reaches the bind of its destination with
// the sender's address, the tap sees it, and one to nobody is lost (but
// seen); ports must be given and are not shared.
func TestDeliverAndTap(t *testing.T) {
	var n Network
	var mu sync.Mutex
	var seen []string
	n.SetTap(func(from, to netip.AddrPort, pkt []byte) {
		mu.Lock()
		seen = append(seen, from.String()+">"+to.String()+":"+string(pkt))
		mu.Unlock()
	})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	ba, bb := n.Bind(a), n.Bind(b)
	if _, _, err := ba.Open(0); err == nil {
		t.Fatal("Open(0) succeeded")
	}
	if _, _, err := ba.Open(500); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Bind(a).Open(500); err == nil {
		t.Fatal("a second bind on a busy port")
	}
	recv, _, err := bb.Open(4500)
	if err != nil {
		t.Fatal(err)
	}
	ep, _ := ba.ParseEndpoint("192.0.2.2:4500")
	if err := ba.Send([][]byte{[]byte("one"), []byte("two")}, ep); err != nil {
		t.Fatal(err)
	}
	nowhere, _ := ba.ParseEndpoint("192.0.2.9:4500")
	ba.Send([][]byte{[]byte("lost")}, nowhere)
	bufs, sizes, eps := [][]byte{make([]byte, 100), make([]byte, 100)}, make([]int, 2), make([]conn.Endpoint, 2)
	got, err := recv[0](bufs, sizes, eps)
	if err != nil || got != 2 || string(bufs[1][:sizes[1]]) != "two" || eps[0].DstToString() != "192.0.2.1:500" || eps[0].SrcIP() != b {
		t.Fatalf("received %d (%v): %q from %v to %v", got, err, bufs[0][:sizes[0]], eps[0].DstToString(), eps[0].SrcIP())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[2] != "192.0.2.1:500>192.0.2.9:4500:lost" {
		t.Errorf("tap saw %q", seen)
	}
	bb.Close()
	if _, err := recv[0](bufs, sizes, eps); err == nil {
		t.Error("receive after Close succeeded")
	}
}
