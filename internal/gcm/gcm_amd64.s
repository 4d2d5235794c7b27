//go:build amd64 && !purego

#include "textflag.h"

// Per 128-bit lane: octets 0-11 in place and 12-15 reversed, which turns
// a counter block's big-endian counter into a little-endian dword 3 (and
// back) so that VPADDD counts.
DATA swapMask<>+0x00(SB)/8, $0x0706050403020100
DATA swapMask<>+0x08(SB)/8, $0x0c0d0e0f0b0a0908
DATA swapMask<>+0x10(SB)/8, $0x0706050403020100
DATA swapMask<>+0x18(SB)/8, $0x0c0d0e0f0b0a0908
DATA swapMask<>+0x20(SB)/8, $0x0706050403020100
DATA swapMask<>+0x28(SB)/8, $0x0c0d0e0f0b0a0908
DATA swapMask<>+0x30(SB)/8, $0x0706050403020100
DATA swapMask<>+0x38(SB)/8, $0x0c0d0e0f0b0a0908
GLOBL swapMask<>(SB), RODATA|NOPTR, $64

// Per lane: the 16 octets reversed, GHASH's reflected form.
DATA revMask<>+0x00(SB)/8, $0x08090a0b0c0d0e0f
DATA revMask<>+0x08(SB)/8, $0x0001020304050607
DATA revMask<>+0x10(SB)/8, $0x08090a0b0c0d0e0f
DATA revMask<>+0x18(SB)/8, $0x0001020304050607
DATA revMask<>+0x20(SB)/8, $0x08090a0b0c0d0e0f
DATA revMask<>+0x28(SB)/8, $0x0001020304050607
DATA revMask<>+0x30(SB)/8, $0x08090a0b0c0d0e0f
DATA revMask<>+0x38(SB)/8, $0x0001020304050607
GLOBL revMask<>(SB), RODATA|NOPTR, $64

// Counter offsets 1-4 of the first four blocks after j0, then 4 and 16
// for every lane, in dword 3 (the high half of each lane's high qword).
DATA ctrFirst<>+0x00(SB)/8, $0
DATA ctrFirst<>+0x08(SB)/8, $0x0000000100000000
DATA ctrFirst<>+0x10(SB)/8, $0
DATA ctrFirst<>+0x18(SB)/8, $0x0000000200000000
DATA ctrFirst<>+0x20(SB)/8, $0
DATA ctrFirst<>+0x28(SB)/8, $0x0000000300000000
DATA ctrFirst<>+0x30(SB)/8, $0
DATA ctrFirst<>+0x38(SB)/8, $0x0000000400000000
GLOBL ctrFirst<>(SB), RODATA|NOPTR, $64

DATA ctrAdd4<>+0x00(SB)/8, $0
DATA ctrAdd4<>+0x08(SB)/8, $0x0000000400000000
DATA ctrAdd4<>+0x10(SB)/8, $0
DATA ctrAdd4<>+0x18(SB)/8, $0x0000000400000000
DATA ctrAdd4<>+0x20(SB)/8, $0
DATA ctrAdd4<>+0x28(SB)/8, $0x0000000400000000
DATA ctrAdd4<>+0x30(SB)/8, $0
DATA ctrAdd4<>+0x38(SB)/8, $0x0000000400000000
GLOBL ctrAdd4<>(SB), RODATA|NOPTR, $64

DATA ctrAdd16<>+0x00(SB)/8, $0
DATA ctrAdd16<>+0x08(SB)/8, $0x0000001000000000
DATA ctrAdd16<>+0x10(SB)/8, $0
DATA ctrAdd16<>+0x18(SB)/8, $0x0000001000000000
DATA ctrAdd16<>+0x20(SB)/8, $0
DATA ctrAdd16<>+0x28(SB)/8, $0x0000001000000000
DATA ctrAdd16<>+0x30(SB)/8, $0
DATA ctrAdd16<>+0x38(SB)/8, $0x0000001000000000
GLOBL ctrAdd16<>(SB), RODATA|NOPTR, $64

// x^-1's terms beyond x^127 (x^6 + x + 1) and the x^127 term, reflected:
// bits 57, 62 and 63 of the low qword. A fold multiplies the lowest 64
// bits of a product by it (see hashKey in gcm.go).
DATA poly<>+0x00(SB)/8, $0xc200000000000000
DATA poly<>+0x08(SB)/8, $0
GLOBL poly<>(SB), RODATA|NOPTR, $16

// PREFIX turns X's dwords w0..w3 into w0, w0^w1, w0^w1^w2, w0^..^w3,
// the running XOR of a round key's words.
#define PREFIX(X, T) \
	MOVO   X, T; \
	PSLLDQ $4, T; \
	PXOR   T, X; \
	PSLLDQ $4, T; \
	PXOR   T, X; \
	PSLLDQ $4, T; \
	PXOR   T, X

#define EXPAND128(RCON, OFF) \
	AESKEYGENASSIST $RCON, X0, X1; \
	PSHUFD          $0xff, X1, X1; \
	PREFIX(X0, X2); \
	PXOR            X1, X0; \
	MOVUPS          X0, OFF(BX)

// func expandKey128(key *byte, keys *[15 * 16]byte)
TEXT ·expandKey128(SB), NOSPLIT, $0-16
	MOVQ   key+0(FP), AX
	MOVQ   keys+8(FP), BX
	MOVUPS (AX), X0
	MOVUPS X0, (BX)
	EXPAND128(0x01, 16)
	EXPAND128(0x02, 32)
	EXPAND128(0x04, 48)
	EXPAND128(0x08, 64)
	EXPAND128(0x10, 80)
	EXPAND128(0x20, 96)
	EXPAND128(0x40, 112)
	EXPAND128(0x80, 128)
	EXPAND128(0x1b, 144)
	EXPAND128(0x36, 160)
	RET

// EXPAND256A derives an even round key from the two before it:
// RotWord(SubWord(last word)) ^ rcon.
#define EXPAND256A(RCON, OFF) \
	AESKEYGENASSIST $RCON, X3, X1; \
	PSHUFD          $0xff, X1, X1; \
	PREFIX(X0, X2); \
	PXOR            X1, X0; \
	MOVUPS          X0, OFF(BX)

// EXPAND256B derives an odd round key: SubWord(last word), no rotation.
#define EXPAND256B(OFF) \
	AESKEYGENASSIST $0x00, X0, X1; \
	PSHUFD          $0xaa, X1, X1; \
	PREFIX(X3, X2); \
	PXOR            X1, X3; \
	MOVUPS          X3, OFF(BX)

// func expandKey256(key *byte, keys *[15 * 16]byte)
TEXT ·expandKey256(SB), NOSPLIT, $0-16
	MOVQ   key+0(FP), AX
	MOVQ   keys+8(FP), BX
	MOVUPS (AX), X0
	MOVUPS 16(AX), X3
	MOVUPS X0, (BX)
	MOVUPS X3, 16(BX)
	EXPAND256A(0x01, 32)
	EXPAND256B(48)
	EXPAND256A(0x02, 64)
	EXPAND256B(80)
	EXPAND256A(0x04, 96)
	EXPAND256B(112)
	EXPAND256A(0x08, 128)
	EXPAND256B(144)
	EXPAND256A(0x10, 160)
	EXPAND256B(176)
	EXPAND256A(0x20, 192)
	EXPAND256B(208)
	EXPAND256A(0x40, 224)
	RET

// Round keys: Z16 the first, Z17-Z25 rounds 1-9, Z26-Z29 rounds 10-13
// (AES-256 only), Z31 the last.
#define ROUND4(K, A, B, C, D) \
	VAESENC K, A, A; \
	VAESENC K, B, B; \
	VAESENC K, C, C; \
	VAESENC K, D, D

#define ROUNDS1TO9(R) \
	VAESENC Z17, R, R; \
	VAESENC Z18, R, R; \
	VAESENC Z19, R, R; \
	VAESENC Z20, R, R; \
	VAESENC Z21, R, R; \
	VAESENC Z22, R, R; \
	VAESENC Z23, R, R; \
	VAESENC Z24, R, R; \
	VAESENC Z25, R, R

#define ROUNDS10TO13(R) \
	VAESENC Z26, R, R; \
	VAESENC Z27, R, R; \
	VAESENC Z28, R, R; \
	VAESENC Z29, R, R

// func ctr(rounds int, keys *[15 * 16]byte, j0 *[16]byte, dst, src []byte, mask *[16]byte)
TEXT ·ctr(SB), NOSPLIT, $0-80
	MOVQ rounds+0(FP), CX
	MOVQ keys+8(FP), AX
	MOVQ j0+16(FP), BX
	MOVQ dst_base+24(FP), DI
	MOVQ src_base+48(FP), SI
	MOVQ src_len+56(FP), DX
	MOVQ mask+72(FP), R8

	VBROADCASTI32X4 0(AX), Z16
	VBROADCASTI32X4 16(AX), Z17
	VBROADCASTI32X4 32(AX), Z18
	VBROADCASTI32X4 48(AX), Z19
	VBROADCASTI32X4 64(AX), Z20
	VBROADCASTI32X4 80(AX), Z21
	VBROADCASTI32X4 96(AX), Z22
	VBROADCASTI32X4 112(AX), Z23
	VBROADCASTI32X4 128(AX), Z24
	VBROADCASTI32X4 144(AX), Z25
	MOVQ            CX, R9
	SHLQ            $4, R9
	VBROADCASTI32X4 (AX)(R9*1), Z31
	CMPQ            CX, $10
	JEQ             keysLoaded
	VBROADCASTI32X4 160(AX), Z26
	VBROADCASTI32X4 176(AX), Z27
	VBROADCASTI32X4 192(AX), Z28
	VBROADCASTI32X4 208(AX), Z29

keysLoaded:
	VMOVDQU64 swapMask<>(SB), Z5

	// mask = E(j0), computed in every lane.
	VBROADCASTI32X4 (BX), Z0
	VPXORD          Z16, Z0, Z6
	ROUNDS1TO9(Z6)
	CMPQ            CX, $10
	JEQ             maskLast
	ROUNDS10TO13(Z6)

maskLast:
	VAESENCLAST Z31, Z6, Z6
	VMOVDQU     X6, (R8)

	// The counters of the data's first sixteen blocks: j0+1 ... j0+16.
	VPSHUFB   Z5, Z0, Z0
	VPADDD    ctrFirst<>(SB), Z0, Z0
	VMOVDQU64 ctrAdd4<>(SB), Z4
	VPADDD    Z4, Z0, Z1
	VPADDD    Z4, Z1, Z2
	VPADDD    Z4, Z2, Z3
	VMOVDQU64 ctrAdd16<>(SB), Z4

loop16:
	CMPQ    DX, $256
	JB      tail
	VPSHUFB Z5, Z0, Z6
	VPSHUFB Z5, Z1, Z7
	VPSHUFB Z5, Z2, Z8
	VPSHUFB Z5, Z3, Z9
	VPXORD  Z16, Z6, Z6
	VPXORD  Z16, Z7, Z7
	VPXORD  Z16, Z8, Z8
	VPXORD  Z16, Z9, Z9
	ROUND4(Z17, Z6, Z7, Z8, Z9)
	ROUND4(Z18, Z6, Z7, Z8, Z9)
	ROUND4(Z19, Z6, Z7, Z8, Z9)
	ROUND4(Z20, Z6, Z7, Z8, Z9)
	ROUND4(Z21, Z6, Z7, Z8, Z9)
	ROUND4(Z22, Z6, Z7, Z8, Z9)
	ROUND4(Z23, Z6, Z7, Z8, Z9)
	ROUND4(Z24, Z6, Z7, Z8, Z9)
	ROUND4(Z25, Z6, Z7, Z8, Z9)
	CMPQ    CX, $10
	JEQ     last16
	ROUND4(Z26, Z6, Z7, Z8, Z9)
	ROUND4(Z27, Z6, Z7, Z8, Z9)
	ROUND4(Z28, Z6, Z7, Z8, Z9)
	ROUND4(Z29, Z6, Z7, Z8, Z9)

last16:
	VAESENCLAST Z31, Z6, Z6
	VAESENCLAST Z31, Z7, Z7
	VAESENCLAST Z31, Z8, Z8
	VAESENCLAST Z31, Z9, Z9
	VPXORD      0(SI), Z6, Z6
	VPXORD      64(SI), Z7, Z7
	VPXORD      128(SI), Z8, Z8
	VPXORD      192(SI), Z9, Z9
	VMOVDQU64   Z6, 0(DI)
	VMOVDQU64   Z7, 64(DI)
	VMOVDQU64   Z8, 128(DI)
	VMOVDQU64   Z9, 192(DI)
	VPADDD      Z4, Z0, Z0
	VPADDD      Z4, Z1, Z1
	VPADDD      Z4, Z2, Z2
	VPADDD      Z4, Z3, Z3
	ADDQ        $256, SI
	ADDQ        $256, DI
	SUBQ        $256, DX
	JMP         loop16

	// Four blocks at a time, the last ones under a byte mask.
tail:
	TESTQ   DX, DX
	JZ      done
	VPSHUFB Z5, Z0, Z6
	VPXORD  Z16, Z6, Z6
	ROUNDS1TO9(Z6)
	CMPQ    CX, $10
	JEQ     last4
	ROUNDS10TO13(Z6)

last4:
	VAESENCLAST Z31, Z6, Z6
	CMPQ        DX, $64
	JB          partial
	VPXORD      (SI), Z6, Z6
	VMOVDQU64   Z6, (DI)
	VMOVDQA64   Z1, Z0
	VMOVDQA64   Z2, Z1
	VMOVDQA64   Z3, Z2
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $64, DX
	JMP         tail

partial:
	MOVQ       $-1, R9
	BZHIQ      DX, R9, R9
	KMOVQ      R9, K1
	VMOVDQU8.Z (SI), K1, Z10
	VPXORD     Z10, Z6, Z6
	VMOVDQU8   Z6, K1, (DI)

done:
	VZEROUPPER
	RET

// MULFIRST starts the carry-less products of four blocks X with four key
// powers P, lane by lane: Z5 the low halves' product (LO), Z6 the high
// halves' (HI), Z7 the two cross products (MI, 64 bits up).
#define MULFIRST(X, P) \
	VPCLMULQDQ $0x00, P, X, Z5; \
	VPCLMULQDQ $0x11, P, X, Z6; \
	VPCLMULQDQ $0x01, P, X, Z7; \
	VPCLMULQDQ $0x10, P, X, Z8; \
	VPXORD     Z8, Z7, Z7

// MULADD adds four more products to Z5, Z6 and Z7.
#define MULADD(X, P) \
	VPCLMULQDQ $0x00, P, X, Z8; \
	VPCLMULQDQ $0x11, P, X, Z9; \
	VPCLMULQDQ $0x01, P, X, Z10; \
	VPCLMULQDQ $0x10, P, X, Z11; \
	VPXORD     Z8, Z5, Z5; \
	VPXORD     Z9, Z6, Z6; \
	VPTERNLOGD $0x96, Z11, Z10, Z7

// HSUM adds a vector's four lanes into its first.
#define HSUM(Z, Y, X) \
	VEXTRACTI64X4 $1, Z, Y12; \
	VPXOR         Y12, Y, Y; \
	VEXTRACTI128  $1, Y, X12; \
	VPXOR         X12, X, X

// REDUCE sums the lanes of LO, MI and HI and reduces the 256-bit sum
// into X0 (upper lanes zero): LO's low 64 bits, then MI's, are folded
// into the bits above them by multiplying by poly (X30).
#define REDUCE \
	HSUM(Z5, Y5, X5); \
	HSUM(Z6, Y6, X6); \
	HSUM(Z7, Y7, X7); \
	VPCLMULQDQ $0x00, X5, X30, X8; \
	VPSHUFD    $0x4e, X5, X5; \
	VPTERNLOGD $0x96, X8, X5, X7; \
	VPCLMULQDQ $0x00, X7, X30, X8; \
	VPSHUFD    $0x4e, X7, X7; \
	VPTERNLOGD $0x96, X8, X7, X6; \
	VMOVDQA64  X6, X0

// MASK sets K to the first N octets of a vector, N at most 64 (R10 all
// ones, R15 64).
#define MASK(N, K) \
	MOVQ    N, R11; \
	CMPQ    R11, R15; \
	CMOVQGT R15, R11; \
	BZHIQ   R11, R10, R11; \
	KMOVQ   R11, K

// NEXT64 takes 64 from N, stopping at zero (R12 zero).
#define NEXT64(N) \
	SUBQ    $64, N; \
	CMOVQLT R12, N

// func ghash(powers *[16 * 16]byte, y *[16]byte, data []byte)
TEXT ·ghash(SB), NOSPLIT, $0-40
	MOVQ    powers+0(FP), AX
	MOVQ    y+8(FP), BX
	MOVQ    data_base+16(FP), SI
	MOVQ    data_len+24(FP), DX
	VMOVDQU (BX), X0
	TESTQ   DX, DX
	JZ      store
	VMOVDQU64 revMask<>(SB), Z31
	VMOVDQU64 poly<>(SB), X30
	CMPQ      DX, $256
	JB        tail
	VMOVDQU64 0(AX), Z20
	VMOVDQU64 64(AX), Z21
	VMOVDQU64 128(AX), Z22
	VMOVDQU64 192(AX), Z23

	// Sixteen blocks: (y ^ X1)·H^16 ^ X2·H^15 ^ ... ^ X16·H, one reduction.
loop:
	VMOVDQU64 0(SI), Z1
	VMOVDQU64 64(SI), Z2
	VMOVDQU64 128(SI), Z3
	VMOVDQU64 192(SI), Z4
	VPSHUFB   Z31, Z1, Z1
	VPSHUFB   Z31, Z2, Z2
	VPSHUFB   Z31, Z3, Z3
	VPSHUFB   Z31, Z4, Z4
	VPXORQ    Z0, Z1, Z1
	MULFIRST(Z1, Z20)
	MULADD(Z2, Z21)
	MULADD(Z3, Z22)
	MULADD(Z4, Z23)
	REDUCE
	ADDQ      $256, SI
	SUBQ      $256, DX
	CMPQ      DX, $256
	JAE       loop

	// The last m < 16 blocks (the last one padded with zeros) meet
	// H^m ... H^1: the table's last m entries. Lanes past the data load
	// as zeros, and so do their powers.
tail:
	TESTQ DX, DX
	JZ    store
	MOVQ  $-1, R10
	XORQ  R12, R12
	MOVQ  $64, R15
	MOVQ  DX, R9
	MASK(R9, K1)
	NEXT64(R9)
	MASK(R9, K2)
	NEXT64(R9)
	MASK(R9, K3)
	NEXT64(R9)
	MASK(R9, K4)
	VMOVDQU8.Z 0(SI), K1, Z1
	VMOVDQU8.Z 64(SI), K2, Z2
	VMOVDQU8.Z 128(SI), K3, Z3
	VMOVDQU8.Z 192(SI), K4, Z4
	VPSHUFB    Z31, Z1, Z1
	VPSHUFB    Z31, Z2, Z2
	VPSHUFB    Z31, Z3, Z3
	VPSHUFB    Z31, Z4, Z4
	VPXORQ     Z0, Z1, Z1

	// R9 = 16·m octets of powers, from AX + 256 - 16·m.
	LEAQ  15(DX), R9
	ANDQ  $-16, R9
	MOVQ  AX, R13
	ADDQ  $256, R13
	SUBQ  R9, R13
	MASK(R9, K1)
	NEXT64(R9)
	MASK(R9, K2)
	NEXT64(R9)
	MASK(R9, K3)
	NEXT64(R9)
	MASK(R9, K4)
	VMOVDQU8.Z 0(R13), K1, Z20
	VMOVDQU8.Z 64(R13), K2, Z21
	VMOVDQU8.Z 128(R13), K3, Z22
	VMOVDQU8.Z 192(R13), K4, Z23
	MULFIRST(Z1, Z20)
	MULADD(Z2, Z21)
	MULADD(Z3, Z22)
	MULADD(Z4, Z23)
	REDUCE

store:
	VMOVDQU X0, (BX)
	VZEROUPPER
	RET
