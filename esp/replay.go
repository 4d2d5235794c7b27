package esp

import "errors"

// The anti-replay window of RFC 4303 §3.4.3, kept as the bitmap of RFC 6479:
// a ring of 64-bit blocks. The window covers size sequence numbers below the
// highest one received; a packet ahead of the window advances it, clearing
// the blocks it skips in one step each.

const (
	blockBits = 64

	// DefaultReplayWindow is the anti-replay window, in packets, that an
	// inbound SA gets unless its Config says otherwise.
	DefaultReplayWindow = 1024
	// MaxReplayWindow bounds the configurable window.
	MaxReplayWindow = 1 << 16
)

// Errors of the replay check.
var (
	ErrReplay = errors.New("esp: replayed or too old sequence number")
)

// replayWindow belongs to the goroutine that opens an SA's packets (one at a
// time, see SA): its fields are plain, so the per-packet path has no locked
// instructions.
type replayWindow struct {
	last   uint64   // highest sequence number accepted
	size   uint64   // window size in packets
	mask   uint64   // len(blocks)-1
	blocks []uint64 // ring; len is a power of two
	off    bool     // no replay protection: only last is kept (for ESN)
}

// init sizes the window to hold at least size packets; size < 0 turns the
// check off but keeps tracking the highest number for ESN inference.
func (w *replayWindow) init(size int) {
	w.off = size < 0
	if size <= 0 {
		size = DefaultReplayWindow
	}
	n := 1
	for (n-1)*blockBits < size {
		n <<= 1
	}
	w.blocks = make([]uint64, n)
	w.mask = uint64(n - 1)
	w.size = uint64(size)
	w.last = 0
}

// check reports whether seq may be accepted: not zero, not older than the
// window, not already seen. It changes nothing.
func (w *replayWindow) check(seq uint64) bool {
	switch {
	case seq == 0:
		return false
	case w.off || seq > w.last:
		return true
	case w.last-seq >= w.size:
		return false
	}
	return w.blocks[(seq/blockBits)&w.mask]&(1<<(seq%blockBits)) == 0
}

// update records seq, which check accepted (the window has not changed
// since: it has one writer).
func (w *replayWindow) update(seq uint64) {
	if w.off {
		w.last = max(w.last, seq)
		return
	}
	idx := seq / blockBits
	if seq > w.last {
		cur := w.last / blockBits
		diff := min(idx-cur, uint64(len(w.blocks)))
		for i := uint64(1); i <= diff; i++ {
			w.blocks[(cur+i)&w.mask] = 0
		}
		w.last = seq
	}
	w.blocks[idx&w.mask] |= 1 << (seq % blockBits)
}

// inferESN reconstructs the full 64-bit sequence number from its transmitted
// low 32 bits, the highest number received so far and the window size
// (RFC 4303 Appendix A2.2). ok is false for a number that would lie before
// the first sequence number.
func inferESN(last uint64, size uint64, low uint32) (seq uint64, ok bool) {
	th, tl := uint32(last>>32), uint32(last)
	w := uint32(size)
	if size > 1<<31 {
		w = 1 << 31
	}
	var sh uint32
	if tl >= w-1 {
		// The window lies within one subspace.
		if low >= tl-w+1 {
			sh = th
		} else {
			sh = th + 1
			if sh == 0 {
				return 0, false
			}
		}
	} else {
		// The window spans two subspaces.
		if low >= tl-w+1 {
			if th == 0 {
				return 0, false
			}
			sh = th - 1
		} else {
			sh = th
		}
	}
	return uint64(sh)<<32 | uint64(low), true
}
