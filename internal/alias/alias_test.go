package alias

import "testing"

func TestInexactOverlap(t *testing.T) {
	b := make([]byte, 100)
	for _, tc := range []struct {
		name string
		x, y []byte
		want bool
	}{
		{"same start (in place)", b[10:50], b[10:30], false},
		{"disjoint", b[0:10], b[10:20], false},
		{"output ahead of input", b[11:40], b[10:40], true},
		{"output behind input", b[9:40], b[10:40], true},
		{"last octet shared", b[0:11], b[10:20], true},
		{"empty", b[10:10], b[5:20], false},
		{"other arrays", make([]byte, 10), make([]byte, 10), false},
	} {
		if got := InexactOverlap(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSliceForAppend(t *testing.T) {
	in := make([]byte, 3, 10)
	copy(in, "abc")
	head, tail := SliceForAppend(in, 5)
	if len(head) != 8 || len(tail) != 5 || &head[0] != &in[0] || &tail[0] != &head[3] {
		t.Fatal("with room: not extended in place")
	}
	head, tail = SliceForAppend(in, 20)
	if len(head) != 23 || len(tail) != 20 || &head[0] == &in[0] || string(head[:3]) != "abc" {
		t.Fatal("without room: not a new slice that starts with in")
	}
}
