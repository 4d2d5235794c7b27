//go:build amd64 && !purego

package gcm

import "golang.org/x/sys/cpu"

// accelerated needs VAES and VPCLMULQDQ on 512-bit registers, AVX-512's
// byte masks (BW) and 128-bit forms (VL), and BMI2 for the tail's masks.
var accelerated = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasAES &&
	cpu.X86.HasPCLMULQDQ && cpu.X86.HasBMI2

// expandKey128 writes AES-128's 11 round keys for key into keys.
//
//go:noescape
func expandKey128(key *byte, keys *[15 * 16]byte)

// expandKey256 writes AES-256's 15 round keys for key into keys.
//
//go:noescape
func expandKey256(key *byte, keys *[15 * 16]byte)

// ctr writes the encryption of counter block j0 to mask (unless mask is
// nil) and XORs src with the key stream of the counter blocks after it
// into dst (GCM's inc32:
// the last 4 octets count, big-endian, modulo 2^32). dst is at least as
// long as src.
//
//go:noescape
func ctr(rounds int, keys *[15 * 16]byte, j0 *[16]byte, dst, src []byte, mask *[16]byte)

// ghash folds data into y, both in the reflected form hashKey describes;
// a last partial block is padded with zeros.
//
//go:noescape
func ghash(powers *[32 * 16]byte, y *[16]byte, data []byte)
