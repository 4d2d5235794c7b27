package tunnel

import (
	"errors"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/ipview"
)

// newBuffers returns n packet buffers with ESP head- and tailroom around
// size octets of packet; the last big ones have room for maxPacket.
func newBuffers(n, size, big int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		if i >= n-big {
			size = maxPacket
		}
		bufs[i] = make([]byte, esp.Headroom+size+esp.Tailroom)
	}
	return bufs
}

// outboundSize returns the largest packet a device read brings: one of at
// most the MTU. A device with offloads (a batch size above 1) splits
// super-packets into segments itself.
func (e *Engine) outboundSize() int {
	mtu, err := e.dev.MTU()
	if err != nil || mtu <= 0 || mtu > maxPacket {
		return maxPacket
	}
	return max(mtu, 1500)
}

// outPacket is a packet of the batch being sent: framed by its pair's
// outbound SA, then sealed.
type outPacket struct {
	pair *SAPair
	o    esp.Outbound
	out  []byte
	err  error
}

func (e *Engine) routineOutbound() {
	batch := e.dev.BatchSize()
	size := e.outboundSize()
	bufs := newBuffers(batch, size, 0)
	sizes := make([]int, batch)
	send := make([][]byte, 0, batch)
	pending := make([]outPacket, batch)
	read := newDeviceReader(e.dev)
	crypt := newCryptWorkers(cryptHelpers(), &e.stats.helped, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			pending[j].out, pending[j].err = pending[j].o.Seal()
		}
	})
	defer crypt.stop()
	for {
		crypt.waiting()
		n, err := read(bufs, sizes, esp.Headroom)
		crypt.batch()
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			if e.closed() {
				return
			}
			if s := e.outboundSize(); s > size {
				// The MTU grew: the packet did not fit.
				e.log.Info("device MTU grew: larger buffers", "mtu", s, "err", err)
				size, bufs = s, newBuffers(batch, s, 0)
				continue
			}
			if errors.Is(err, errVnet) {
				// The device's packet cannot be segmented: dropped,
				// as the kernel drops a malformed GSO packet.
				e.stats.malformed.Add(1)
				continue
			}
			e.log.Error("reading from the device failed; outbound datapath stopped", "err", err)
			return
		}
		rt := e.routes.Load()
		m, costly := 0, 0
		// A run of packets of one flow (a TCP stream's segments) is
		// looked up once per batch.
		var last *SAPair
		var lastFlow ipview.Flow
		var lastPorts bool
		for i := 0; i < n; i++ {
			pkt := bufs[i][esp.Headroom : esp.Headroom+sizes[i]]
			p, err := ipview.Parse(pkt)
			if err != nil {
				e.stats.malformed.Add(1)
				continue
			}
			pair := last
			if pair == nil || p.Flow != lastFlow || p.HasPorts != lastPorts {
				pair = rt.lookup(&p)
				last, lastFlow, lastPorts = pair, p.Flow, p.HasPorts
			}
			if pair == nil {
				// AutoVPN behind a NAT: the SA is for the public address.
				if nt := e.nat.Load(); nt != nil {
					if q, ok := nt.outboundView(&p); ok {
						if pair = rt.lookup(&q); pair != nil {
							nt.natOutbound(pkt, &p)
						}
					}
				}
			}
			if pair == nil {
				e.unrouted(rt, &p, pkt[:p.Len])
				continue
			}
			nh := byte(ipview.ProtoIPv4)
			if ipview.Version(pkt) == 6 {
				nh = ipview.ProtoIPv6
			}
			// Numbered here, in the order of sending.
			op := &pending[m]
			if err := pair.Out.Frame(&op.o, bufs[i], esp.Headroom, p.Len, nh); err != nil {
				e.stats.sealErrors.Add(1)
				continue
			}
			op.pair = pair
			if !pair.Out.Transform().Wide() {
				costly++
			}
			m++
		}
		crypt.run(m, costly)
		var cur *SAPair
		for j := range pending[:m] {
			op := &pending[j]
			if op.err != nil {
				e.stats.sealErrors.Add(1)
				continue
			}
			if op.pair != cur && len(send) > 0 {
				e.send(cur, send)
				send = send[:0]
			}
			cur = op.pair
			send = append(send, op.out)
		}
		if len(send) > 0 {
			e.send(cur, send)
			send = send[:0]
		}
	}
}

// maxRedecide bounds how often one packet is decided again because the
// tables changed under it (each time, a pair was installed or a
// destination's verdict replaced in that instant).
const maxRedecide = 4

// unrouted handles a packet that route table rt gave no SA pair: a trap or
// an opportunistic destination holds it, or its class decides. A stage
// hands the packet back when the tables changed since rt was loaded (a
// pair installed and its flush done, a verdict replaced): it is then
// decided again on the newest table, so that nothing waits in a stage no
// flush will empty.
func (e *Engine) unrouted(rt *routeTable, p *ipview.Packet, pkt []byte) {
	for try := 0; try < maxRedecide; try++ {
		if try > 0 {
			rt = e.routes.Load()
			if pair := rt.lookup(p); pair != nil {
				if out := sealCopy(pair, pkt); out != nil {
					e.send(pair, [][]byte{out})
					return
				}
				break
			}
		}
		if t := rt.trapFor(p); t != nil {
			if e.hold(t, p, pkt) {
				return
			}
		} else if e.outboundNoSA(p, pkt) {
			return
		}
	}
	e.stats.noSA.Add(1)
}

func (e *Engine) send(p *SAPair, bufs [][]byte) {
	if err := e.natt.Send(bufs, p.ep); err != nil {
		e.stats.sendErrors.Add(1)
		if !e.closed() {
			e.log.Debug("send failed", "peer", p.Peer, "err", err)
		}
		return
	}
	e.stats.txPackets.Add(uint64(len(bufs)))
}
