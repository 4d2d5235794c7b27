package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame is one captured link-layer frame.
type Frame []byte

// ReadPcap splits a classic pcap file into its frames. It accepts both byte
// orders and microsecond or nanosecond timestamps, and returns the link type.
func ReadPcap(b []byte) (linkType uint32, frames []Frame, err error) {
	if len(b) < 24 {
		return 0, nil, errors.New("pcap: short file header")
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return 0, nil, fmt.Errorf("pcap: bad magic %x", b[:4])
	}
	linkType = bo.Uint32(b[20:])
	for off := 24; off < len(b); {
		if len(b)-off < 16 {
			return linkType, frames, errors.New("pcap: short record header")
		}
		n := int(bo.Uint32(b[off+8:]))
		off += 16
		if n > len(b)-off {
			return linkType, frames, errors.New("pcap: short record")
		}
		frames = append(frames, Frame(b[off:off+n]))
		off += n
	}
	return linkType, frames, nil
}

// IPPayload returns the IP packet inside an Ethernet frame (link type 1),
// or nil for anything else (ARP, …).
func (f Frame) IPPayload() []byte {
	if len(f) < 14 {
		return nil
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800, 0x86dd:
		return f[14:]
	}
	return nil
}
