//go:build !linux

package tunnel

// NewClearPath reports that this platform has no raw-socket clear path:
// the caller uses the forwarder (Config.ForwardDial) instead.
func NewClearPath(Outside) (ClearPath, error) { return nil, ErrNoClearPath }
