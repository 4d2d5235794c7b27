package tunnel

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
	conn "github.com/oevpn/oevpn/internal/wgconn"
)

// writeDevice writes one packet to the device (the clear forwarder's
// answers); it is not on the fast path.
func (e *Engine) writeDevice(pkt []byte) {
	buf := make([]byte, writeOffset+len(pkt))
	copy(buf[writeOffset:], pkt)
	e.devMu.RLock()
	defer e.devMu.RUnlock()
	if e.closed() {
		return
	}
	if _, err := e.dev.Write([][]byte{buf}, writeOffset); err != nil {
		e.log.Debug("writing a forwarded packet to the device failed", "err", err)
	}
}

// coalescesInPlace reports whether dev's Write merges the segments of a
// TCP stream into the buffer of the first one (Linux TUN GRO): that buffer
// then needs room for the whole super-packet, or every write carries only
// what fits in one receive buffer. The netstack device copies instead.
func coalescesInPlace(dev tun.Device) bool {
	_, copies := dev.(*netstackDevice)
	return !copies && dev.BatchSize() > 1
}

// receiveBuffers returns the routine's packet buffers of size octets and
// their views behind the ESP headroom.
func receiveBuffers(batch, size int) (bufs, pkts [][]byte) {
	bufs = newBuffers(batch, size, groSlots)
	pkts = make([][]byte, batch)
	for i := range pkts {
		pkts[i] = bufs[i][esp.Headroom:]
	}
	return bufs, pkts
}

// inPacket is an ESP packet of the batch being received: checked by its
// pair's inbound SA, then decrypted, then accepted in order.
type inPacket struct {
	pair *SAPair
	in   esp.Inbound
	i    int // index in the batch
	err  error
}

func (e *Engine) routineInbound(recv conn.ReceiveFunc, bind conn.Bind, natt bool) {
	batch := bind.BatchSize()
	bufs, pkts := receiveBuffers(batch, maxDatagram)
	// A routine that carries ESP to a device that coalesces in place
	// (UDP datagrams, below) grows its buffers to a super-packet each
	// after its first ESP batch: an idle one, or one that carries only
	// IKE, stays small.
	grow := natt && batch > 1 && coalescesInPlace(e.dev)
	// TCP segments are coalesced here, without a copy, where the device
	// takes super-packets (see coalescer); the device coalesces the rest.
	var co *coalescer
	if natt && batch > 1 {
		if w := newGatherWriter(e.dev); w != nil {
			co = newCoalescer(batch, w)
		}
	}
	sizes := make([]int, batch)
	eps := make([]conn.Endpoint, batch)
	write := make([][]byte, 0, batch)
	rx := 0 // packets of the batch for the device
	pending := make([]inPacket, batch)
	helpers := 0
	if natt {
		helpers = cryptHelpers() // ESP comes here only
	}
	crypt := newCryptWorkers(helpers, &e.stats.helped, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			pending[j].err = pending[j].in.Decrypt()
		}
	})
	defer crypt.stop()
	for {
		crypt.waiting()
		n, err := recv(pkts, sizes, eps)
		crypt.batch()
		if err != nil {
			if e.closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Debug("receive failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now().UnixNano()
		m, costly := 0, 0
		for i := 0; i < n; i++ {
			d := pkts[i][:sizes[i]]
			if !natt {
				e.deliverIKE(d, eps[i], false)
				continue
			}
			switch classify(d) {
			case esp.KindIKE:
				e.deliverIKE(d[esp.NonESPMarkerLen:], eps[i], true)
				continue
			case kindProbe:
				e.deliverProbe(d, eps[i])
				continue
			case esp.KindKeepalive:
				e.stats.keepalives.Add(1)
				continue
			case esp.KindESP:
			default:
				e.stats.malformed.Add(1)
				continue
			}
			spi := esp.Header(d).SPI()
			pair, ok := e.spis.Lookup(spi)
			if !ok || pair == nil {
				e.stats.unknownSPI.Add(1)
				if !ok {
					e.control().UnknownSPI(spi, addrPortOf(eps[i])) // the peer may have restarted us: it rate-limits
				}
				continue
			}
			if pair.barred.Load() {
				e.stats.nullDrops.Add(1)
				continue
			}
			if addrPortOf(eps[i]).Addr().Unmap().Is4() != pair.peer4 {
				// An SA is checked and accepted by the routine of its
				// peer's address family only: it owns the replay window.
				e.stats.unknownSPI.Add(1)
				continue
			}
			ip := &pending[m]
			if err := pair.In.Check(&ip.in, bufs[i], esp.Headroom, sizes[i]); err != nil {
				e.stats.decryptErrors.Add(1)
				continue
			}
			ip.pair, ip.i = pair, i
			if !pair.In.Transform().Wide() {
				costly++
			}
			m++
		}
		crypt.run(m, costly)
		// A run of packets of one flow on one pair is checked against
		// the selectors once per batch.
		var last *SAPair
		var lastFlow ipview.Flow
		var lastPorts bool
		for j := range pending[:m] {
			ip := &pending[j]
			pair := ip.pair
			if ip.err != nil {
				e.stats.decryptErrors.Add(1)
				continue
			}
			// In the order received: the window takes each number once.
			inner, nh, err := ip.in.Accept()
			if err != nil {
				e.stats.decryptErrors.Add(1)
				continue
			}
			if pair.heard.Load() != now {
				pair.heard.Store(now) // once per batch and pair
			}
			p, err := ipview.Parse(inner)
			if err != nil || (nh == ipview.ProtoIPv4) != (ipview.Version(inner) == 4) {
				e.stats.malformed.Add(1)
				continue
			}
			if pair != last || p.Flow != lastFlow || p.HasPorts != lastPorts {
				if !pair.Remote.MatchSrc(&p) || !pair.Local.MatchDst(&p) {
					e.stats.selectorDrops.Add(1)
					continue
				}
				last, lastFlow, lastPorts = pair, p.Flow, p.HasPorts
			}
			if !pair.ready.Load() {
				pair.ready.Store(true) // the peer uses it: so may we
			}
			if nt := e.nat.Load(); nt != nil {
				nt.natInbound(inner, &p)
			}
			rx++
			if co != nil && co.add(inner[:p.Len], &p) {
				continue
			}
			b := bufs[ip.i]
			start := cap(b) - cap(inner)
			write = append(write, b[start-writeOffset:start+p.Len])
		}
		if rx > 0 {
			if len(write) > 0 {
				if _, err := e.dev.Write(write, writeOffset); err != nil && !e.closed() {
					e.log.Debug("writing to the device failed", "err", err)
				}
				write = write[:0]
			}
			if co != nil {
				if err := co.flush(); err != nil && !e.closed() {
					e.log.Debug("writing to the device failed", "err", err)
				}
			}
			e.stats.rxPackets.Add(uint64(rx))
			rx = 0
			if grow {
				grow = false
				bufs, pkts = receiveBuffers(batch, maxPacket)
			}
		}
	}
}

func addrPortOf(ep conn.Endpoint) netip.AddrPort {
	if se, ok := ep.(*conn.StdNetEndpoint); ok {
		return se.AddrPort
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return ap
}

func (e *Engine) deliverIKE(msg []byte, ep conn.Endpoint, natt bool) {
	if !e.control().IKE(msg, addrPortOf(ep), ep.SrcIP().Unmap(), natt) {
		e.stats.controlDropped.Add(1)
	}
}

func (e *Engine) deliverProbe(msg []byte, ep conn.Endpoint) {
	if !e.control().Probe(msg, addrPortOf(ep), ep.SrcIP()) {
		e.stats.controlDropped.Add(1)
	}
}
