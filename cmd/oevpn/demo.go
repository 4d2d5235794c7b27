package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/oevpn/oevpn/cmd/oevpn/config"
	"github.com/oevpn/oevpn/esp"
	"github.com/oevpn/oevpn/internal/relay"
)

// demoConfig is the embedded default: a userspace (netstack) endpoint with
// one statically keyed SA pair. The demo fills in the addresses and keys.
const demoConfig = `
[interface]
mode = "netstack"
addresses = ["%s/32"]
ike_port = 0    # any free port: the demo runs beside whatever else is here
natt_port = 0

[[sa]]
peer = "127.0.0.1:4500"   # replaced by the relay's address
local = ["%s"]
remote = ["%s"]
transform = "%s"
esn = true
spi_out = %d
spi_in = %d
key_out = "%x"
key_in = "%x"
`

// marker is written into the demo's TCP stream; it must never be seen on the
// wire.
const marker = "oevpn-demo-plaintext-marker"

type wireTap struct {
	mu        sync.Mutex
	datagrams [2]int
	octets    [2]int
	leaks     int
	samples   []string
}

func (w *wireTap) filter(dir relay.Direction, d []byte) relay.Verdict {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.datagrams[dir]++
	w.octets[dir] += len(d)
	if bytes.Contains(d, []byte(marker)) {
		w.leaks++
	}
	if dir == relay.AToB && len(w.samples) < 3 && len(d) >= 24 {
		kind, _ := esp.Classify(d)
		w.samples = append(w.samples, fmt.Sprintf("  %-4s spi=%#08x seq=%-3d %4d octets  %s…",
			kind, esp.Header(d).SPI(), esp.Header(d).Seq(), len(d), hex.EncodeToString(d[8:24])))
	}
	return relay.Forward
}

func cmdDemo(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	size := fs.Int("size", 64, "MiB to send through the tunnel over TCP")
	transform := fs.String("transform", esp.AESGCM256.String(), "ESP transform")
	verbose := fs.Bool("v", false, "log the endpoints' events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tr, err := esp.ParseTransform(*transform)
	if err != nil {
		return err
	}
	logLevel := slog.LevelWarn
	if *verbose {
		logLevel = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: logLevel}))

	addrA, addrB := netip.MustParseAddr("10.200.0.1"), netip.MustParseAddr("10.200.0.2")
	k1, k2 := make([]byte, tr.KeyLen()), make([]byte, tr.KeyLen())
	rand.Read(k1)
	rand.Read(k2)
	var spi [8]byte
	rand.Read(spi[:])
	spi1 := binary.BigEndian.Uint32(spi[:])%0xf0000000 + 0x1000
	spi2 := binary.BigEndian.Uint32(spi[4:])%0xf0000000 + 0x1000
	if spi1 == spi2 {
		spi2++
	}
	cfgA, err := config.Parse("demo-a.toml", fmt.Appendf(nil, demoConfig, addrA, addrA, addrB, tr, spi1, spi2, k1, k2))
	if err != nil {
		return err
	}
	cfgB, err := config.Parse("demo-b.toml", fmt.Appendf(nil, demoConfig, addrB, addrB, addrA, tr, spi2, spi1, k2, k1))
	if err != nil {
		return err
	}
	// The SAs need the relay's addresses, known once both ends listen.
	sasA, sasB := cfgA.SAs, cfgB.SAs
	cfgA.SAs, cfgB.SAs = nil, nil
	a, err := startEndpoint(cfgA, "", log.With("endpoint", "A"))
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := startEndpoint(cfgB, "", log.With("endpoint", "B"))
	if err != nil {
		return err
	}
	defer b.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	_, nattA := a.Engine().Ports()
	_, nattB := b.Engine().Ports()
	tap := &wireTap{}
	r, err := relay.New(netip.AddrPortFrom(lo, nattB), tap.filter)
	if err != nil {
		return err
	}
	defer r.Close()
	r.SetA(netip.AddrPortFrom(lo, nattA))
	sasA[0].Peer, sasB[0].Peer = r.AddrForA(), r.AddrForB()
	if err := demoInstall(a, sasA); err != nil {
		return err
	}
	if err := demoInstall(b, sasB); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "oevpn demo: two userspace endpoints in this process, joined over loopback UDP through a wire tap\n")
	fmt.Fprintf(stdout, "  A  inner %-12v outer 127.0.0.1:%d\n", addrA, nattA)
	fmt.Fprintf(stdout, "  B  inner %-12v outer 127.0.0.1:%d\n", addrB, nattB)
	fmt.Fprintf(stdout, "  SAs: %s with 64-bit ESN, static keys; A→B spi %#08x, B→A spi %#08x\n\n", tr, spi1, spi2)

	for i := 1; i <= 3; i++ {
		// A ping is one datagram each way, which may be lost: up to three tries.
		var rtt time.Duration
		var err error
		for try := 0; try < 3; try++ {
			if rtt, err = demoPing(a, addrA, addrB, i*3+try); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("ping %v through the tunnel: %w", addrB, err)
		}
		fmt.Fprintf(stdout, "ping %v seq=%d: reply in %v\n", addrB, i, rtt.Round(time.Microsecond))
	}
	n := int64(*size) << 20
	elapsed, err := demoTransfer(a, b, addrB, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "TCP A→B: %d MiB arrived intact (SHA-256 matches) in %v: %.2f Gbit/s\n\n",
		*size, elapsed.Round(time.Millisecond), float64(n)*8/elapsed.Seconds()/1e9)

	tap.mu.Lock()
	fmt.Fprintf(stdout, "on the wire (UDP/4500 as seen by the tap), first datagrams A→B:\n")
	for _, s := range tap.samples {
		fmt.Fprintln(stdout, s)
	}
	fmt.Fprintf(stdout, "  %d datagrams (%d MiB) A→B, %d B→A; plaintext marker %q seen %d times\n\n",
		tap.datagrams[0], tap.octets[0]>>20, tap.datagrams[1], marker, tap.leaks)
	leaks := tap.leaks
	tap.mu.Unlock()
	for _, x := range []struct {
		name string
		ep   *endpoint
	}{{"A", a}, {"B", b}} {
		for _, p := range x.ep.Engine().Pairs() {
			o, i := p.Out.Counters(), p.In.Counters()
			fmt.Fprintf(stdout, "%s: out spi %#08x %d packets %d octets | in spi %#08x %d packets %d octets, %d replayed, %d failed integrity\n",
				x.name, p.Out.SPI(), o.Packets, o.Bytes, p.In.SPI(), i.Packets, i.Bytes, i.ReplayDrops, i.IntegrityFailures)
		}
	}
	if leaks > 0 {
		return errors.New("plaintext seen on the wire")
	}
	fmt.Fprintln(stdout, "\ndemo OK: traffic flowed encrypted in ESP over UDP/4500")
	return nil
}

func demoPing(ep *endpoint, from, to netip.Addr, seq int) (time.Duration, error) {
	c, err := ep.Net().DialPingAddr(from, to)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: seq, Data: []byte(marker)}}
	b, _ := msg.Marshal(nil)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	start := time.Now()
	if _, err := c.Write(b); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	reply, err := icmp.ParseMessage(1, buf[:n])
	if err != nil {
		return 0, err
	}
	if reply.Type != ipv4.ICMPTypeEchoReply {
		return 0, fmt.Errorf("got %v, not an echo reply", reply.Type)
	}
	return rtt, nil
}

// markerReader repeats the marker, numbered, forever.
type markerReader struct{ n int }

func (m *markerReader) Read(p []byte) (int, error) {
	i := 0
	for i < len(p) {
		line := fmt.Appendf(nil, "%s %d\n", marker, m.n)
		m.n++
		i += copy(p[i:], line)
	}
	return i, nil
}

func demoTransfer(a, b *endpoint, to netip.Addr, size int64) (time.Duration, error) {
	ln, err := b.Net().ListenTCPAddrPort(netip.AddrPortFrom(to, 5201))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		done <- result{sum: [32]byte(h.Sum(nil)), n: n, err: err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(to, 5201))
	if err != nil {
		return 0, fmt.Errorf("TCP connect through the tunnel: %w", err)
	}
	h := sha256.New()
	start := time.Now()
	if _, err := io.Copy(c, io.TeeReader(io.LimitReader(&markerReader{}, size), h)); err != nil {
		c.Close()
		return 0, fmt.Errorf("TCP send: %w", err)
	}
	c.Close()
	select {
	case r := <-done:
		if r.err != nil {
			return 0, fmt.Errorf("TCP receive: %w", r.err)
		}
		if r.n != size || r.sum != [32]byte(h.Sum(nil)) {
			return 0, fmt.Errorf("TCP transfer corrupted: %d of %d octets, hash mismatch", r.n, size)
		}
	case <-time.After(2 * time.Minute):
		return 0, errors.New("TCP transfer did not finish in 2 minutes")
	}
	return time.Since(start), nil
}

// demoInstall installs static SAs whose keys were made for this run (their
// sequence numbers stay in memory).
func demoInstall(ep *endpoint, sas []config.SA) error {
	for _, pc := range staticSAs(sas) {
		if _, err := ep.Engine().Install(pc); err != nil {
			return err
		}
	}
	return nil
}
