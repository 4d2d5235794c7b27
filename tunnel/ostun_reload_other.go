//go:build !linux && !darwin && !windows

package tunnel

// AddRoutes adds nothing: on this platform the operator routes prefixes
// into the device (see CreateOSTUN).
func (d *OSDevice) AddRoutes([]Route) ([]Route, error) { return nil, nil }
