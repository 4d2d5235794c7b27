package wgconn

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// mmsgReader reads batches of datagrams with recvmmsg(2) without
// allocating: x/net's ReadBatch allocates a *net.UDPAddr per datagram,
// which under a flood of small datagrams (e.g. spoofed IKE_SA_INIT) is
// most of the garbage the process makes and so what grows its heap. The
// headers, source address buffers and the addresses handed out in
// Message.Addr belong to the reader and are reused by the next call.
//
// A reader serves one receiving goroutine.
type mmsgReader struct {
	rc    syscall.RawConn
	hs    []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	addrs []net.UDPAddr
	ips   [][16]byte

	zoneIndex int
	zoneName  string

	// The call under way: recv is r.recvmmsg, made once (a closure
	// made per call would be garbage).
	recv  func(fd uintptr) bool
	cur   []mmsghdr
	flags int
	n     int
	errno syscall.Errno
}

type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func newBatchReader(conn *net.UDPConn, fallback batchReader) batchReader {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fallback
	}
	r := &mmsgReader{rc: rc}
	r.recv = r.recvmmsg
	return r
}

// recvmmsg is the RawConn.Read callback: it reports whether the read is
// done (anything but "would block").
func (r *mmsgReader) recvmmsg(fd uintptr) bool {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.cur[0])), uintptr(len(r.cur)), uintptr(r.flags), 0, 0)
	r.n, r.errno = int(n), e
	return e != unix.EAGAIN && e != unix.EWOULDBLOCK
}

// ReadBatch reads up to len(ms) datagrams into ms, each into its one
// buffer, and sets their N, NN, Flags and Addr (valid until the next call).
func (r *mmsgReader) ReadBatch(ms []ipv6.Message, flags int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	if len(ms) > len(r.hs) {
		r.hs = make([]mmsghdr, len(ms))
		r.iovs = make([]unix.Iovec, len(ms))
		r.names = make([]unix.RawSockaddrInet6, len(ms))
		r.addrs = make([]net.UDPAddr, len(ms))
		r.ips = make([][16]byte, len(ms))
	}
	hs := r.hs[:len(ms)]
	for i := range ms {
		b := ms[i].Buffers[0]
		r.iovs[i] = unix.Iovec{}
		if len(b) > 0 {
			r.iovs[i].Base = &b[0]
			r.iovs[i].SetLen(len(b))
		}
		h := &hs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&r.names[i])), Namelen: unix.SizeofSockaddrInet6, Iov: &r.iovs[i]}
		h.SetIovlen(1)
		if oob := ms[i].OOB; len(oob) > 0 {
			h.Control = &oob[0]
			h.SetControllen(len(oob))
		}
		hs[i].len = 0
	}
	r.cur, r.flags = hs, flags
	err := r.rc.Read(r.recv)
	n, errno := r.n, r.errno
	r.cur = nil
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, &net.OpError{Op: "recvmmsg", Err: errno}
	}
	for i := 0; i < n; i++ {
		m := &ms[i]
		m.N, m.NN, m.Flags = int(hs[i].len), int(hs[i].hdr.Controllen), int(hs[i].hdr.Flags)
		m.Addr = r.addr(i)
	}
	return n, nil
}

// addr returns datagram i's source as the reader's reused *net.UDPAddr
// (nil if the kernel gave none).
func (r *mmsgReader) addr(i int) net.Addr {
	a, ip := &r.addrs[i], r.ips[i][:]
	switch sa := &r.names[i]; sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		a.IP, a.Port, a.Zone = append(ip[:0], s4.Addr[:]...), port(&s4.Port), ""
	case unix.AF_INET6:
		a.IP, a.Port, a.Zone = append(ip[:0], sa.Addr[:]...), port(&sa.Port), ""
		if sa.Scope_id != 0 {
			a.Zone = r.zone(int(sa.Scope_id))
		}
	default:
		return nil
	}
	return a
}

// port reads a port in network byte order.
func port(p *uint16) int {
	b := (*[2]byte)(unsafe.Pointer(p))
	return int(b[0])<<8 | int(b[1])
}

// zone names interface index (link-local sources only), remembering the
// last one.
func (r *mmsgReader) zone(index int) string {
	if index != r.zoneIndex {
		r.zoneIndex, r.zoneName = index, ""
		if ifi, err := net.InterfaceByIndex(index); err == nil {
			r.zoneName = ifi.Name
		}
	}
	return r.zoneName
}
