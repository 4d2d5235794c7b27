package wgconn

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// TestCoalesceMessages: Send's grouping of a batch into UDP GSO messages,
// each gathering its run from the caller's buffers (which have no spare
// capacity: nothing is copied).
func TestCoalesceMessages(t *testing.T) {
	ep := &StdNetEndpoint{AddrPort: netip.MustParseAddrPort("127.0.0.1:4500")}
	for _, tt := range []struct {
		sizes []int
		want  string // datagrams per message, and the GSO size set
	}{
		{[]int{1400}, "[1/0]"},
		{[]int{1400, 1400, 1400}, "[3/1400]"},
		{[]int{1400, 1400, 300, 1400}, "[3/1400 1/0]"},
		{[]int{1200, 1400, 1400}, "[1/0 2/1400]"},
		{append(make([]int, 70), 900), "[64/900 7/900]"},
		{[]int{60000, 6000, 6000}, "[1/0 2/6000]"},
	} {
		bufs := make([][]byte, len(tt.sizes))
		for i, n := range tt.sizes {
			if n == 0 {
				n = 900
			}
			bufs[i] = make([]byte, n, n)
		}
		msgs := *newMessages()
		gso := map[int]uint16{}
		n := coalesceMessages(&net.UDPAddr{}, ep, bufs, msgs, func(oob *[]byte, size uint16) {
			for i := range msgs {
				if &msgs[i].OOB == oob {
					gso[i] = size
				}
			}
		})
		var got []string
		total := 0
		for i, m := range msgs[:n] {
			got = append(got, fmt.Sprintf("%d/%d", len(m.Buffers), gso[i]))
			for j, b := range m.Buffers {
				if &b[0] != &bufs[total+j][0] {
					t.Fatalf("sizes %v: message %d does not gather datagram %d from its buffer", tt.sizes, i, total+j)
				}
			}
			total += len(m.Buffers)
		}
		if fmt.Sprint(got) != tt.want || total != len(bufs) {
			t.Errorf("sizes %v: messages %v, want %s", tt.sizes, got, tt.want)
		}
	}
}
