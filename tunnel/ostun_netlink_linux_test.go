package tunnel

import "testing"

// FuzzNetlinkParse feeds the netlink message and attribute walkers
// arbitrary bytes: they stop at what is malformed, never panic.
func FuzzNetlinkParse(f *testing.F) {
	f.Add([]byte{20, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{8, 0, 4, 0, 7, 0, 0, 0, 3, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		splitMessages(b, func(typ uint16, seq uint32, payload []byte) bool {
			walkAttrs(payload, func(uint16, []byte) {})
			return false
		})
		walkAttrs(b, func(uint16, []byte) {})
	})
}
