// Package alias holds the buffer rules the AEADs for ESP (internal/gcm,
// internal/chachapoly) share with crypto/cipher's: appending the output
// to dst, and refusing an output that overlaps the input other than
// exactly (sealing and opening in place). crypto/internal/alias cannot be
// imported.
package alias

import "unsafe"

// InexactOverlap reports whether x and y share memory at different
// offsets: in place, both must start at the same octet.
func InexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	xs, ys := uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&y[0]))
	return xs <= ys+uintptr(len(y)-1) && ys <= xs+uintptr(len(x)-1)
}

// SliceForAppend extends in by n octets, reallocating when its capacity
// is short, and returns the whole slice and the new part.
func SliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}
