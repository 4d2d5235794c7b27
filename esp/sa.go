package esp

import (
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Buffer layout. Seal and Open work in place in the caller's buffer and use
// the octets in front of the ESP header as scratch space for the nonce, the
// ESN-extended AAD and the HMAC sum, so the caller must leave Headroom octets
// in front of the packet and Tailroom octets after it.
const (
	// Headroom is the room Seal needs in front of the inner packet and
	// Open needs in front of the ESP packet.
	Headroom = 64
	// Tailroom is the room Seal needs after the inner packet.
	Tailroom = 64
)

// Lifetime bounds an SA's use; a zero field means no bound. Packets and Bytes
// count the packets and inner octets the SA protected (outbound) or accepted
// (inbound).
type Lifetime struct {
	Packets uint64
	Bytes   uint64
	Time    time.Duration
}

// Event is a lifetime event the SA raises for the control plane.
type Event uint8

// Lifetime events. Each is raised at most once per SA.
const (
	EventSoftExpire Event = iota + 1 // time to rekey
	EventHardExpire                  // the SA refuses all further packets
)

// String names the event.
func (e Event) String() string {
	switch e {
	case EventSoftExpire:
		return "soft-expire"
	case EventHardExpire:
		return "hard-expire"
	}
	return "unknown"
}

// Config describes one SA, one direction of an ESP tunnel.
type Config struct {
	Transform Transform
	SPI       uint32 // MinSPI or above
	Key       []byte // Transform.KeyLen() octets: key || salt, or enc key || integrity key
	ESN       bool   // 64-bit extended sequence numbers (RFC 4303 §2.2.1)

	// ReplayWindow is the inbound anti-replay window in packets: 0 means
	// DefaultReplayWindow, a negative value disables the check.
	ReplayWindow int

	Soft, Hard Lifetime

	// Sequence, if set, keeps the outbound sequence numbers (and so the
	// IVs) of a statically keyed SA unique across restarts: the SA
	// starts after the highest number Sequence says may have been used,
	// and seals with no number that Sequence has not durably reserved
	// first (SeqBlock at a time, the next block reserved in the
	// background when half of the current one is used). SAs keyed by IKE
	// need none: each has a fresh key.
	Sequence SeqStore

	// OnEvent, if set, is called once per lifetime event, from the
	// goroutine that crossed the limit (possibly the datapath): it must
	// not block.
	OnEvent func(*SA, Event)
}

// SeqStore is the durable record of an outbound SA's sequence numbers.
type SeqStore interface {
	// Reserved returns the highest sequence number that may have been
	// used under the key (0 for a new key).
	Reserved() (uint64, error)
	// Reserve records durably (on stable storage when it returns nil)
	// that sequence numbers up to limit may be used.
	Reserve(limit uint64) error
}

// SeqBlock is how many sequence numbers an SA with a SeqStore reserves at
// a time: at most this many (and half as many again) are skipped when it
// restarts.
const SeqBlock = 1 << 20

// Counters are an SA's statistics.
type Counters struct {
	Packets           uint64 // packets sealed or accepted
	Bytes             uint64 // inner octets sealed or accepted
	ReplayDrops       uint64 // inbound packets dropped as replayed or too old
	IntegrityFailures uint64 // inbound packets whose ICV did not verify
	PaddingErrors     uint64 // inbound packets with malformed padding
}

// SA is one ESP security association. Seal may be called from many
// goroutines at once; Open for one SA from one goroutine at a time (it owns
// the replay window), as the engine does. Counters may be read anywhere.
type SA struct {
	// What Seal and Open use for every packet comes first, in the first
	// three cache lines of the SA (its size, a multiple of 64 octets,
	// keeps it aligned to them): with many SAs, a packet meets a cold SA.
	hardRaised  atomic.Bool
	transform   Transform
	esn         bool
	spi         uint32
	ivLen       int
	align       int
	seq         atomic.Uint64 // outbound: last sequence number used
	seq0        uint64        // outbound: the sequence number before the first packet
	maxSeq      uint64
	hardPackets uint64 // hard.Packets
	// limitPackets and limitBytes are the lowest limits, soft or hard
	// (a fast check).
	limitPackets uint64
	limitBytes   uint64
	packets      atomic.Uint64
	bytes        atomic.Uint64
	store        SeqStore // nil: sequence numbers live in memory only
	c            crypter
	replay       replayWindow // inbound

	seqLimit     atomic.Uint64 // with store: the highest number reserved
	reserving    atomic.Bool   // with store: a reservation is under way
	macMu        sync.Mutex    // AES-CBC: guards c.mac
	softRaised   atomic.Bool
	replayDrops  atomic.Uint64
	integrityErr atomic.Uint64
	paddingErr   atomic.Uint64
	soft         Lifetime
	hard         Lifetime
	created      time.Time
	onEvent      func(*SA, Event)
	_            [32]byte // to 384 octets: a size class of whole cache lines
}

// NewSA keys an SA.
func NewSA(cfg Config) (*SA, error) {
	if cfg.SPI < MinSPI {
		return nil, fmt.Errorf("%w %d: SPIs below %d are reserved", ErrReservedSPI, cfg.SPI, MinSPI)
	}
	return newSA(cfg)
}

// newSA keys an SA without checking the SPI (published test vectors use
// reserved ones).
func newSA(cfg Config) (*SA, error) {
	if cfg.ReplayWindow > MaxReplayWindow {
		return nil, fmt.Errorf("esp: replay window %d exceeds %d", cfg.ReplayWindow, MaxReplayWindow)
	}
	c, err := newCrypter(cfg.Transform, cfg.Key)
	if err != nil {
		return nil, err
	}
	sa := &SA{
		transform:   cfg.Transform,
		spi:         cfg.SPI,
		esn:         cfg.ESN,
		maxSeq:      1<<32 - 1,
		soft:        cfg.Soft,
		hard:        cfg.Hard,
		hardPackets: cfg.Hard.Packets,
		created:     time.Now(),
		onEvent:     cfg.OnEvent,
		c:           c,
		ivLen:       cfg.Transform.IVLen(),
		align:       cfg.Transform.blockAlign(),
	}
	if cfg.ESN {
		sa.maxSeq = 1<<64 - 1
	}
	if cfg.Sequence != nil {
		last, err := cfg.Sequence.Reserved()
		if err != nil {
			return nil, fmt.Errorf("esp: sequence numbers of SPI %#x: %w", cfg.SPI, err)
		}
		sa.store, sa.seq0 = cfg.Sequence, min(last, sa.maxSeq)
		sa.seq.Store(sa.seq0)
		if err := sa.reserve(); err != nil {
			return nil, fmt.Errorf("esp: sequence numbers of SPI %#x: %w", cfg.SPI, err)
		}
	}
	sa.replay.init(cfg.ReplayWindow)
	sa.limitPackets, sa.limitBytes = lowest(cfg.Soft.Packets, cfg.Hard.Packets), lowest(cfg.Soft.Bytes, cfg.Hard.Bytes)
	return sa, nil
}

// SPI returns the SA's SPI.
func (sa *SA) SPI() uint32 { return sa.spi }

// Transform returns the SA's transform.
func (sa *SA) Transform() Transform { return sa.transform }

// ESN reports whether the SA uses extended sequence numbers.
func (sa *SA) ESN() bool { return sa.esn }

// Created returns when the SA was keyed.
func (sa *SA) Created() time.Time { return sa.created }

// Counters returns a snapshot of the SA's statistics.
func (sa *SA) Counters() Counters {
	return Counters{
		Packets:           sa.packets.Load(),
		Bytes:             sa.bytes.Load(),
		ReplayDrops:       sa.replayDrops.Load(),
		IntegrityFailures: sa.integrityErr.Load(),
		PaddingErrors:     sa.paddingErr.Load(),
	}
}

// Expired reports whether the SA reached a hard limit.
func (sa *SA) Expired() bool { return sa.hardRaised.Load() }

// Tick raises the time-based lifetime events due at now. The control plane
// calls it periodically (about once a second).
func (sa *SA) Tick(now time.Time) {
	age := now.Sub(sa.created)
	if sa.soft.Time > 0 && age >= sa.soft.Time {
		sa.raise(EventSoftExpire)
	}
	if sa.hard.Time > 0 && age >= sa.hard.Time {
		sa.raise(EventHardExpire)
	}
}

func (sa *SA) raise(e Event) {
	flag := &sa.softRaised
	if e == EventHardExpire {
		flag = &sa.hardRaised
	}
	if flag.CompareAndSwap(false, true) && sa.onEvent != nil {
		sa.onEvent(sa, e)
	}
}

// lowest returns the smaller non-zero limit, or no limit.
func lowest(a, b uint64) uint64 {
	switch {
	case a == 0 && b == 0:
		return 1<<64 - 1
	case a == 0:
		return b
	case b == 0 || a < b:
		return a
	}
	return b
}

// account adds one packet of n octets and raises the events it crosses.
func (sa *SA) account(n int) {
	p := sa.packets.Add(1)
	b := sa.bytes.Add(uint64(n))
	if p >= sa.limitPackets || b >= sa.limitBytes {
		sa.limits(p, b)
	}
}

// limits raises the lifetime events that p packets and b octets reach.
func (sa *SA) limits(p, b uint64) {
	if (sa.soft.Packets > 0 && p >= sa.soft.Packets) || (sa.soft.Bytes > 0 && b >= sa.soft.Bytes) {
		if !sa.softRaised.Load() {
			sa.raise(EventSoftExpire)
		}
	}
	if (sa.hard.Packets > 0 && p >= sa.hard.Packets) || (sa.hard.Bytes > 0 && b >= sa.hard.Bytes) {
		if !sa.hardRaised.Load() {
			sa.raise(EventHardExpire)
		}
	}
}

// Errors returned by Seal and Open.
var (
	ErrBuffer       = errors.New("esp: buffer lacks headroom or tailroom")
	ErrExpired      = errors.New("esp: SA expired")
	ErrSeqExhausted = errors.New("esp: sequence numbers exhausted")
	// ErrSeqNotReserved: the SA's SeqStore has not (yet) recorded the
	// packet's sequence number; the packet is dropped rather than risk
	// an IV that a restart would use again.
	ErrSeqNotReserved = errors.New("esp: sequence number not yet reserved")
	ErrShortPacket    = errors.New("esp: packet too short")
	ErrMisaligned     = errors.New("esp: ciphertext not a multiple of the block size")
	ErrWrongSPI       = errors.New("esp: packet SPI does not match the SA")
	ErrIntegrity      = errors.New("esp: integrity check failed")
	ErrPadding        = errors.New("esp: malformed padding")
	ErrDummy          = errors.New("esp: dummy packet (next header 59)")
	ErrNotAEADLength  = errors.New("esp: AEAD output length mismatch")
)

// NextHeaderNone marks a dummy packet (RFC 4303 §2.6), which Open drops.
const NextHeaderNone = 59

// Outbound flow of Seal:
//  1. take the next sequence number, refusing to wrap (RFC 4303 §3.3.3) or
//     to pass the hard lifetime;
//  2. append padding (1, 2, 3, …), pad length and next header after the
//     inner packet;
//  3. write the ESP header and IV in the headroom in front of it;
//  4. encrypt in place and append the ICV.

// Seal protects the inner packet buf[off:off+n], whose protocol is
// nextHeader (4 for IPv4, 41 for IPv6), and returns the ESP packet, a
// sub-slice of buf that starts before off. buf must have Headroom octets
// before off and Tailroom octets after off+n. It is Frame and then
// Outbound.Seal.
func (sa *SA) Seal(buf []byte, off, n int, nextHeader byte) ([]byte, error) {
	var o Outbound
	if err := sa.Frame(&o, buf, off, n, nextHeader); err != nil {
		return nil, err
	}
	return o.Seal()
}

// Outbound is a packet that Frame numbered and framed and that Seal
// encrypts. It lets the datapath number packets in the order it sends
// them and encrypt them on several goroutines at once.
type Outbound struct {
	sa              *SA
	buf             []byte
	start, off, end int // ESP header, inner packet, end of the trailer
	seq             uint64
}

// Frame does the steps of Seal but the encryption into o: it takes the
// next sequence number (steps 1–3 of Seal's flow). The packets of an SA
// go on the wire in the order Frame numbered them; o.Seal may then run on
// any goroutine. (o is filled in place: the datapath keeps one per packet
// of a batch.)
func (sa *SA) Frame(o *Outbound, buf []byte, off, n int, nextHeader byte) error {
	if off < Headroom || n < 0 || len(buf)-off-n < Tailroom {
		return ErrBuffer
	}
	if sa.hardRaised.Load() {
		return ErrExpired
	}
	seq := sa.seq.Add(1)
	if seq > sa.maxSeq || seq == 0 {
		sa.seq.Store(sa.maxSeq)
		sa.raise(EventHardExpire)
		return ErrSeqExhausted
	}
	if sa.hardPackets > 0 && seq-sa.seq0 > sa.hardPackets {
		return ErrExpired
	}
	if sa.store != nil {
		// Never a number that a restart could use again: only
		// reserved ones, and the next block is asked for early.
		lim := sa.seqLimit.Load()
		if lim-min(seq, lim) < SeqBlock/2 && lim < sa.maxSeq && sa.reserving.CompareAndSwap(false, true) {
			go func() {
				sa.reserve()
				sa.reserving.Store(false)
			}()
		}
		if seq > lim {
			return ErrSeqNotReserved
		}
	}
	sa.frame(o, buf, off, n, nextHeader, seq, nil)
	// Counted here, on the one goroutine that numbers, rather than
	// where it is sealed: the workers would share the counters' line.
	sa.account(n)
	return nil
}

// reserve durably reserves the next SeqBlock sequence numbers.
func (sa *SA) reserve() error {
	lim := max(sa.seqLimit.Load(), sa.seq.Load())
	lim += min(SeqBlock, sa.maxSeq-lim)
	if err := sa.store.Reserve(lim); err != nil {
		return err
	}
	sa.seqLimit.Store(lim)
	return nil
}

// seal frames and seals the packet with sequence number seq (known-answer
// tests).
func (sa *SA) seal(buf []byte, off, n int, nextHeader byte, seq uint64, iv []byte) ([]byte, error) {
	var o Outbound
	sa.frame(&o, buf, off, n, nextHeader, seq, iv)
	return o.Seal()
}

// frame does steps 2 and 3 of Seal for sequence number seq into o. A
// non-nil iv replaces the IV the SA would derive (known-answer tests only).
func (sa *SA) frame(o *Outbound, buf []byte, off, n int, nextHeader byte, seq uint64, iv []byte) {
	padLen := (sa.align - (n+2)%sa.align) % sa.align
	end := off + n
	for i := 0; i < padLen; i++ {
		buf[end+i] = byte(i + 1)
	}
	end += padLen
	buf[end] = byte(padLen)
	buf[end+1] = nextHeader
	end += 2

	start := off - sa.ivLen - headerLen
	Header(buf[start:]).Encode(sa.spi, uint32(seq))
	ivField := buf[start+headerLen : off]
	if iv != nil {
		copy(ivField, iv)
	} else {
		// RFC 4106 §3.1 and RFC 7634 §2: the IV must be unique per
		// packet, and the counter is. For CBC it must be unpredictable:
		// the counter encrypted under the SA's key (NIST SP 800-38A
		// Appendix C).
		binary.BigEndian.PutUint64(ivField, seq)
		if !sa.transform.aead() {
			clear(ivField[8:])
			sa.c.block.Encrypt(ivField, ivField)
		}
	}
	*o = Outbound{sa: sa, buf: buf, start: start, off: off, end: end, seq: seq}
}

// Seal encrypts the packet Frame framed (and counted against the SA's
// lifetimes) in place, step 4 of Seal's flow, and returns the ESP packet.
// Packets of one SA may be sealed on several goroutines at once.
func (o *Outbound) Seal() ([]byte, error) {
	sa, buf, start, off, end := o.sa, o.buf, o.start, o.off, o.end
	if sa.transform.aead() {
		nonce := sa.nonce(buf[start-12:start], buf[start+headerLen:off])
		aad := sa.aad(buf, start, o.seq)
		out := sa.c.aead.Seal(buf[off:off], nonce, buf[off:end], aad)
		if len(out) != end-off+16 {
			return nil, ErrNotAEADLength
		}
		return buf[start : end+16], nil
	}
	// AES-CBC then HMAC-SHA2-256-128 over header, IV and ciphertext, with
	// the ESN high bits appended (RFC 4303 §2.2.1, §3.3.2).
	prev := buf[start+headerLen : off]
	for i := off; i < end; i += 16 {
		blk := buf[i : i+16]
		subtle.XORBytes(blk, blk, prev)
		sa.c.block.Encrypt(blk, blk)
		prev = blk
	}
	sa.mac(buf, start, end, o.seq, buf[end:end])
	return buf[start : end+16], nil
}

// nonce writes salt || IV (RFC 4106 §4, RFC 7634 §2) into dst, 12 octets,
// with word moves rather than calls to memmove.
func (sa *SA) nonce(dst, iv []byte) []byte {
	dst = dst[:12]
	binary.LittleEndian.PutUint32(dst, binary.LittleEndian.Uint32(sa.c.salt[:]))
	binary.LittleEndian.PutUint64(dst[4:], binary.LittleEndian.Uint64(iv[:8]))
	return dst
}

// aad returns the AAD of RFC 4106 §5: SPI || seq, or SPI || seq-hi || seq-lo
// with ESN, the latter built in the scratch space before the nonce.
func (sa *SA) aad(buf []byte, start int, seq uint64) []byte {
	if !sa.esn {
		return buf[start : start+headerLen]
	}
	aad := buf[start-24 : start-12]
	binary.BigEndian.PutUint32(aad, sa.spi)
	binary.BigEndian.PutUint64(aad[4:], seq)
	return aad
}

// mac computes the HMAC over buf[start:end] (plus the ESN high bits) and
// appends its first 16 octets to dst, which must have room for 32.
func (sa *SA) mac(buf []byte, start, end int, seq uint64, dst []byte) []byte {
	sa.macMu.Lock()
	m := sa.c.mac
	m.Reset()
	m.Write(buf[start:end])
	if sa.esn {
		hi := buf[start-4 : start]
		binary.BigEndian.PutUint32(hi, uint32(seq>>32))
		m.Write(hi)
	}
	out := m.Sum(dst)
	sa.macMu.Unlock()
	return out[:len(dst)+16]
}

// Inbound flow of Open:
//  1. check the length, the SPI and the sequence number against the replay
//     window (RFC 4303 §3.4.3) without changing it;
//  2. verify the ICV and decrypt in place (§3.4.4);
//  3. check the window again and record the sequence number (one writer
//     per SA; a copy of the packet decrypted at the same time as this one
//     may have been recorded since step 1);
//  4. check and strip the padding; drop dummy packets.

// Open authenticates and decrypts the ESP packet buf[off:off+n] in place and
// returns the inner packet, a sub-slice of buf, and its next-header value.
// buf must have Headroom octets before off. It is Check, Inbound.Decrypt
// and Inbound.Accept.
func (sa *SA) Open(buf []byte, off, n int) (inner []byte, nextHeader byte, err error) {
	var in Inbound
	if err := sa.Check(&in, buf, off, n); err != nil {
		return nil, 0, err
	}
	if err := in.Decrypt(); err != nil {
		return nil, 0, err
	}
	return in.Accept()
}

// Inbound is an ESP packet that Check found acceptable so far, for
// Decrypt and then Accept. It lets the datapath decrypt the packets of
// one SA on several goroutines at once while the replay window, which
// Check and Accept read and write, stays with one goroutine.
type Inbound struct {
	sa                    *SA
	buf                   []byte
	start, ctStart, ctEnd int // ESP header, ciphertext
	seq                   uint64
}

// Check does step 1 of Open into in: the length, the SPI and the replay
// check, which changes nothing. Check and Accept of one SA are called from
// one goroutine at a time, as Open is. (in is filled in place: the
// datapath keeps one per packet of a batch.)
func (sa *SA) Check(in *Inbound, buf []byte, off, n int) error {
	if off < Headroom || n < 0 || off+n > len(buf) {
		return ErrBuffer
	}
	if sa.hardRaised.Load() {
		return ErrExpired
	}
	pkt := buf[off : off+n]
	ctLen := n - headerLen - sa.ivLen - 16
	if ctLen < 2 {
		return ErrShortPacket
	}
	if ctLen%sa.align != 0 {
		return ErrMisaligned
	}
	h := Header(pkt)
	if h.SPI() != sa.spi {
		return ErrWrongSPI
	}
	seq, ok := sa.checkReplay(h.Seq())
	if !ok {
		sa.replayDrops.Add(1)
		return ErrReplay
	}
	ctStart := off + headerLen + sa.ivLen
	*in = Inbound{sa: sa, buf: buf, start: off, ctStart: ctStart, ctEnd: ctStart + ctLen, seq: seq}
	return nil
}

// Decrypt does step 2 of Open: it verifies the ICV and decrypts in place.
// Packets of one SA may be decrypted on several goroutines at once.
func (in *Inbound) Decrypt() error {
	sa, buf, start, ctStart, ctEnd := in.sa, in.buf, in.start, in.ctStart, in.ctEnd
	if sa.transform.aead() {
		nonce := sa.nonce(buf[start-12:start], buf[start+headerLen:ctStart])
		if _, err := sa.c.aead.Open(buf[ctStart:ctStart], nonce, buf[ctStart:ctEnd+16], sa.aad(buf, start, in.seq)); err != nil {
			sa.integrityErr.Add(1)
			return ErrIntegrity
		}
		return nil
	}
	sum := sa.mac(buf, start, ctEnd, in.seq, buf[start-36:start-36])
	if !hmac.Equal(sum, buf[ctEnd:ctEnd+16]) {
		sa.integrityErr.Add(1)
		return ErrIntegrity
	}
	for i := ctEnd - 16; i >= ctStart; i -= 16 {
		blk := buf[i : i+16]
		sa.c.block.Decrypt(blk, blk)
		subtle.XORBytes(blk, blk, buf[i-16:i]) // the IV for the first block
	}
	return nil
}

// Accept does steps 3 and 4 of Open for a packet Decrypt authenticated:
// it checks the replay window again (a copy of the packet may have been
// accepted since Check) and records the sequence number, checks and
// strips the padding, and returns the inner packet. The packets of one SA
// are accepted on one goroutine at a time, in the order they arrived.
func (in *Inbound) Accept() (inner []byte, nextHeader byte, err error) {
	sa, buf, ctStart, ctEnd := in.sa, in.buf, in.ctStart, in.ctEnd
	if !sa.replay.check(in.seq) {
		sa.replayDrops.Add(1)
		return nil, 0, ErrReplay
	}
	sa.replay.update(in.seq)
	ctLen := ctEnd - ctStart
	padLen := int(buf[ctEnd-2])
	nextHeader = buf[ctEnd-1]
	if padLen+2 > ctLen {
		sa.paddingErr.Add(1)
		return nil, 0, ErrPadding
	}
	padStart := ctEnd - 2 - padLen
	for i := 0; i < padLen; i++ {
		if buf[padStart+i] != byte(i+1) {
			sa.paddingErr.Add(1)
			return nil, 0, ErrPadding
		}
	}
	if nextHeader == NextHeaderNone {
		return nil, 0, ErrDummy
	}
	sa.account(padStart - ctStart)
	return buf[ctStart:padStart], nextHeader, nil
}

// checkReplay returns the full sequence number of a packet whose low 32 bits
// are low and whether the window would accept it.
func (sa *SA) checkReplay(low uint32) (uint64, bool) {
	seq := uint64(low)
	if sa.esn {
		var ok bool
		if seq, ok = inferESN(sa.replay.last, sa.replay.size, low); !ok {
			return 0, false
		}
	}
	return seq, sa.replay.check(seq)
}
