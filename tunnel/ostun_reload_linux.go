package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// AddRoutes routes more prefixes into the device, as configure did at
// start (with their prohibit routes behind, with a mark), for a reload
// that adds peers or policy prefixes. A prefix routed already is left as
// it is. It returns the routes it added; on error it removes them again
// and adds nothing. A first route of a family that had none at start is
// refused with a mark: its policy-routing rule is set up only at start.
func (d *OSDevice) AddRoutes(rs []Route) ([]Route, error) {
	have := map[netip.Prefix]bool{}
	fams := map[bool]bool{}
	for _, r := range d.cfg.Routes {
		have[r.Prefix.Masked()] = true
		fams[r.Prefix.Addr().Is6()] = true
	}
	var add []Route
	for _, r := range rs {
		p := r.Prefix.Masked()
		if have[p] {
			continue
		}
		if d.cfg.Mark != 0 && !fams[p.Addr().Is6()] {
			return nil, fmt.Errorf("%w: %v is the first route of its address family, whose routing rule is made at start", ErrRoutesNotLive, p)
		}
		have[p] = true
		add = append(add, Route{Prefix: p, Src: r.Src})
	}
	if len(add) == 0 {
		return nil, nil
	}
	ifc, err := net.InterfaceByName(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	table := uint32(unix.RT_TABLE_MAIN)
	if d.cfg.Mark != 0 {
		table = uint32(d.cfg.Table)
	}
	var done []Route
	undo := func() {
		for _, r := range done {
			delDevRoute(ifc.Index, table, r.Prefix)
			if d.cfg.Mark != 0 {
				delBlock(table, r.Prefix)
				delete(d.blocks, blockKey{table, r.Prefix})
			}
		}
	}
	for _, r := range add {
		if err := d.addBlock(table, r.Prefix); err != nil {
			undo()
			return nil, err
		}
		done = append(done, r)
		if err := replaceDevRoute(ifc.Index, table, r.Prefix, r.Src); err != nil {
			undo()
			return nil, err
		}
		d.log.Info("added route", "device", d.cfg.Name, "prefix", r.Prefix, "table", table)
	}
	d.cfg.Routes = append(d.cfg.Routes, add...)
	return add, nil
}

// delDevRoute removes what replaceDevRoute made; one that is not there is
// not an error.
func delDevRoute(ifindex int, table uint32, p netip.Prefix) error {
	r := route{hdr: []byte{famOf(p.Addr().Is6()), uint8(p.Bits()), 0, 0, unix.RT_TABLE_UNSPEC, unix.RTPROT_BOOT, unix.RT_SCOPE_LINK, unix.RTN_UNICAST, 0, 0, 0, 0},
		prefix: p.Masked()}
	r.oif = binary.NativeEndian.AppendUint32(nil, uint32(ifindex))
	if err := delRoute(table, r); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
