package tunnel

import "errors"

// ErrRoutesNotLive refuses routes that cannot be added while the device
// runs on this platform.
var ErrRoutesNotLive = errors.New("tunnel: new routes into the device need a restart here")
