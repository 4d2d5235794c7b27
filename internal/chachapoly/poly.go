package chachapoly

import (
	"encoding/binary"
	"math/bits"
)

// Poly1305 (RFC 8439 §2.5) with numbers in three limbs of 44, 44 and 42
// bits, the radix of AVX-512 IFMA's 52-bit multipliers: where the CPU has
// them, runs of 8 blocks are taken at once, one block per 64-bit lane
// (polyRun, in poly_amd64.s). Each lane keeps its own sum by Horner's
// rule in r^8 and is multiplied at the end by r^8 ... r^1 as its blocks'
// place requires; the lanes' sum is then the state after the run. The
// powers r^1 ... r^8 come from three lane-wise multiplications
// (polyMulLanes). Blocks outside such runs are multiplied here, in radix
// 2^64 (mul64).
//
// A limb value: x = x[0] + x[1]·2^44 + x[2]·2^88, not always below p =
// 2^130 − 5 nor with limbs within their widths; after each multiplication
// the limbs are below 2^44+2^15, 2^44+2^10 and 2^42, and with a block
// added below 2^46: every product's factors stay within the 52 bits IFMA
// reads (20·limb below 2^50), and a lane's three products below 2^96.

const (
	mask44 = 1<<44 - 1
	mask42 = 1<<42 - 1
)

type limbs [3]uint64

// polyPowers are the powers of r the lanes multiply by: r^8 during a run,
// and r^8 ... r^1 in the lanes' order at its end. Each power is its limbs
// and 20 times its upper two (2^132 ≡ 20 mod p), as polyRun reads them.
type polyPowers struct {
	r8   [5]uint64
	last [5][8]uint64
}

// laneBlock is the block of a run of 8 that each 64-bit lane holds, as
// polyRun loads them (unpacking the low and high words of two vectors
// of four blocks): lane i takes block laneBlock[i], whose sum is
// multiplied by r^(8−laneBlock[i]) at the end.
var laneBlock = [8]int{0, 4, 1, 5, 2, 6, 3, 7}

// poly is one Poly1305 computation, keyed with a one-time key. Blocks
// outside the vector runs are multiplied in radix 2^64 (h is three
// words, the last a few bits, r two), which takes fewer multiplications
// than limbs of 44 bits; a run converts h to limbs and back.
type poly struct {
	h  [3]uint64 // h[0] + h[1]·2^64 + h[2]·2^128, below 2^131
	r  [2]uint64 // the clamped r
	s  [2]uint64
	pw polyPowers
	// powers reports whether pw holds the powers of r.
	powers bool
}

// init keys p with a 32-octet one-time key (r, then s).
func (p *poly) init(key *[32]byte) {
	p.r = [2]uint64{binary.LittleEndian.Uint64(key[0:]) & 0x0ffffffc0fffffff, binary.LittleEndian.Uint64(key[8:]) & 0x0ffffffc0ffffffc}
	p.s = [2]uint64{binary.LittleEndian.Uint64(key[16:]), binary.LittleEndian.Uint64(key[24:])}
	p.h = [3]uint64{}
	p.powers = false
}

// blocks adds the 16-octet blocks of m (its length a multiple of 16),
// each with the 2^128 bit set.
func (p *poly) blocks(m []byte) {
	for ; len(m) >= 16; m = m[16:] {
		p.block(m)
	}
}

// minRun is the fewest blocks worth the vector code: it makes the powers
// of r first (7 multiplications).
const minRun = 16

// tail adds the last blocks of RFC 8439's message: the full blocks of ct,
// its last octets padded with zeros to a block, and the lengths block.
// With the vector code they go as one run of 8-block groups: k blocks of
// value zero (no 2^128 bit) in front make the count a multiple of 8, and
// h starts in the lane of the first real block, which is multiplied by
// the power of r that Horner's rule gives it; the first and the last
// group are put together in buffers, the ones between are read in
// place.
func (p *poly) tail(ct []byte, lengths *[16]byte) {
	f := len(ct) / 16
	t := 0
	if len(ct)%16 != 0 {
		t = 1
	}
	if r := f + t + 1; accelerated && r >= minRun {
		k := (8 - r%8) % 8
		nf, nl := 8-k, 7-t // ciphertext blocks in the first and the last group
		var front, last [8 * 16]byte
		var pad [8]uint64
		copy(front[16*k:], ct[:16*nf])
		for lane, blk := range laneBlock {
			if blk >= k {
				pad[lane] = 1 << 40
			}
		}
		copy(last[:], ct[16*(f-nl):])
		copy(last[7*16:], lengths[:])
		mid := ct[16*nf : 16*(f-nl)]
		midPtr := &front[0]
		if len(mid) > 0 {
			midPtr = &mid[0]
		}
		if !p.powers {
			p.makePowers()
		}
		var acc [3][8]uint64
		h := toLimbs(p.h)
		for lane, blk := range laneBlock {
			if blk == k {
				acc[0][lane], acc[1][lane], acc[2][lane] = h[0], h[1], h[2]
			}
		}
		polyRun(&acc, &front, &pad, midPtr, len(mid)/(8*16), &last, &p.pw)
		p.h = fromLimbs(carry(limbs{acc[0][0], acc[1][0], acc[2][0]}))
		return
	}
	p.blocks(ct[:16*f])
	p.padded(ct[16*f:])
	p.block(lengths[:])
}

// padded adds m, shorter than a block, padded with zeros to one.
func (p *poly) padded(m []byte) {
	if len(m) == 0 {
		return
	}
	var b [16]byte
	copy(b[:], m)
	p.block(b[:])
}

// block adds the 16-octet block at the start of b and multiplies by r.
func (p *poly) block(b []byte) {
	var c uint64
	p.h[0], c = bits.Add64(p.h[0], binary.LittleEndian.Uint64(b), 0)
	p.h[1], c = bits.Add64(p.h[1], binary.LittleEndian.Uint64(b[8:]), c)
	p.h[2] += c + 1
	p.h = mul64(&p.h, &p.r)
}

// mul64 returns h·r mod p, below 2^131, for h below 2^131 (h[2] < 8)
// and a clamped r (each word below 2^60, r[1] a multiple of 4).
func mul64(h *[3]uint64, r *[2]uint64) [3]uint64 {
	// The product in four words m0-m3; h[2]·r fits in 64 bits.
	t0h, m0 := bits.Mul64(h[0], r[0])
	t1ah, t1al := bits.Mul64(h[0], r[1])
	t1bh, t1bl := bits.Mul64(h[1], r[0])
	t2h, t2l := bits.Mul64(h[1], r[1])
	t2s, t3 := h[2]*r[0], h[2]*r[1]
	var c, c2 uint64
	m1, c := bits.Add64(t0h, t1al, 0)
	m2, c2 := bits.Add64(t1ah, t2l, c)
	m3 := t2h + t3 + c2
	m1, c = bits.Add64(m1, t1bl, 0)
	m2, c2 = bits.Add64(m2, t1bh, c)
	m3 += c2
	m2, c = bits.Add64(m2, t2s, 0)
	m3 += c
	// Above 2^130, H = (m2, m3) >> 2 counts 5 times (2^130 ≡ 5): add
	// 4H, which is (m2 &^ 3, m3), and H.
	var out [3]uint64
	out[0], c = bits.Add64(m0, m2&^3, 0)
	out[1], c = bits.Add64(m1, m3, c)
	out[2] = m2&3 + c
	out[0], c = bits.Add64(out[0], m2>>2|m3<<62, 0)
	out[1], c = bits.Add64(out[1], m3>>2, c)
	out[2] += c
	return out
}

// toLimbs converts h, below 2^131, to limbs.
func toLimbs(h [3]uint64) limbs {
	return limbs{h[0] & mask44, (h[0]>>44 | h[1]<<20) & mask44, h[1]>>24 | h[2]<<40}
}

// fromLimbs converts limbs each within its width (as carry leaves them,
// h[1] up to 2^44) to words.
func fromLimbs(h limbs) [3]uint64 {
	var out [3]uint64
	var c uint64
	out[0], c = bits.Add64(h[0], h[1]<<44, 0)
	out[1], c = bits.Add64(h[1]>>20, h[2]<<24, c)
	out[2] = h[2]>>40 + c
	return out
}

// carry moves what lies beyond each limb's width into the next one (and
// from the top, times 5, into the first), for limbs below 2^63.
func carry(h limbs) limbs {
	h[1] += h[0] >> 44
	h[0] &= mask44
	h[2] += h[1] >> 44
	h[1] &= mask44
	h[0] += 5 * (h[2] >> 42)
	h[2] &= mask42
	h[1] += h[0] >> 44
	h[0] &= mask44
	return h
}

// makePowers fills p.pw with r^1 ... r^8: three lane-wise vector
// multiplications, r·r, then r^2·(r, r^2), then r^4·(r, r^2, r^3, r^4).
func (p *poly) makePowers() {
	r := toLimbs([3]uint64{p.r[0], p.r[1], 0})
	var a, b [3][8]uint64
	for i := range 3 {
		a[i][0], b[i][0] = r[i], r[i]
	}
	polyMulLanes(&a, &b) // lane 0: r^2
	for i := range 3 {
		r2 := a[i][0]
		a[i][0], a[i][1] = r2, r2
		b[i][0], b[i][1] = r[i], r2
	}
	polyMulLanes(&a, &b) // lanes 0, 1: r^3, r^4
	for i := range 3 {
		r2, r3, r4 := b[i][1], a[i][0], a[i][1]
		a[i] = [8]uint64{r4, r4, r4, r4, r[i], r2, r3, r4}
		b[i] = [8]uint64{r[i], r2, r3, r4}
	}
	b[0][4], b[0][5], b[0][6], b[0][7] = 1, 1, 1, 1
	polyMulLanes(&a, &b) // lanes 0-3: r^5 ... r^8; 4-7: r ... r^4 times 1
	// a[limb][k-1] for k ≤ 4 is in lane k+3, for k ≥ 5 in lane k-5.
	lane := [9]int{1: 4, 2: 5, 3: 6, 4: 7, 5: 0, 6: 1, 7: 2, 8: 3}
	for i, blk := range laneBlock {
		k := lane[8-blk]
		p.pw.last[0][i], p.pw.last[1][i], p.pw.last[2][i] = a[0][k], a[1][k], a[2][k]
		p.pw.last[3][i], p.pw.last[4][i] = 20*a[1][k], 20*a[2][k]
	}
	p.pw.r8 = [5]uint64{a[0][3], a[1][3], a[2][3], 20 * a[1][3], 20 * a[2][3]}
	p.powers = true
}

// finish writes the tag: h reduced mod p, plus s, mod 2^128.
func (p *poly) finish(tag *[TagSize]byte) {
	h := p.h
	// Fold what lies above 2^130 in (times 5): h < 2^130 + 35 after.
	var c uint64
	top := h[2] >> 2
	h[2] &= 3
	h[0], c = bits.Add64(h[0], 5*top, 0)
	h[1], c = bits.Add64(h[1], 0, c)
	h[2] += c
	// Subtract p if h ≥ p, i.e. if h+5 reaches 2^130.
	g0, c := bits.Add64(h[0], 5, 0)
	g1, c := bits.Add64(h[1], 0, c)
	g2 := h[2] + c
	keep := (g2 >> 2) - 1 // all ones when h < p: keep h
	lo := h[0]&keep | g0&^keep
	hi := h[1]&keep | g1&^keep
	lo, c = bits.Add64(lo, p.s[0], 0)
	hi += p.s[1] + c
	binary.LittleEndian.PutUint64(tag[0:], lo)
	binary.LittleEndian.PutUint64(tag[8:], hi)
}
