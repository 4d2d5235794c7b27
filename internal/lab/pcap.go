package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Frame is one captured link-layer frame.
type Frame []byte

// Record is a captured frame with its capture time.
type Record struct {
	Time  time.Time
	Frame Frame
}

// ReadPcap splits a classic pcap file into its frames. It accepts both byte
// orders and microsecond or nanosecond timestamps, and returns the link type.
func ReadPcap(b []byte) (linkType uint32, frames []Frame, err error) {
	linkType, recs, err := ReadPcapRecords(b)
	for _, r := range recs {
		frames = append(frames, r.Frame)
	}
	return linkType, frames, err
}

// ReadPcapRecords is ReadPcap with each frame's capture time.
func ReadPcapRecords(b []byte) (linkType uint32, recs []Record, err error) {
	if len(b) < 24 {
		return 0, nil, errors.New("pcap: short file header")
	}
	var bo binary.ByteOrder
	nano := false
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return 0, nil, fmt.Errorf("pcap: bad magic %x", b[:4])
	}
	linkType = bo.Uint32(b[20:])
	for off := 24; off < len(b); {
		if len(b)-off < 16 {
			return linkType, recs, errors.New("pcap: short record header")
		}
		sec, frac := int64(bo.Uint32(b[off:])), int64(bo.Uint32(b[off+4:]))
		if !nano {
			frac *= 1000
		}
		n := int(bo.Uint32(b[off+8:]))
		off += 16
		if n > len(b)-off {
			return linkType, recs, errors.New("pcap: short record")
		}
		recs = append(recs, Record{Time: time.Unix(sec, frac), Frame: Frame(b[off : off+n])})
		off += n
	}
	return linkType, recs, nil
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
