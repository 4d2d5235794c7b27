package tunnel

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunGather writes gathered packets to a Linux TUN device's file with
// writev(2), through the runtime's poller (the file is non-blocking).
type tunGather struct {
	rc   syscall.RawConn
	iovs []unix.Iovec
	n    int // iovs in use by the write under way
	err  error
	do   func(fd uintptr) bool // w.write, made once: no closure per write
}

// newGatherWriter returns a gatherWriter for dev's file, or nil when dev
// is not a Linux TUN device with offloads.
func newGatherWriter(dev tun.Device) gatherWriter {
	rc := offloadFile(dev)
	if rc == nil {
		return nil
	}
	w := &tunGather{rc: rc, iovs: make([]unix.Iovec, maxCoalesced+1)}
	w.do = w.write
	return w
}

// offloadFile returns the raw file of dev when it is a Linux TUN device
// with offloads (its packets carry a virtio-net header: it reads and
// writes batches), nil otherwise.
func offloadFile(dev tun.Device) syscall.RawConn {
	if _, ok := dev.(*OSDevice); !ok || dev.BatchSize() < 2 {
		return nil
	}
	f := dev.File()
	if f == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

func (w *tunGather) writeGather(iov [][]byte) error {
	for i, b := range iov {
		w.iovs[i].Base = unsafe.SliceData(b)
		w.iovs[i].SetLen(len(b))
	}
	w.n = len(iov)
	if err := w.rc.Write(w.do); err != nil {
		return err
	}
	clear(w.iovs[:w.n]) // hold no buffer past the write
	if w.err != nil {
		return fmt.Errorf("%w: %w", errSuperPacket, w.err)
	}
	return nil
}

// write is the raw write: it reports false to wait for the file to be
// writable again.
func (w *tunGather) write(fd uintptr) bool {
	_, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iovs[0])), uintptr(w.n))
	if errno == unix.EAGAIN {
		return false
	}
	w.err = nil
	if errno != 0 {
		w.err = errno
	}
	return true
}
