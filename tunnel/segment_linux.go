package tunnel

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunSegmenter reads a Linux TUN device with offloads through the
// runtime's poller (the file is non-blocking) and segments what it reads.
type tunSegmenter struct {
	rc  syscall.RawConn
	in  []byte // a virtio-net header and a packet of up to 64 KiB
	n   int    // octets the last read brought
	err error
	do  func(fd uintptr) bool // r.read, made once: no closure per read
}

// newDeviceReader returns the read function of the outbound datapath:
// a tunSegmenter's for a Linux TUN device with offloads, dev.Read
// otherwise.
func newDeviceReader(dev tun.Device) func(bufs [][]byte, sizes []int, offset int) (int, error) {
	if r := newTunSegmenter(dev); r != nil {
		return r.Read
	}
	return dev.Read
}

// newTunSegmenter returns a tunSegmenter for dev's file, or nil when dev
// is not a Linux TUN device with offloads.
func newTunSegmenter(dev tun.Device) *tunSegmenter {
	rc := offloadFile(dev)
	if rc == nil {
		return nil
	}
	r := &tunSegmenter{rc: rc, in: make([]byte, vnetHdrLen+maxPacket)}
	r.do = r.read
	return r
}

// Read reads one packet or super-packet from the device into bufs, as
// tun.Device.Read does.
func (r *tunSegmenter) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := r.rc.Read(r.do); err != nil {
		return 0, err
	}
	if r.err != nil {
		return 0, r.err
	}
	return segment(r.in[:r.n], bufs, sizes, offset)
}

// read is the raw read: it reports false to wait for the file to be
// readable again.
func (r *tunSegmenter) read(fd uintptr) bool {
	n, err := unix.Read(int(fd), r.in)
	for err == unix.EINTR {
		n, err = unix.Read(int(fd), r.in)
	}
	if err == unix.EAGAIN {
		return false
	}
	r.n, r.err = n, err
	if errors.Is(err, unix.EBADFD) {
		r.err = os.ErrClosed // the device went away, as tun.Device.Read reports it
	} else if err == nil && n == 0 {
		r.err = os.ErrClosed
	}
	return true
}
