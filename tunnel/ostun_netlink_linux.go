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
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		var reqErr error
		done, err := splitMessages(buf[:n], func(typ uint16, mseq uint32, payload []byte) bool {
			switch {
			case mseq != seq:
				return false
			case typ == unix.NLMSG_ERROR:
				// The acknowledgement (errno 0) ends every request.
				if len(payload) < 4 {
					reqErr = errors.New("netlink: truncated error")
				} else if errno := int32(ne.Uint32(payload)); errno != 0 {
					reqErr = unix.Errno(-errno)
				}
				return true
			case typ == unix.NLMSG_DONE:
				return true
			}
			out = append(out, append([]byte(nil), payload...))
			return false
		})
		if err != nil {
			return nil, err
		}
		if done {
			return out, reqErr
		}
	}
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// walkAttrs calls f with the type and data of each route attribute in b,
// up to the first malformed one.
func walkAttrs(b []byte, f func(typ uint16, data []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		f(binary.NativeEndian.Uint16(b[2:]), b[unix.SizeofRtAttr:l])
		b = b[min(nlAlign(l), len(b)):]
	}
}

// splitMessages calls f with the type, sequence number and payload of each
// netlink message in b; it stops at a malformed one.
func splitMessages(b []byte, f func(typ uint16, seq uint32, payload []byte) (done bool)) (done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b[0:]))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return false, errors.New("netlink: truncated message")
		}
		if f(ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[unix.SizeofNlMsghdr:l]) {
			return true, nil
		}
		b = b[min(nlAlign(l), len(b)):]
	}
	return false, nil
}

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
func routeOIF(dst, src netip.Addr) (int, error) {
	req := rtMsg(dst, 0, 0)
	if src.IsValid() && src.Is6() == dst.Is6() {
		// From src, as policy-routing rules on the source see it.
		req[2] = uint8(src.BitLen())
		req = rtAttr(req, unix.RTA_SRC, src.AsSlice())
	}
	msgs, err := nlRequest(unix.RTM_GETROUTE, 0, req)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if len(m) < unix.SizeofRtMsg {
			continue
		}
		oif := -1
		walkAttrs(m[unix.SizeofRtMsg:], func(typ uint16, data []byte) {
			if typ == unix.RTA_OIF && len(data) >= 4 {
				oif = int(binary.NativeEndian.Uint32(data))
			}
		})
		if oif >= 0 {
			return oif, nil
		}
	}
	return 0, errors.New("no output interface")
}

// The device's setup, as ip(8) would do it: addresses, link up, routes
// and policy-routing rules.

func famOf(v6 bool) uint8 {
	if v6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// addAddress assigns p to the interface with index ifindex.
func addAddress(ifindex int, p netip.Prefix) error {
	a := p.Addr()
	b := []byte{famOf(a.Is6()), uint8(p.Bits()), 0, unix.RT_SCOPE_UNIVERSE}
	b = binary.NativeEndian.AppendUint32(b, uint32(ifindex))
	b = rtAttr(b, unix.IFA_LOCAL, a.AsSlice())
	b = rtAttr(b, unix.IFA_ADDRESS, a.AsSlice())
	if _, err := nlRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, b); err != nil {
		return fmt.Errorf("tunnel: adding address %v: %w", p, err)
	}
	return nil
}

// ifInfo returns the header of a link message (struct ifinfomsg) for the
// interface with index ifindex, changing the flags in change to flags.
func ifInfo(ifindex int, flags, change uint32) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0}
	b = binary.NativeEndian.AppendUint32(b, uint32(ifindex))
	b = binary.NativeEndian.AppendUint32(b, flags)
	return binary.NativeEndian.AppendUint32(b, change)
}

// linkUp brings the interface with index ifindex up.
func linkUp(ifindex int) error {
	if _, err := nlRequest(unix.RTM_NEWLINK, 0, ifInfo(ifindex, unix.IFF_UP, unix.IFF_UP)); err != nil {
		return fmt.Errorf("tunnel: bringing the device up: %w", err)
	}
	return nil
}

// setSuperPacketSize sets the largest TCP super-packet (GSO) the kernel
// hands the interface with index ifindex (ip link set D gso_max_size N).
func setSuperPacketSize(ifindex, size int) error {
	b := rtAttr(ifInfo(ifindex, 0, 0), unix.IFLA_GSO_MAX_SIZE, binary.NativeEndian.AppendUint32(nil, uint32(size)))
	if _, err := nlRequest(unix.RTM_NEWLINK, 0, b); err != nil {
		return fmt.Errorf("tunnel: setting the device's gso_max_size to %d: %w", size, err)
	}
	return nil
}

// replaceDevRoute routes p into the interface with index ifindex, in
// table, with preferred source src if valid (ip route replace P dev D
// table T src S).
func replaceDevRoute(ifindex int, table uint32, p netip.Prefix, src netip.Addr) error {
	a := p.Masked().Addr()
	b := []byte{famOf(a.Is6()), uint8(p.Bits()), 0, 0, unix.RT_TABLE_UNSPEC, unix.RTPROT_BOOT, unix.RT_SCOPE_LINK, unix.RTN_UNICAST, 0, 0, 0, 0}
	if p.Bits() > 0 {
		b = rtAttr(b, unix.RTA_DST, a.AsSlice())
	}
	b = rtAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, table))
	b = rtAttr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(ifindex)))
	if src.IsValid() {
		b = rtAttr(b, unix.RTA_PREFSRC, src.AsSlice())
	}
	if _, err := nlRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b); err != nil {
		return fmt.Errorf("tunnel: routing %v into the device (table %d): %w", p, table, err)
	}
	return nil
}

// rule is one policy-routing rule: packets that match (all the set
// fields; with invert, those that do not) look up table.
type rule struct {
	v6       bool
	priority uint32
	table    uint32
	invert   bool
	fwmark   uint32       // 0: any
	iif      string       // "": any
	from, to netip.Prefix // invalid: any
}

func (r rule) msg(full bool) []byte {
	var flags uint32
	if r.invert {
		flags = unix.FIB_RULE_INVERT
	}
	// family, dst_len, src_len, tos, table, res1, res2, action, flags
	b := []byte{famOf(r.v6), 0, 0, 0, unix.RT_TABLE_UNSPEC, 0, 0, 0}
	if full {
		b[7] = unix.FR_ACT_TO_TBL
	}
	b = binary.NativeEndian.AppendUint32(b, flags)
	b = rtAttr(b, unix.FRA_PRIORITY, binary.NativeEndian.AppendUint32(nil, r.priority))
	if !full {
		return b
	}
	b = rtAttr(b, unix.FRA_TABLE, binary.NativeEndian.AppendUint32(nil, r.table))
	if r.fwmark != 0 {
		b = rtAttr(b, unix.FRA_FWMARK, binary.NativeEndian.AppendUint32(nil, r.fwmark))
	}
	if r.iif != "" {
		b = rtAttr(b, unix.FRA_IIFNAME, append([]byte(r.iif), 0))
	}
	if r.from.IsValid() {
		b[2] = uint8(r.from.Bits())
		b = rtAttr(b, unix.FRA_SRC, r.from.Masked().Addr().AsSlice())
	}
	if r.to.IsValid() {
		b[1] = uint8(r.to.Bits())
		b = rtAttr(b, unix.FRA_DST, r.to.Masked().Addr().AsSlice())
	}
	return b
}

// addRule adds r after the rules of its priority, even if one of them is
// the same: a dead run's rule is removed only once ours is in place.
func addRule(r rule) error {
	if _, err := nlRequest(unix.RTM_NEWRULE, unix.NLM_F_CREATE, r.msg(true)); err != nil {
		return fmt.Errorf("tunnel: adding routing rule (priority %d, table %d): %w", r.priority, r.table, err)
	}
	return nil
}

// delRule removes the first (oldest) rule of r's family with r's priority.
func delRule(r rule) error {
	_, err := nlRequest(unix.RTM_DELRULE, 0, r.msg(false))
	return err
}

// blockMetric is the metric of the prohibit routes that stand behind the
// device's own (metric 0) in oevpn's tables: while the device exists its
// routes win; when it goes away with a process that was killed, the kernel
// removes them and the prohibit routes take over.
const blockMetric = 0x4f45

// addBlock installs (or replaces) a prohibit route for p in table at
// blockMetric (ip route replace prohibit P table T metric M).
func addBlock(table uint32, p netip.Prefix) error {
	if _, err := nlRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, blockMsg(table, p)); err != nil {
		return fmt.Errorf("tunnel: adding prohibit route %v (table %d): %w", p, table, err)
	}
	return nil
}

// delBlock removes what addBlock installed; one that is not there is not
// an error.
func delBlock(table uint32, p netip.Prefix) error {
	_, err := nlRequest(unix.RTM_DELROUTE, 0, blockMsg(table, p))
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("tunnel: removing prohibit route %v (table %d): %w", p, table, err)
	}
	return nil
}

func blockMsg(table uint32, p netip.Prefix) []byte {
	a := p.Masked().Addr()
	b := []byte{famOf(a.Is6()), uint8(p.Bits()), 0, 0, unix.RT_TABLE_UNSPEC, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_PROHIBIT, 0, 0, 0, 0}
	if p.Bits() > 0 {
		b = rtAttr(b, unix.RTA_DST, a.AsSlice())
	}
	b = rtAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, table))
	return rtAttr(b, unix.RTA_PRIORITY, binary.NativeEndian.AppendUint32(nil, blockMetric))
}

// route is one route of a table, as a dump returns it.
type route struct {
	hdr    []byte // struct rtmsg
	prefix netip.Prefix
	oif    []byte
	metric []byte
}

// isBlock reports whether r is one of addBlock's routes.
func (r route) isBlock() bool {
	return r.hdr[7] == unix.RTN_PROHIBIT && len(r.metric) == 4 && binary.NativeEndian.Uint32(r.metric) == blockMetric
}

// routes returns the routes of table, both families.
func routes(table uint32) ([]route, error) {
	var out []route
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := nlRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP, []byte{fam, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if len(m) < unix.SizeofRtMsg {
				continue
			}
			t := uint32(m[4])
			r := route{hdr: m[:unix.SizeofRtMsg]}
			var dst []byte
			walkAttrs(m[unix.SizeofRtMsg:], func(typ uint16, data []byte) {
				switch typ {
				case unix.RTA_TABLE:
					if len(data) >= 4 {
						t = binary.NativeEndian.Uint32(data)
					}
				case unix.RTA_DST:
					dst = data
				case unix.RTA_OIF:
					r.oif = data
				case unix.RTA_PRIORITY:
					r.metric = data
				}
			})
			if t != table {
				continue
			}
			a, ok := netip.AddrFromSlice(dst)
			if !ok {
				a = netip.IPv4Unspecified()
				if fam == unix.AF_INET6 {
					a = netip.IPv6Unspecified()
				}
			}
			r.prefix = netip.PrefixFrom(a, int(m[1]))
			out = append(out, r)
		}
	}
	return out, nil
}

// delRoute removes r from table.
func delRoute(table uint32, r route) error {
	b := append([]byte(nil), r.hdr...)
	b[4], b[6] = unix.RT_TABLE_UNSPEC, unix.RT_SCOPE_NOWHERE
	if r.prefix.Bits() > 0 {
		b = rtAttr(b, unix.RTA_DST, r.prefix.Addr().AsSlice())
	}
	if r.oif != nil {
		b = rtAttr(b, unix.RTA_OIF, r.oif)
	}
	if r.metric != nil {
		b = rtAttr(b, unix.RTA_PRIORITY, r.metric)
	}
	b = rtAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, table))
	if _, err := nlRequest(unix.RTM_DELROUTE, 0, b); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("tunnel: removing route %v (table %d): %w", r.prefix, table, err)
	}
	return nil
}

// flushTable removes the routes of table, both families, except those
// keep returns true for (nil: all).
func flushTable(table uint32, keep func(route) bool) error {
	rs, err := routes(table)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rs {
		if keep == nil || !keep(r) {
			errs = append(errs, delRoute(table, r))
		}
	}
	return errors.Join(errs...)
}

// ruleCounts returns the number of rules at each priority, per family
// (index 0: IPv4, 1: IPv6).
func ruleCounts() ([2]map[uint32]int, error) {
	var out [2]map[uint32]int
	for i, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		out[i] = map[uint32]int{}
		msgs, err := nlRequest(unix.RTM_GETRULE, unix.NLM_F_DUMP, []byte{fam, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		if err != nil {
			return out, err
		}
		for _, m := range msgs {
			if len(m) < 12 {
				continue
			}
			var prio uint32 // a rule without FRA_PRIORITY has priority 0
			walkAttrs(m[12:], func(typ uint16, data []byte) {
				if typ == unix.FRA_PRIORITY && len(data) >= 4 {
					prio = binary.NativeEndian.Uint32(data)
				}
			})
			out[i][prio]++
		}
	}
	return out, nil
}
