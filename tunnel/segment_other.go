//go:build !linux

package tunnel

import "golang.zx2c4.com/wireguard/tun"

// newDeviceReader returns dev.Read: only Linux TUN devices read
// super-packets with a virtio-net header.
func newDeviceReader(dev tun.Device) func(bufs [][]byte, sizes []int, offset int) (int, error) {
	return dev.Read
}
