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

// Counter offsets 1-4 of the first four blocks after j0, then 4 for
// every lane, in dword 3 (the high half of each lane's high qword).
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

// COUNTERS8 puts the next 32 counter blocks, in their wire order, into
// Z6-Z13 and moves Z0 past them.
#define COUNTERS8 \
	VPSHUFB Z5, Z0, Z6; \
	VPADDD  Z4, Z0, Z14; \
	VPSHUFB Z5, Z14, Z7; \
	VPADDD  Z4, Z14, Z14; \
	VPSHUFB Z5, Z14, Z8; \
	VPADDD  Z4, Z14, Z14; \
	VPSHUFB Z5, Z14, Z9; \
	VPADDD  Z4, Z14, Z14; \
	VPSHUFB Z5, Z14, Z10; \
	VPADDD  Z4, Z14, Z14; \
	VPSHUFB Z5, Z14, Z11; \
	VPADDD  Z4, Z14, Z14; \
	VPSHUFB Z5, Z14, Z12; \
	VPADDD  Z4, Z14, Z14; \
	VPSHUFB Z5, Z14, Z13; \
	VPADDD  Z4, Z14, Z0

#define FIRST8 \
	VPXORD Z16, Z6, Z6; \
	VPXORD Z16, Z7, Z7; \
	VPXORD Z16, Z8, Z8; \
	VPXORD Z16, Z9, Z9; \
	VPXORD Z16, Z10, Z10; \
	VPXORD Z16, Z11, Z11; \
	VPXORD Z16, Z12, Z12; \
	VPXORD Z16, Z13, Z13

#define ROUND8(K) \
	ROUND4(K, Z6, Z7, Z8, Z9); \
	ROUND4(K, Z10, Z11, Z12, Z13)

#define LAST8 \
	VAESENCLAST Z31, Z6, Z6; \
	VAESENCLAST Z31, Z7, Z7; \
	VAESENCLAST Z31, Z8, Z8; \
	VAESENCLAST Z31, Z9, Z9; \
	VAESENCLAST Z31, Z10, Z10; \
	VAESENCLAST Z31, Z11, Z11; \
	VAESENCLAST Z31, Z12, Z12; \
	VAESENCLAST Z31, Z13, Z13

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

	// mask = E(j0), computed in every lane, unless mask is nil.
	VBROADCASTI32X4 (BX), Z0
	TESTQ           R8, R8
	JZ              counters
	VPXORD          Z16, Z0, Z6
	ROUNDS1TO9(Z6)
	CMPQ            CX, $10
	JEQ             maskLast
	ROUNDS10TO13(Z6)

maskLast:
	VAESENCLAST Z31, Z6, Z6
	VMOVDQU     X6, (R8)

counters:
	// Z0 holds the counters of the next four blocks (j0+1 ... j0+4
	// first), dword 3 little-endian; Z4 adds four to each lane.
	VPSHUFB   Z5, Z0, Z0
	VPADDD    ctrFirst<>(SB), Z0, Z0
	VMOVDQU64 ctrAdd4<>(SB), Z4

	// Thirty-two blocks at a time: eight vectors in flight hide
	// VAESENC's latency. The last four vectors are stored under K1-K4:
	// whole until the last 257-511 octets, which take one pass too.
	MOVQ  $-1, R10
	XORQ  R12, R12
	MOVQ  $64, R15
	KMOVQ R10, K1
	KMOVQ R10, K2
	KMOVQ R10, K3
	KMOVQ R10, K4

loop32:
	CMPQ DX, $512
	JAE  block32
	TESTQ DX, DX
	JZ   done
	CMPQ DX, $256
	JBE  tail4
	LEAQ -256(DX), R9
	MASK(R9, K1)
	NEXT64(R9)
	MASK(R9, K2)
	NEXT64(R9)
	MASK(R9, K3)
	NEXT64(R9)
	MASK(R9, K4)

block32:
	COUNTERS8
	FIRST8
	ROUND8(Z17)
	ROUND8(Z18)
	ROUND8(Z19)
	ROUND8(Z20)
	ROUND8(Z21)
	ROUND8(Z22)
	ROUND8(Z23)
	ROUND8(Z24)
	ROUND8(Z25)
	CMPQ CX, $10
	JEQ  block32Last
	ROUND8(Z26)
	ROUND8(Z27)
	ROUND8(Z28)
	ROUND8(Z29)

block32Last:
	LAST8
	VPXORD     0(SI), Z6, Z6
	VPXORD     64(SI), Z7, Z7
	VPXORD     128(SI), Z8, Z8
	VPXORD     192(SI), Z9, Z9
	VMOVDQU64  Z6, 0(DI)
	VMOVDQU64  Z7, 64(DI)
	VMOVDQU64  Z8, 128(DI)
	VMOVDQU64  Z9, 192(DI)
	VMOVDQU8.Z 256(SI), K1, Z15
	VPXORD     Z15, Z10, Z10
	VMOVDQU8   Z10, K1, 256(DI)
	VMOVDQU8.Z 320(SI), K2, Z15
	VPXORD     Z15, Z11, Z11
	VMOVDQU8   Z11, K2, 320(DI)
	VMOVDQU8.Z 384(SI), K3, Z15
	VPXORD     Z15, Z12, Z12
	VMOVDQU8   Z12, K3, 384(DI)
	VMOVDQU8.Z 448(SI), K4, Z15
	VPXORD     Z15, Z13, Z13
	VMOVDQU8   Z13, K4, 448(DI)
	ADDQ       $512, SI
	ADDQ       $512, DI
	SUBQ       $512, DX
	JG         loop32
	JMP        done

	// The last 1-256 octets: four vectors under masks.
tail4:
	MOVQ DX, R9
	MASK(R9, K1)
	NEXT64(R9)
	MASK(R9, K2)
	NEXT64(R9)
	MASK(R9, K3)
	NEXT64(R9)
	MASK(R9, K4)
	VPSHUFB Z5, Z0, Z6
	VPADDD  Z4, Z0, Z14
	VPSHUFB Z5, Z14, Z7
	VPADDD  Z4, Z14, Z14
	VPSHUFB Z5, Z14, Z8
	VPADDD  Z4, Z14, Z14
	VPSHUFB Z5, Z14, Z9
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
	JEQ     tail4Last
	ROUND4(Z26, Z6, Z7, Z8, Z9)
	ROUND4(Z27, Z6, Z7, Z8, Z9)
	ROUND4(Z28, Z6, Z7, Z8, Z9)
	ROUND4(Z29, Z6, Z7, Z8, Z9)

tail4Last:
	VAESENCLAST Z31, Z6, Z6
	VAESENCLAST Z31, Z7, Z7
	VAESENCLAST Z31, Z8, Z8
	VAESENCLAST Z31, Z9, Z9
	VMOVDQU8.Z  0(SI), K1, Z15
	VPXORD      Z15, Z6, Z6
	VMOVDQU8    Z6, K1, 0(DI)
	VMOVDQU8.Z  64(SI), K2, Z15
	VPXORD      Z15, Z7, Z7
	VMOVDQU8    Z7, K2, 64(DI)
	VMOVDQU8.Z  128(SI), K3, Z15
	VPXORD      Z15, Z8, Z8
	VMOVDQU8    Z8, K3, 128(DI)
	VMOVDQU8.Z  192(SI), K4, Z15
	VPXORD      Z15, Z9, Z9
	VMOVDQU8    Z9, K4, 192(DI)

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

// FOLD reduces the 256-bit product in X5 (LO), X7 (MI) and X6 (HI) into
// X0, upper lanes zero: LO's low 64 bits, then MI's, are folded into the
// bits above them by multiplying by poly (X30).
#define FOLD \
	VPCLMULQDQ $0x00, X5, X30, X8; \
	VPSHUFD    $0x4e, X5, X5; \
	VPTERNLOGD $0x96, X8, X5, X7; \
	VPCLMULQDQ $0x00, X7, X30, X8; \
	VPSHUFD    $0x4e, X7, X7; \
	VPTERNLOGD $0x96, X8, X7, X6; \
	VMOVDQA64  X6, X0

// REDUCE sums the lanes of LO, MI and HI and folds the sum into X0.
#define REDUCE \
	HSUM(Z5, Y5, X5); \
	HSUM(Z6, Y6, X6); \
	HSUM(Z7, Y7, X7); \
	FOLD

// The data: Z1-Z4 and Z24-Z27; the powers: Z16-Z23; Z31 reverses octets.
#define LOADREV(OFF, Z) \
	VMOVDQU64 OFF(SI), Z; \
	VPSHUFB   Z31, Z, Z

#define MUL8 \
	VPXORQ Z0, Z1, Z1; \
	MULFIRST(Z1, Z16); \
	MULADD(Z2, Z17); \
	MULADD(Z3, Z18); \
	MULADD(Z4, Z19); \
	MULADD(Z24, Z20); \
	MULADD(Z25, Z21); \
	MULADD(Z26, Z22); \
	MULADD(Z27, Z23)

// func ghash(powers *[32 * 16]byte, y *[16]byte, data []byte)
TEXT ·ghash(SB), NOSPLIT, $0-40
	MOVQ      powers+0(FP), AX
	MOVQ      y+8(FP), BX
	MOVQ      data_base+16(FP), SI
	MOVQ      data_len+24(FP), DX
	VMOVDQU   (BX), X0
	TESTQ     DX, DX
	JZ        store
	VMOVDQU64 revMask<>(SB), Z31
	VMOVDQU64 poly<>(SB), X30
	CMPQ      DX, $16
	JBE       one
	MOVQ      $-1, R10
	XORQ      R12, R12
	MOVQ      $64, R15
	CMPQ      DX, $512
	JB        tail
	VMOVDQU64 0(AX), Z16
	VMOVDQU64 64(AX), Z17
	VMOVDQU64 128(AX), Z18
	VMOVDQU64 192(AX), Z19
	VMOVDQU64 256(AX), Z20
	VMOVDQU64 320(AX), Z21
	VMOVDQU64 384(AX), Z22
	VMOVDQU64 448(AX), Z23
	KMOVQ     R10, K1
	KMOVQ     R10, K2
	KMOVQ     R10, K3
	KMOVQ     R10, K4

	// 32 blocks: (y ^ X1)·H^32 ^ X2·H^31 ^ ... ^ X32·H, one reduction.
	// The last four vectors load under K1-K4: whole until the last
	// 17-31 blocks, which take one pass too.
block:
	LOADREV(0, Z1)
	LOADREV(64, Z2)
	LOADREV(128, Z3)
	LOADREV(192, Z4)
	VMOVDQU8.Z 256(SI), K1, Z24
	VMOVDQU8.Z 320(SI), K2, Z25
	VMOVDQU8.Z 384(SI), K3, Z26
	VMOVDQU8.Z 448(SI), K4, Z27
	VPSHUFB    Z31, Z24, Z24
	VPSHUFB    Z31, Z25, Z25
	VPSHUFB    Z31, Z26, Z26
	VPSHUFB    Z31, Z27, Z27
	MUL8
	REDUCE
	ADDQ       $512, SI
	SUBQ       $512, DX
	JLE        store
	CMPQ       DX, $512
	JAE        block

	// The last m < 32 blocks (the last one padded with zeros) meet
	// H^m ... H^1, the table's last m entries, from R14. Vectors past
	// the data load as zeros, and so do their powers.
tail:
	LEAQ  15(DX), R13
	ANDQ  $-16, R13
	MOVQ  AX, R14
	ADDQ  $512, R14
	SUBQ  R13, R14
	CMPQ  DX, $256
	JBE   tail4

	// 17-31 blocks: the powers, then the data's masks, and the pass
	// above.
	LEAQ       -256(R13), R9
	MASK(R9, K1)
	NEXT64(R9)
	MASK(R9, K2)
	NEXT64(R9)
	MASK(R9, K3)
	NEXT64(R9)
	MASK(R9, K4)
	VMOVDQU64  0(R14), Z16
	VMOVDQU64  64(R14), Z17
	VMOVDQU64  128(R14), Z18
	VMOVDQU64  192(R14), Z19
	VMOVDQU8.Z 256(R14), K1, Z20
	VMOVDQU8.Z 320(R14), K2, Z21
	VMOVDQU8.Z 384(R14), K3, Z22
	VMOVDQU8.Z 448(R14), K4, Z23
	LEAQ       -256(DX), R9
	MASK(R9, K1)
	NEXT64(R9)
	MASK(R9, K2)
	NEXT64(R9)
	MASK(R9, K3)
	NEXT64(R9)
	MASK(R9, K4)
	JMP        block

	// 2-16 blocks: four vectors under masks.
tail4:
	MOVQ       DX, R9
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
	MOVQ       R13, R9
	MASK(R9, K1)
	NEXT64(R9)
	MASK(R9, K2)
	NEXT64(R9)
	MASK(R9, K3)
	NEXT64(R9)
	MASK(R9, K4)
	VMOVDQU8.Z 0(R14), K1, Z16
	VMOVDQU8.Z 64(R14), K2, Z17
	VMOVDQU8.Z 128(R14), K3, Z18
	VMOVDQU8.Z 192(R14), K4, Z19
	MULFIRST(Z1, Z16)
	MULADD(Z2, Z17)
	MULADD(Z3, Z18)
	MULADD(Z4, Z19)
	REDUCE
	JMP        store

	// One block (additional data, the lengths): (y ^ X)·H.
one:
	MOVQ       $-1, R10
	BZHIQ      DX, R10, R10
	KMOVQ      R10, K1
	VMOVDQU8.Z (SI), K1, X1
	VPSHUFB    X31, X1, X1
	VPXORQ     X0, X1, X1
	VMOVDQU64  496(AX), X16
	VPCLMULQDQ $0x00, X16, X1, X5
	VPCLMULQDQ $0x11, X16, X1, X6
	VPCLMULQDQ $0x01, X16, X1, X7
	VPCLMULQDQ $0x10, X16, X1, X8
	VPXORQ     X8, X7, X7
	FOLD

store:
	VMOVDQU X0, (BX)
	VZEROUPPER
	RET
