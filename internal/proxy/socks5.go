package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// SOCKS5 wire constants, RFC 1928 and RFC 1929.
const (
	socksVersion    = 0x05
	userPassVersion = 0x01 // RFC 1929 section 2

	methodNoAuth       = 0x00
	methodUserPass     = 0x02
	methodNoAcceptable = 0xff

	cmdConnect      = 0x01
	cmdBind         = 0x02
	cmdUDPAssociate = 0x03

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// handshakeBufSize holds the largest handshake message: an RFC 1929
// request, 1+1+255+1+255 bytes.
const handshakeBufSize = 513

// Parse errors. Each names what was wrong; errAddrType gets reply 0x08.
var (
	errVersion  = errors.New("socks5: bad version")
	errNoMethod = errors.New("socks5: no methods offered")
	errAddrType = errors.New("socks5: unknown address type")
	errEmptyStr = errors.New("socks5: empty name")
	errFragment = errors.New("socks5: fragmented UDP datagram")
	errShort    = errors.New("socks5: short UDP header")
	errRSV      = errors.New("socks5: reserved field not zero")
)

// socksAddr is a SOCKS5 address: an IP, or a domain name to resolve.
type socksAddr struct {
	ip   netip.Addr
	name string
	port uint16
}

func (a socksAddr) host() string {
	if a.name != "" {
		return a.name
	}
	return a.ip.String()
}

func (a socksAddr) String() string {
	if a.name != "" {
		return fmt.Sprintf("%s:%d", a.name, a.port)
	}
	return netip.AddrPortFrom(a.ip, a.port).String()
}

// readGreeting reads the version identifier/method selection message
// (RFC 1928 section 3) and returns the methods, a slice of b.
func readGreeting(r io.Reader, b *[handshakeBufSize]byte) ([]byte, error) {
	if _, err := io.ReadFull(r, b[:2]); err != nil {
		return nil, err
	}
	if b[0] != socksVersion {
		return nil, fmt.Errorf("%w %d in greeting", errVersion, b[0])
	}
	n := int(b[1])
	if n == 0 {
		return nil, errNoMethod
	}
	if _, err := io.ReadFull(r, b[:n]); err != nil {
		return nil, err
	}
	return b[:n], nil
}

// readUserPass reads an RFC 1929 username/password request; user and pass
// are slices of b.
func readUserPass(r io.Reader, b *[handshakeBufSize]byte) (user, pass []byte, err error) {
	if _, err := io.ReadFull(r, b[:2]); err != nil {
		return nil, nil, err
	}
	if b[0] != userPassVersion {
		return nil, nil, fmt.Errorf("%w %d in username/password request", errVersion, b[0])
	}
	ulen := int(b[1])
	if ulen == 0 {
		return nil, nil, errEmptyStr
	}
	// Read the username and the password's length byte.
	if _, err := io.ReadFull(r, b[2:2+ulen+1]); err != nil {
		return nil, nil, err
	}
	plen := int(b[2+ulen])
	if plen == 0 {
		return nil, nil, errEmptyStr
	}
	p := 2 + ulen + 1
	if _, err := io.ReadFull(r, b[p:p+plen]); err != nil {
		return nil, nil, err
	}
	return b[2 : 2+ulen], b[p : p+plen], nil
}

// readRequest reads a request (RFC 1928 section 4) and returns its command
// and destination. An unknown command is returned for the caller to refuse.
func readRequest(r io.Reader, b *[handshakeBufSize]byte) (cmd byte, dst socksAddr, err error) {
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return 0, dst, err
	}
	if b[0] != socksVersion {
		return 0, dst, fmt.Errorf("%w %d in request", errVersion, b[0])
	}
	cmd = b[1]
	dst, err = readAddr(r, b[3], b)
	return cmd, dst, err
}

// readAddr reads DST.ADDR and DST.PORT of type atyp.
func readAddr(r io.Reader, atyp byte, b *[handshakeBufSize]byte) (socksAddr, error) {
	var a socksAddr
	var n int
	switch atyp {
	case atypIPv4:
		n = 4
	case atypIPv6:
		n = 16
	case atypDomain:
		if _, err := io.ReadFull(r, b[:1]); err != nil {
			return a, err
		}
		n = int(b[0])
		if n == 0 {
			return a, errEmptyStr
		}
	default:
		return a, fmt.Errorf("%w %#x", errAddrType, atyp)
	}
	if _, err := io.ReadFull(r, b[:n+2]); err != nil {
		return a, err
	}
	a, _, err := decodeAddr(atyp, b[:n+2])
	return a, err
}

// decodeAddr decodes an address of type atyp from the start of p (for a
// domain, p starts after the length byte and is exactly name+port) and
// returns the rest.
func decodeAddr(atyp byte, p []byte) (socksAddr, []byte, error) {
	var a socksAddr
	switch atyp {
	case atypIPv4:
		if len(p) < 4+2 {
			return a, nil, errShort
		}
		a.ip = netip.AddrFrom4([4]byte(p[:4]))
		p = p[4:]
	case atypIPv6:
		if len(p) < 16+2 {
			return a, nil, errShort
		}
		a.ip = netip.AddrFrom16([16]byte(p[:16])).Unmap()
		p = p[16:]
	case atypDomain:
		n := len(p) - 2
		if n < 1 {
			return a, nil, errEmptyStr
		}
		name := string(p[:n])
		if ip, err := netip.ParseAddr(name); err == nil && ip.Zone() == "" {
			// Some clients send a literal address as a name.
			a.ip = ip.Unmap()
		} else if !validName(name) {
			return a, nil, &net.DNSError{Err: "invalid name", Name: fmt.Sprintf("%q", name), IsNotFound: true}
		} else {
			a.name = name
		}
		p = p[n:]
	default:
		return a, nil, fmt.Errorf("%w %#x", errAddrType, atyp)
	}
	a.port = binary.BigEndian.Uint16(p)
	return a, p[2:], nil
}

// validName accepts the characters of host names (letters, digits, '-',
// '_' and '.'), so that nothing else reaches the resolver or the logs.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != "" && s != "." && s != ".."
}

// appendAddr appends ATYP, ADDR and PORT for ap.
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		a := ip.As4()
		b = append(b, atypIPv4)
		b = append(b, a[:]...)
	} else if ip.Is6() {
		a := ip.As16()
		b = append(b, atypIPv6)
		b = append(b, a[:]...)
	} else {
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// appendReply appends a reply (RFC 1928 section 6).
func appendReply(b []byte, rep Reply, bnd netip.AddrPort) []byte {
	return appendAddr(append(b, socksVersion, byte(rep), 0), bnd)
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// SOCKS5Server is a SOCKS5 server (RFC 1928) with CONNECT and UDP
// ASSOCIATE; BIND is refused with reply 0x07. With Username set, clients
// must authenticate with RFC 1929 username/password; otherwise only "no
// authentication" is offered.
type SOCKS5Server struct {
	// Dialer carries CONNECT, and UDP ASSOCIATE if it is also a
	// PacketListener.
	Dialer Dialer
	// Resolver resolves domain-name destinations (ATYP 0x03). Nil: names
	// get reply 0x04.
	Resolver Resolver
	// Username and Password, when Username is not empty, are required of
	// every client (RFC 1929). They are compared in constant time and never
	// logged.
	Username, Password string
	// Limits bound clients.
	Limits
	// Logger receives connection events at Debug level; nil discards.
	Logger *slog.Logger

	t      tracker
	assocs atomic.Int32
}

// Serve accepts SOCKS5 clients on ln until Close, and returns
// ErrServerClosed then. It may be called on several listeners. UDP
// ASSOCIATE binds its client-side UDP socket on the host, on the address
// the client's TCP connection reached.
func (s *SOCKS5Server) Serve(ln net.Listener) error {
	log := logger(s.Logger)
	return s.t.serve(ln, s.Limits, log, func(c net.Conn) { s.handle(c, log) })
}

// Close closes the listeners and every connection and association.
func (s *SOCKS5Server) Close() error { return s.t.close() }

func (s *SOCKS5Server) handle(c net.Conn, log *slog.Logger) {
	b := new([handshakeBufSize]byte)
	c.SetDeadline(time.Now().Add(s.handshakeTimeout()))
	cmd, dst, err := s.handshake(c, b)
	if err != nil {
		rep := ReplyGeneralFailure
		switch {
		case errors.Is(err, errAddrType):
			rep = ReplyAddressTypeNotSupported
		case errors.Is(err, errAuth), errors.Is(err, errVersion), errors.Is(err, errNoMethod),
			errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), isTimeout(err):
			// Nothing to answer, or answered already.
			log.Debug("socks5: handshake failed", "client", c.RemoteAddr(), "err", err)
			return
		default:
			var dnsErr *net.DNSError
			if errors.As(err, &dnsErr) {
				rep = ReplyHostUnreachable
			}
		}
		c.Write(appendReply(b[:0], rep, netip.AddrPort{}))
		log.Debug("socks5: bad request", "client", c.RemoteAddr(), "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	switch cmd {
	case cmdConnect:
		s.connect(c, dst, b, log)
	case cmdUDPAssociate:
		s.associate(c, dst, b, log)
	default: // BIND, and commands RFC 1928 does not define
		c.SetWriteDeadline(time.Now().Add(s.handshakeTimeout()))
		c.Write(appendReply(b[:0], ReplyCommandNotSupported, netip.AddrPort{}))
		log.Debug("socks5: command not supported", "client", c.RemoteAddr(), "cmd", cmd)
	}
}

var errAuth = errors.New("socks5: authentication failed")

// handshake negotiates the method, authenticates and reads the request.
func (s *SOCKS5Server) handshake(c net.Conn, b *[handshakeBufSize]byte) (byte, socksAddr, error) {
	methods, err := readGreeting(c, b)
	if errors.Is(err, errNoMethod) {
		c.Write([]byte{socksVersion, methodNoAcceptable})
	}
	if err != nil {
		return 0, socksAddr{}, err
	}
	want := byte(methodNoAuth)
	if s.Username != "" {
		want = methodUserPass
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		c.Write([]byte{socksVersion, methodNoAcceptable})
		return 0, socksAddr{}, fmt.Errorf("%w: method %#x not offered", errAuth, want)
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return 0, socksAddr{}, err
	}
	if want == methodUserPass {
		user, pass, err := readUserPass(c, b)
		if err != nil {
			return 0, socksAddr{}, err
		}
		if !credentialsMatch(user, pass, s.Username, s.Password) {
			c.Write([]byte{userPassVersion, 0x01})
			return 0, socksAddr{}, errAuth
		}
		if _, err := c.Write([]byte{userPassVersion, 0x00}); err != nil {
			return 0, socksAddr{}, err
		}
	}
	return readRequest(c, b)
}

// credentialsMatch compares in constant time, hashing first so that
// neither length leaks, and always checks both.
func credentialsMatch(user, pass []byte, wantUser, wantPass string) bool {
	hu, hp := sha256.Sum256(user), sha256.Sum256(pass)
	wu, wp := sha256.Sum256([]byte(wantUser)), sha256.Sum256([]byte(wantPass))
	return subtle.ConstantTimeCompare(hu[:], wu[:])&subtle.ConstantTimeCompare(hp[:], wp[:]) == 1
}

func (s *SOCKS5Server) connect(c net.Conn, dst socksAddr, b *[handshakeBufSize]byte, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(s.t.ctx, s.dialTimeout())
	up, err := dial(ctx, s.Dialer, s.Resolver, "tcp", dst.host(), dst.port)
	cancel()
	c.SetWriteDeadline(time.Now().Add(s.handshakeTimeout()))
	if err != nil {
		rep := ReplyFor(err)
		log.Debug("socks5: connect failed", "client", c.RemoteAddr(), "dst", dst, "reply", rep, "err", err)
		c.Write(appendReply(b[:0], rep, netip.AddrPort{}))
		return
	}
	defer up.Close()
	if _, err := c.Write(appendReply(b[:0], ReplySucceeded, addrPort(up.LocalAddr()))); err != nil {
		return
	}
	c.SetWriteDeadline(time.Time{})
	log.Debug("socks5: connect", "client", c.RemoteAddr(), "dst", dst)
	relay(c, up)
}
