package ike

import (
	"bytes"
	"crypto/rand"
	mrand "math/rand/v2"
	"reflect"
	"sync"
	"testing"
)

// FuzzParse feeds arbitrary octets to Parse: it must never panic, and a
// cleartext message it accepts must survive Marshal and Parse again, with
// Marshal's output as a fixed point.
func FuzzParse(f *testing.F) {
	for _, c := range testMessages() {
		f.Add(mustMarshal(f, c.message()))
	}
	seeds, err := encryptedSeeds()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(s.raw)
	}
	f.Add([]byte{})
	f.Add(rawMessage())
	f.Add(rawMessage(rawPL{150, 0, seq(0, 8)}, rawPL{PayloadNonce, criticalBit, seq(0, 16)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if int(m.Length) > len(b) || len(m.Raw()) != int(m.Length) || !bytes.Equal(m.Raw(), b[:m.Length]) {
			t.Fatalf("header length %d, raw %d octets, input %d", m.Length, len(m.Raw()), len(b))
		}
		if m.Encrypted() {
			return
		}
		b2, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed message: %v", err)
		}
		m2, err := Parse(b2)
		if err != nil {
			t.Fatalf("Parse of a re-marshalled message: %v\n%x", err, b2)
		}
		if !reflect.DeepEqual(m2.Payloads, m.Payloads) {
			t.Fatalf("payloads changed:\n got %s\nwant %s", dump(m2.Payloads), dump(m.Payloads))
		}
		b3, err := m2.Marshal()
		if err != nil || !bytes.Equal(b3, b2) {
			t.Fatalf("Marshal is not a fixed point: %v\n%x\n%x", err, b2, b3)
		}
	})
}

// encSeed is a message sealed by one side of the test IKE SA of
// skSuites[suite].
type encSeed struct {
	suite         int
	fromInitiator bool
	raw           []byte
	payloads      []Payload
}

// encryptedSeeds seals a few messages each way for every suite. The IVs
// come from crypto/rand, so a deterministic stream replaces it while the
// seeds are made: the fuzzing coordinator and its worker processes must all
// compute the same seeds, or a seed sent by the coordinator would decrypt
// in a worker without being one of the worker's seeds.
var encryptedSeeds = sync.OnceValues(func() ([]encSeed, error) {
	saved := rand.Reader
	rand.Reader = mrand.NewChaCha8([32]byte{'o', 'e', 'v', 'p', 'n', ' ', 'f', 'u', 'z', 'z'})
	defer func() { rand.Reader = saved }()

	var auth []Payload
	for _, c := range testMessages() {
		if c.name == "IKE_AUTH contents" {
			auth = c.payloads
		}
	}
	var seeds []encSeed
	for k := range skSuites {
		i, r, err := makeTestSAPair(k)
		if err != nil {
			return nil, err
		}
		for _, m := range []struct {
			from     *ikeSA
			exch     ExchangeType
			id       uint32
			response bool
			payloads []Payload
		}{
			{i, IKE_AUTH, 1, false, auth},
			{r, IKE_AUTH, 1, true, auth[2:]},
			{i, INFORMATIONAL, 2, false, nil},
			{r, INFORMATIONAL, 2, true, []Payload{&DeletePayload{Protocol: ProtoESP, SPIs: [][]byte{{0xc0, 0, 0, 1}}}}},
		} {
			b, err := m.from.encrypt(m.exch, m.id, m.response, m.payloads)
			if err != nil {
				return nil, err
			}
			seeds = append(seeds, encSeed{k, m.from.initiator, b, m.payloads})
		}
	}
	return seeds, nil
})

// FuzzDecrypt is the SK decrypt-and-decode path of a received message:
// Parse, then decrypt with the IKE SA found by SPI. It must never panic,
// and decryption may only succeed for a message that one side sealed: the
// seeds. Anything else the fuzzer derives from them is a forgery.
//
// The check is on the octets Parse keeps (Raw): octets after the header's
// length are dropped by Parse before any authentication (see
// TestParseTrailingDatagramBytes).
func FuzzDecrypt(f *testing.F) {
	seeds, err := encryptedSeeds()
	if err != nil {
		f.Fatal(err)
	}
	type pair struct{ i, r *ikeSA }
	pairs := make([]pair, len(skSuites))
	bySPI := map[uint64]int{}
	for k := range skSuites {
		pairs[k].i, pairs[k].r = newTestSAPair(f, k)
		bySPI[testSPIi(k)] = k
	}
	valid := map[string]encSeed{}
	for _, s := range seeds {
		valid[string(s.raw)] = s
		// A seed that does not decrypt would make this target vacuous.
		to := pairs[s.suite].i
		if s.fromInitiator {
			to = pairs[s.suite].r
		}
		m, err := Parse(s.raw)
		if err != nil {
			f.Fatal(err)
		}
		if err := to.decrypt(m); err != nil {
			f.Fatalf("seed of %s does not decrypt: %v", skSuites[s.suite].name, err)
		}
		f.Add(s.raw)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil || !m.Encrypted() {
			return
		}
		k, ok := bySPI[m.SPIi]
		if !ok {
			k = int(m.SPIi % uint64(len(pairs))) // exercise decrypt on garbage too
		}
		for _, sa := range []*ikeSA{pairs[k].i, pairs[k].r} {
			m, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse is not deterministic: %v", err)
			}
			if err := sa.decrypt(m); err != nil {
				continue
			}
			s, ok := valid[string(m.Raw())]
			if !ok {
				t.Fatalf("%s: initiator=%v decrypted a message nobody sealed:\n%x", skSuites[k].name, sa.initiator, b)
			}
			if s.suite != k || s.fromInitiator == sa.initiator {
				t.Fatalf("%s: initiator=%v decrypted a seed of %s sent by initiator=%v",
					skSuites[k].name, sa.initiator, skSuites[s.suite].name, s.fromInitiator)
			}
			if !reflect.DeepEqual(m.Payloads, s.payloads) {
				t.Fatalf("decrypted payloads differ from the sealed ones:\n got %s\nwant %s", dump(m.Payloads), dump(s.payloads))
			}
		}
	})
}
