package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// rtnetlink: the few route messages oevpn sends on its own, without a
// process per request (bypass routes come and go with destinations remote
// peers choose) and without parsing the output of ip(8).

// nlRequest sends one rtnetlink request and returns the payloads of the
// messages the kernel answers with (not the acknowledgement). A request the
// kernel refuses returns its errno.
func nlRequest(typ, flags uint16, body []byte) ([][]byte, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	const seq = 1
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], seq)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	var out [][]byte
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(ne.Uint32(b[0:]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return nil, errors.New("netlink: truncated message")
			}
			mtyp, mseq, payload := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[unix.SizeofNlMsghdr:l]
			b = b[min(nlAlign(l), len(b)):]
			if mseq != seq {
				continue
			}
			switch mtyp {
			case unix.NLMSG_ERROR:
				if len(payload) < 4 {
					return nil, errors.New("netlink: truncated error")
				}
				if errno := int32(ne.Uint32(payload)); errno != 0 {
					return out, unix.Errno(-errno)
				}
				return out, nil // the acknowledgement ends every request
			case unix.NLMSG_DONE:
				return out, nil
			default:
				out = append(out, append([]byte(nil), payload...))
			}
		}
	}
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// rtAttr appends one route attribute.
func rtAttr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// rtMsg returns a struct rtmsg for a route to dst (a host route) of type
// typ, followed by its RTA_DST and, if table is not 0, RTA_TABLE.
func rtMsg(dst netip.Addr, typ uint8, table uint32) []byte {
	fam := uint8(unix.AF_INET)
	if dst.Is6() {
		fam = unix.AF_INET6
	}
	// family, dst_len, src_len, tos, table, protocol, scope, type, flags
	b := []byte{fam, uint8(dst.BitLen()), 0, 0, unix.RT_TABLE_UNSPEC, unix.RTPROT_STATIC, unix.RT_SCOPE_UNIVERSE, typ, 0, 0, 0, 0}
	b = rtAttr(b, unix.RTA_DST, dst.AsSlice())
	if table != 0 {
		b = rtAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, table))
	}
	return b
}

// addThrow installs (or replaces) a throw route for dst in table: lookups
// in table stop there and go on with the next rule.
func addThrow(table uint32, dst netip.Addr) error {
	_, err := nlRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, rtMsg(dst, unix.RTN_THROW, table))
	if err != nil {
		return fmt.Errorf("tunnel: adding throw route %v table %d: %w", dst, table, err)
	}
	return nil
}

// delThrow removes the throw route for dst from table; one that is not
// there is not an error.
func delThrow(table uint32, dst netip.Addr) error {
	_, err := nlRequest(unix.RTM_DELROUTE, 0, rtMsg(dst, unix.RTN_THROW, table))
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("tunnel: removing throw route %v table %d: %w", dst, table, err)
	}
	return nil
}

// routeOIF asks the kernel which interface a packet to dst without a
// mark leaves by (as `ip route get` does), with every rule applied.
func routeOIF(dst netip.Addr) (int, error) {
	msgs, err := nlRequest(unix.RTM_GETROUTE, 0, rtMsg(dst, 0, 0))
	if err != nil {
		return 0, err
	}
	ne := binary.NativeEndian
	for _, m := range msgs {
		if len(m) < unix.SizeofRtMsg {
			continue
		}
		for a := m[unix.SizeofRtMsg:]; len(a) >= unix.SizeofRtAttr; {
			l := int(ne.Uint16(a[0:]))
			if l < unix.SizeofRtAttr || l > len(a) {
				break
			}
			if ne.Uint16(a[2:]) == unix.RTA_OIF && l >= unix.SizeofRtAttr+4 {
				return int(ne.Uint32(a[unix.SizeofRtAttr:])), nil
			}
			a = a[min(nlAlign(l), len(a)):]
		}
	}
	return 0, errors.New("no output interface")
}
