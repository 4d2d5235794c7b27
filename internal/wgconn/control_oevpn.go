// Not from wireguard-go: oevpn's addition to this copy.

package wgconn

import "net"

// Control calls fn with each open socket of the bind and its network
// ("udp4", "udp6"), so that the caller can set socket options (oevpn binds
// its outer sockets to the outside interface on macOS and Windows, where
// SetMark does nothing).
func (s *StdNetBind) Control(fn func(network string, fd uintptr) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range []struct {
		network string
		conn    *net.UDPConn
	}{{"udp4", s.ipv4}, {"udp6", s.ipv6}} {
		if c.conn == nil {
			continue
		}
		rc, err := c.conn.SyscallConn()
		if err != nil {
			return err
		}
		var ferr error
		if err := rc.Control(func(fd uintptr) { ferr = fn(c.network, fd) }); err != nil {
			return err
		}
		if ferr != nil {
			return ferr
		}
	}
	return nil
}
