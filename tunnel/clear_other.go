//go:build !linux

package tunnel

// NewClearPath reports that this platform has no raw-socket clear path
// yet: traffic that must leave in the clear is dropped and counted.
func NewClearPath(mark uint32) (ClearPath, error) { return nil, ErrNoClearPath }
