package tunnel

import (
	"encoding/binary"
	"net/netip"

	"github.com/oevpn/oevpn/internal/ipview"
)

// The AutoVPN answer to draft-sheffer-autovpn §7 (a NAT between the
// gateways): G2 knows our host only by the address and port the NAT gave
// its connection, which NAT-Detect reports, and the SA is made for that
// public address. G1 then performs that translation itself for the
// traffic it carries in the SA: packets from the host to the peer get the
// public address (and, for the probed connection, the public port) before
// they are encrypted; decrypted packets get the host's address and port
// back. The peer host sees the same addresses before and after the switch,
// so the connection survives it. IPv4 only, as NAT-Detect is.

// natKey is a mapping's (inside or outside address, remote host).
type natKey struct{ local, remote netip.Addr }

// natPort is a transport protocol and port.
type natPort struct {
	proto uint8
	port  uint16
}

// natMap translates one host's traffic with one peer host.
type natMap struct {
	inside, outside, remote netip.Addr
	out, in                 map[natPort]uint16 // inside port → outside port, and back
}

// natTable is immutable once published; the control plane replaces it.
type natTable struct {
	byInside, byOutside map[natKey]*natMap
}

// AddNAT makes the engine translate inside ↔ outside for traffic with
// remote, and, for one flow, the inside port ↔ the outside port.
func (e *Engine) AddNAT(inside, outside, remote netip.Addr, proto uint8, insidePort, outsidePort uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.nat.Load()
	t := &natTable{byInside: map[natKey]*natMap{}, byOutside: map[natKey]*natMap{}}
	if old != nil {
		for k, v := range old.byInside {
			t.byInside[k] = v
		}
		for k, v := range old.byOutside {
			t.byOutside[k] = v
		}
	}
	m := &natMap{inside: inside, outside: outside, remote: remote, out: map[natPort]uint16{}, in: map[natPort]uint16{}}
	if prev := t.byInside[natKey{inside, remote}]; prev != nil {
		for k, v := range prev.out {
			m.out[k] = v
		}
		for k, v := range prev.in {
			m.in[k] = v
		}
	}
	if insidePort != 0 {
		m.out[natPort{proto, insidePort}] = outsidePort
		m.in[natPort{proto, outsidePort}] = insidePort
	}
	t.byInside[natKey{inside, remote}] = m
	t.byOutside[natKey{outside, remote}] = m
	e.nat.Store(t)
}

// RemoveNAT drops the translation of inside's traffic with remote.
func (e *Engine) RemoveNAT(inside, remote netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.nat.Load()
	if old == nil || old.byInside[natKey{inside, remote}] == nil {
		return
	}
	t := &natTable{byInside: map[natKey]*natMap{}, byOutside: map[natKey]*natMap{}}
	for k, v := range old.byInside {
		if k != (natKey{inside, remote}) {
			t.byInside[k] = v
			t.byOutside[natKey{v.outside, v.remote}] = v
		}
	}
	e.nat.Store(t)
}

// outboundView returns the packet's header as translation would make it.
func (t *natTable) outboundView(p *ipview.Packet) (ipview.Packet, bool) {
	m := t.byInside[natKey{p.Src, p.Dst}]
	if m == nil {
		return ipview.Packet{}, false
	}
	q := *p
	q.Src = m.outside
	if np, ok := m.out[natPort{p.Proto, p.SrcPort}]; ok {
		q.SrcPort = np
	}
	return q, true
}

// RemoveNATFor drops every translation with remote.
func (e *Engine) RemoveNATFor(remote netip.Addr) {
	if t := e.nat.Load(); t != nil {
		for k := range t.byInside {
			if k.remote == remote {
				e.RemoveNAT(k.local, remote)
			}
		}
	}
}

// natOutbound translates a packet from an inside host, in place, and
// updates p. It reports whether it did.
func (t *natTable) natOutbound(pkt []byte, p *ipview.Packet) bool {
	m := t.byInside[natKey{p.Src, p.Dst}]
	if m == nil || ipview.Version(pkt) != 4 {
		return false
	}
	port := p.SrcPort
	if np, ok := m.out[natPort{p.Proto, p.SrcPort}]; ok {
		port = np
	}
	rewrite(pkt, p, true, m.outside, port)
	p.Src, p.SrcPort = m.outside, port
	return true
}

// natInbound translates a decrypted packet for an inside host, in place.
func (t *natTable) natInbound(pkt []byte, p *ipview.Packet) {
	m := t.byOutside[natKey{p.Dst, p.Src}]
	if m == nil || ipview.Version(pkt) != 4 {
		return
	}
	port := p.DstPort
	if np, ok := m.in[natPort{p.Proto, p.DstPort}]; ok {
		port = np
	}
	rewrite(pkt, p, false, m.inside, port)
	p.Dst, p.DstPort = m.inside, port
}

// rewrite replaces an IPv4 packet's source (or destination) address and,
// for TCP and UDP, port, and fixes the checksums incrementally (RFC 1624).
func rewrite(pkt []byte, p *ipview.Packet, src bool, addr netip.Addr, port uint16) {
	h := ipview.IPv4(pkt[:p.Len])
	a4, oldAddr, pOff := addr.As4(), h.Dst().As4(), 2
	if src {
		oldAddr, pOff = h.Src().As4(), 0
		h.SetSrc(a4)
	} else {
		h.SetDst(a4)
	}
	h.UpdateChecksum(oldAddr[:], a4[:])
	l4 := h.Payload()
	var csOff int
	switch p.Proto {
	case ipview.ProtoTCP:
		csOff = 16
	case ipview.ProtoUDP:
		csOff = 6
	default:
		return
	}
	if len(l4) < csOff+2 || !p.HasPorts {
		return
	}
	var oldPort [2]byte
	copy(oldPort[:], l4[pOff:pOff+2])
	binary.BigEndian.PutUint16(l4[pOff:], port)
	cs := binary.BigEndian.Uint16(l4[csOff:])
	if p.Proto == ipview.ProtoUDP && cs == 0 {
		return // no UDP checksum
	}
	cs = ipview.ChecksumUpdate(cs, oldAddr[:], a4[:]) // the pseudo-header
	cs = ipview.ChecksumUpdate(cs, oldPort[:], l4[pOff:pOff+2])
	if p.Proto == ipview.ProtoUDP && cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csOff:], cs)
}
