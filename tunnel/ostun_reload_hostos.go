//go:build darwin || windows

package tunnel

// AddRoutes routes more prefixes into the device, as at start, for a
// reload that adds peers or policy prefixes; the OS picks their source
// address. It returns the routes it added; on error it removes them again
// and adds nothing.
func (d *OSDevice) AddRoutes(rs []Route) ([]Route, error) { return d.routing.addRoutes(rs) }
