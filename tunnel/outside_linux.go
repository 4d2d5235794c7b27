package tunnel

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

func (o Outside) setMark(fd uintptr) error {
	if o.Mark == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark)); err != nil {
		return fmt.Errorf("tunnel: SO_MARK %#x: %w", o.Mark, err)
	}
	return nil
}

func bindToInterface(fd uintptr, ifi *net.Interface, _ bool) error {
	return unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifi.Name)
}
