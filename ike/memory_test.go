package ike

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/oevpn/oevpn/esp"
)

// maxPeerBytes is the most one established peer may cost one endpoint:
// its IKE SA with one Child SA, and that Child SA's pair of ESP SAs (issue
// 11: < 16 KiB per peer for both IKE and ESP state).
const maxPeerBytes = 16 << 10

// espDatapath joins two daemons that each talk to many peers: what the
// initiator sends to peer i reaches the responder as from the initiator's
// i-th address, and back. It installs every Child SA as a real pair of
// ESP SAs, so that their state is counted.
type espDatapath struct {
	memDatapath
	mu   sync.Mutex
	peer *Daemon
	from map[netip.Addr]netip.AddrPort // destination → the source it arrives from
	esp  map[uint32][2]*esp.SA         // by inbound SPI
}

func (e *espDatapath) SendIKE(msg []byte, to netip.AddrPort, natt bool) error {
	e.mu.Lock()
	from, ok := e.from[to.Addr()]
	e.mu.Unlock()
	if ok {
		e.peer.HandlePacket(msg, from, natt)
	}
	return nil
}

func (e *espDatapath) InstallChild(c *ChildSA) error {
	out, err := esp.NewSA(c.Out)
	if err != nil {
		return err
	}
	in, err := esp.NewSA(c.In)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.esp[c.In.SPI] = [2]*esp.SA{out, in}
	e.mu.Unlock()
	return nil
}

func (e *espDatapath) RetireChild(spi uint32, _ time.Duration) { e.RemoveChild(spi) }
func (e *espDatapath) RemoveChild(spi uint32) {
	e.mu.Lock()
	delete(e.esp, spi)
	e.mu.Unlock()
}

func (e *espDatapath) children() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.esp)
}

// liveHeap is the live heap after a full collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// perPeerBytes establishes n IKE SAs, each with one Child SA installed as
// ESP SAs, between two daemons, and returns what one peer costs one
// endpoint on average: the growth of the live heap over both daemons,
// divided by 2n.
// auth gives the credential of the endpoint at self and what it expects of
// the peer at peer (nil: a PSK).
func perPeerBytes(t *testing.T, n int, auth func(self, peer netip.Addr) (Credential, PeerAuth)) uint64 {
	t.Helper()
	if auth == nil {
		psk := []byte("memory memory memory")
		auth = func(_, _ netip.Addr) (Credential, PeerAuth) { return Credential{PSK: psk}, PeerAuth{PSK: psk} }
	}
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	dpA := &espDatapath{memDatapath: memDatapath{self: netip.AddrPortFrom(a, 4500), nextSPI: 0x1000}, from: map[netip.Addr]netip.AddrPort{}, esp: map[uint32][2]*esp.SA{}}
	dpB := &espDatapath{memDatapath: memDatapath{self: netip.AddrPortFrom(b, 4500), nextSPI: 0x80000}, from: map[netip.Addr]netip.AddrPort{}, esp: map[uint32][2]*esp.SA{}}
	var peersA, peersB []*PeerConfig
	for i := 0; i < n; i++ {
		// Peer i is at 10.1.x.y for A (A is at 10.2.x.y for it).
		ai := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		bi := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		dpA.from[bi] = netip.AddrPortFrom(ai, 4500)
		dpB.from[ai] = netip.AddrPortFrom(bi, 4500)
		tsA := Selectors{mustSelector(t, ai.String())}
		tsB := Selectors{mustSelector(t, bi.String())}
		credA, paA := auth(ai, bi)
		credB, paB := auth(bi, ai)
		peersA = append(peersA, &PeerConfig{Name: bi.String(), Addr: bi, NATTPort: 4500, IKEPort: 4500, Auth: credA, PeerAuth: paA,
			LocalID: IdentityOf(ai), RemoteID: IdentityOf(bi), LocalTS: tsA, RemoteTS: tsB, DPD: -1})
		peersB = append(peersB, &PeerConfig{Name: ai.String(), Addr: ai, NATTPort: 4500, IKEPort: 4500, Auth: credB, PeerAuth: paB,
			LocalID: IdentityOf(bi), RemoteID: IdentityOf(ai), LocalTS: tsB, RemoteTS: tsA, DPD: -1})
	}
	dA, err := New(Config{Datapath: dpA, Peers: peersA})
	if err != nil {
		t.Fatal(err)
	}
	dB, err := New(Config{Datapath: dpB, Peers: peersB})
	if err != nil {
		t.Fatal(err)
	}
	dpA.peer, dpB.peer = dB, dA
	t.Cleanup(func() { dA.Close(); dB.Close() })

	before := liveHeap()
	const batch = 16 // under the cookie threshold
	for i := 0; i < n; i += batch {
		for j := i; j < min(i+batch, n); j++ {
			if err := dA.Initiate(peersA[j].Name); err != nil {
				t.Fatal(err)
			}
		}
		want := min(i+batch, n)
		waitUntil(t, func() bool {
			return dpA.children() == want && dpB.children() == want && established(dA) == want && established(dB) == want
		},
			"IKE SAs up")
	}
	after := liveHeap()
	// OEVPN_MEMPROFILE=file (with -memprofilerate=1) writes the heap
	// profile of this moment, to see what the peers hold.
	if f := os.Getenv("OEVPN_MEMPROFILE"); f != "" {
		w, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.WriteHeapProfile(w)
		w.Close()
	}
	runtime.KeepAlive(peersA)
	runtime.KeepAlive(peersB)
	if after < before {
		return 0
	}
	return (after - before) / uint64(2*n)
}

// established counts d's established IKE SAs.
func established(d *Daemon) (n int) {
	d.call(func() {
		for _, sa := range d.sas {
			if sa.state == stateEstablished {
				n++
			}
		}
	})
	return n
}

// TestPeerMemory (issue 11): an established peer, its IKE SA and its Child
// SA's ESP SAs, costs each endpoint under 16 KiB of live heap, whether the
// peers authenticate with a PSK or with certificates (sent in IKE_AUTH and
// kept parsed for the tunnel).
func TestPeerMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("establishes 200 IKE SAs")
	}
	const n = 200
	ca, caKey := testCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	certs := func(self, _ netip.Addr) (Credential, PeerAuth) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		cert := testCert(t, ca, caKey, pub, self.String(), []net.IP{self.AsSlice()}, nil)
		return Credential{Signer: priv, Cert: cert}, PeerAuth{Roots: roots, CAs: []*x509.Certificate{ca}}
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048) // one for all: generating 400 is slow
	if err != nil {
		t.Fatal(err)
	}
	rsaCerts := func(self, _ netip.Addr) (Credential, PeerAuth) {
		cert := testCert(t, ca, caKey, &rsaKey.PublicKey, self.String(), []net.IP{self.AsSlice()}, nil)
		return Credential{Signer: rsaKey, Cert: cert}, PeerAuth{Roots: roots, CAs: []*x509.Certificate{ca}}
	}
	for _, tc := range []struct {
		name string
		auth func(self, peer netip.Addr) (Credential, PeerAuth)
	}{
		{"psk", nil},
		{"certs", certs},
		{"rsa-certs", rsaCerts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			per := perPeerBytes(t, n, tc.auth)
			t.Logf("%d peers: %d bytes per peer and endpoint (IKE SA, Child SA, ESP pair)", n, per)
			if per > maxPeerBytes {
				t.Errorf("an established peer costs %d bytes per endpoint, want at most %d", per, maxPeerBytes)
			}
		})
	}
}

// TestEstablishedForgetsAuthState (issue 11): once up, an IKE SA keeps
// nothing that only IKE_SA_INIT and IKE_AUTH needed: not the raw
// IKE_SA_INIT messages (about 1 KiB), not SK_pi/SK_pr, the DH private key,
// our KE value or the cookie.
func TestEstablishedForgetsAuthState(t *testing.T) {
	d1, d2, _, _ := memPair(t)
	for _, d := range []*Daemon{d1, d2} {
		sa := current(d)
		d.call(func() {
			if hs := sa.hs; hs != nil {
				// All of it: the IKE_SA_INIT messages, SK_pi/SK_pr, the DH
				// private key, our KE value, the cookie and the AutoVPN
				// secret.
				t.Errorf("initiator %v: the handshake state is kept (IKE_SA_INIT messages of %d and %d octets)",
					sa.initiator, len(hs.initReq), len(hs.initResp))
			}
			if sa.peerCert != nil {
				t.Errorf("initiator %v: the peer's certificate is kept", sa.initiator)
			}
			if sa.skD == nil || sa.nI == nil || sa.nR == nil {
				t.Errorf("initiator %v: SK_d or the nonces are gone", sa.initiator)
			}
		})
	}
	// The SA still works: an IKE SA rekey goes through.
	s1 := current(d1)
	d1.call(func() { d1.rekeyIKE(s1) })
	waitUntil(t, func() bool { return oneEstablished(d1) && oneEstablished(d2) && current(d1) != s1 }, "IKE SA rekeyed")
}
