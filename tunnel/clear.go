package tunnel

import "errors"

// ClearPath sends packets that entered the device but must leave in the
// clear (policy clear, or opportunism that fell back to clear) without
// looping back into the device.
type ClearPath interface {
	// Send sends one whole IP packet (header included) as it is.
	Send(pkt []byte) error
	Close() error
}

// ErrNoClearPath is returned where the platform has no clear path.
var ErrNoClearPath = errors.New("tunnel: no clear path on this platform")
