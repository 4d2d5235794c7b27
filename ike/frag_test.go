package ike

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// bigPayloads is an IKE_AUTH-like payload list too large for one small
// fragment.
func bigPayloads() []Payload {
	return []Payload{
		&IDPayload{Initiator: true, IDType: IDFQDN, Data: []byte("a.oevpn.test")},
		&CertPayload{Encoding: CertX509Signature, Data: bytes.Repeat([]byte{0x42}, 2000)},
		&AuthPayload{Method: AuthPSK, Data: seq(1, 32)},
		&VendorPayload{Data: seq(3, 200)},
	}
}

func TestFragmentRoundTrip(t *testing.T) {
	for k, s := range skSuites {
		for _, size := range []int{200, 300, 700, DefaultFragmentSize} {
			t.Run(fmt.Sprintf("%s/%d", s.name, size), func(t *testing.T) {
				i, r := newTestSAPair(t, k)
				i.fragOK, i.peer = true, &PeerConfig{FragmentSize: size}
				frags, err := i.encryptFrags(IKE_AUTH, 1, false, bigPayloads())
				if err != nil {
					t.Fatal(err)
				}
				if len(frags) < 2 {
					t.Fatalf("%d fragments", len(frags))
				}
				for _, f := range frags {
					if len(f) > size {
						t.Fatalf("fragment of %d octets exceeds %d", len(f), size)
					}
				}
				// Deliver in reverse order, with a duplicate.
				var full *Message
				order := append([][]byte{frags[len(frags)-1]}, frags...)
				for n := len(order) - 1; n >= 0; n-- {
					m, err := Parse(order[n])
					if err != nil {
						t.Fatal(err)
					}
					got, err := r.reassemble(m)
					if err != nil {
						t.Fatal(err)
					}
					if got != nil {
						if full != nil {
							t.Fatal("message completed twice")
						}
						full = got
					}
				}
				if full == nil {
					t.Fatal("message never completed")
				}
				if !reflect.DeepEqual(full.Payloads, bigPayloads()) {
					t.Fatal("reassembled payloads differ")
				}
			})
		}
	}
}

func TestFragmentTampered(t *testing.T) {
	i, r := newTestSAPair(t, 0)
	i.fragOK, i.peer = true, &PeerConfig{FragmentSize: 300}
	frags, err := i.encryptFrags(IKE_AUTH, 1, false, bigPayloads())
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), frags[1]...)
	bad[HeaderLen+payloadHeaderLen+1] ^= 1 // the fragment number is authenticated
	m, err := Parse(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.reassemble(m); !errors.Is(err, ErrIntegrity) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("tampered fragment number: %v", err)
	}
}

// FuzzReassemble feeds arbitrary fragments (and valid ones) to reassembly:
// it must never panic, and a message may complete only from the valid
// fragments.
func FuzzReassemble(f *testing.F) {
	i, _ := newTestSAPair(f, 0)
	i.fragOK, i.peer = true, &PeerConfig{FragmentSize: 200}
	frags, err := i.encryptFrags(IKE_AUTH, 1, false, bigPayloads())
	if err != nil {
		f.Fatal(err)
	}
	for _, fr := range frags {
		f.Add(fr, uint8(0))
	}
	f.Fuzz(func(t *testing.T, b []byte, valid uint8) {
		_, r := newTestSAPair(t, 0)
		// Some of the valid fragments, then the fuzzed one.
		n := int(valid) % (len(frags) + 1)
		for _, fr := range frags[:min(n, len(frags)-1)] {
			m, _ := Parse(fr)
			r.reassemble(m)
		}
		m, err := Parse(b)
		if err != nil || m.skType != PayloadSKF {
			return
		}
		full, err := r.reassemble(m)
		if err == nil && full != nil && !reflect.DeepEqual(full.Payloads, bigPayloads()) {
			t.Fatal("forged fragment completed a message")
		}
	})
}
