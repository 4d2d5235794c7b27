//go:build !linux && !darwin && !windows

package tunnel

import (
	"errors"
	"net"
)

func (o Outside) setMark(uintptr) error { return nil }

func bindToInterface(uintptr, *net.Interface, bool) error {
	return errors.New("binding sockets to an interface is not supported on this platform")
}
