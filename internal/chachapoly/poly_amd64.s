//go:build amd64 && !purego

#include "textflag.h"

// Poly1305 on 8 lanes of 64 bits with AVX-512 IFMA (see poly.go). The
// accumulator's limbs are in Z0-Z2; M44, M42 and the 2^128 bit (2^40 in
// the top limb) in Z31, Z30 and Z29.

// LOADADD adds the 8 blocks at ptr to the accumulator, with the 2^128
// bits in pad: the low and high words of blocks 0-3 and 4-7 are unpacked
// into one vector each (lanes in the order laneBlock gives), then cut
// into limbs.
#define LOADADD(ptr, pad) \
	VMOVDQU64   (ptr), Z3 \
	VMOVDQU64   64(ptr), Z4 \
	VPUNPCKLQDQ Z4, Z3, Z5 \
	VPUNPCKHQDQ Z4, Z3, Z6 \
	VPANDQ      Z31, Z5, Z7 \
	VPSRLQ      $44, Z5, Z8 \
	VPSLLQ      $20, Z6, Z9 \
	VPORQ       Z9, Z8, Z8 \
	VPANDQ      Z31, Z8, Z8 \
	VPSRLQ      $24, Z6, Z9 \
	VPORQ       pad, Z9, Z9 \
	VPADDQ      Z7, Z0, Z0 \
	VPADDQ      Z8, Z1, Z1 \
	VPADDQ      Z9, Z2, Z2

// MUL multiplies the accumulator by the power in b0, b1, b2 (limbs) and
// s1, s2 (20·b1, 20·b2): each limb of the product is the sum of three
// 104-bit products, kept as the sums of their low 52 bits (Z10-Z12) and
// high 52 bits (Z13-Z15, worth 2^8 of the next limb; the top one
// 2^140 ≡ 5·2^10), and then carried into limbs of 44, 44 and 42 bits.
#define MUL(b0, b1, b2, s1, s2) \
	VPXORQ      Z10, Z10, Z10 \
	VPXORQ      Z11, Z11, Z11 \
	VPXORQ      Z12, Z12, Z12 \
	VPXORQ      Z13, Z13, Z13 \
	VPXORQ      Z14, Z14, Z14 \
	VPXORQ      Z15, Z15, Z15 \
	VPMADD52LUQ b0, Z0, Z10 \
	VPMADD52HUQ b0, Z0, Z13 \
	VPMADD52LUQ b1, Z0, Z11 \
	VPMADD52HUQ b1, Z0, Z14 \
	VPMADD52LUQ b2, Z0, Z12 \
	VPMADD52HUQ b2, Z0, Z15 \
	VPMADD52LUQ s2, Z1, Z10 \
	VPMADD52HUQ s2, Z1, Z13 \
	VPMADD52LUQ b0, Z1, Z11 \
	VPMADD52HUQ b0, Z1, Z14 \
	VPMADD52LUQ b1, Z1, Z12 \
	VPMADD52HUQ b1, Z1, Z15 \
	VPMADD52LUQ s1, Z2, Z10 \
	VPMADD52HUQ s1, Z2, Z13 \
	VPMADD52LUQ s2, Z2, Z11 \
	VPMADD52HUQ s2, Z2, Z14 \
	VPMADD52LUQ b0, Z2, Z12 \
	VPMADD52HUQ b0, Z2, Z15 \
	VPSLLQ      $12, Z15, Z16 \
	VPSLLQ      $10, Z15, Z15 \
	VPADDQ      Z16, Z10, Z10 \
	VPADDQ      Z15, Z10, Z10 \
	VPSLLQ      $8, Z13, Z13 \
	VPADDQ      Z13, Z11, Z11 \
	VPSLLQ      $8, Z14, Z14 \
	VPADDQ      Z14, Z12, Z12 \
	VPSRLQ      $44, Z10, Z16 \
	VPANDQ      Z31, Z10, Z0 \
	VPADDQ      Z16, Z11, Z11 \
	VPSRLQ      $44, Z11, Z16 \
	VPANDQ      Z31, Z11, Z1 \
	VPADDQ      Z16, Z12, Z12 \
	VPSRLQ      $42, Z12, Z16 \
	VPANDQ      Z30, Z12, Z2 \
	VPSLLQ      $2, Z16, Z17 \
	VPADDQ      Z16, Z0, Z0 \
	VPADDQ      Z17, Z0, Z0

// HSUM stores the sum of the 8 lanes of Z at off(DI).
#define HSUM(Z, Y, X, off) \
	VEXTRACTI64X4 $1, Z, Y5 \
	VPADDQ        Y5, Y, Y \
	VEXTRACTI128  $1, Y, X5 \
	VPADDQ        X5, X, X \
	VPSHUFD       $0x4e, X, X5 \
	VPADDQ        X5, X, X \
	VMOVQ         X, off(DI)

// func polyRun(acc *[3][8]uint64, front *[128]byte, pad *[8]uint64, mid *byte, midGroups int, last *[128]byte, pw *polyPowers)
TEXT ·polyRun(SB), NOSPLIT, $0-56
	MOVQ acc+0(FP), DI
	MOVQ front+8(FP), SI
	MOVQ pad+16(FP), BX
	MOVQ mid+24(FP), R8
	MOVQ midGroups+32(FP), CX
	MOVQ last+40(FP), R9
	MOVQ pw+48(FP), DX

	MOVQ         $0xfffffffffff, AX
	VPBROADCASTQ AX, Z31
	MOVQ         $0x3ffffffffff, AX
	VPBROADCASTQ AX, Z30
	MOVQ         $0x10000000000, AX
	VPBROADCASTQ AX, Z29
	VMOVDQU64    (BX), Z28

	VMOVDQU64 0(DI), Z0
	VMOVDQU64 64(DI), Z1
	VMOVDQU64 128(DI), Z2

	VPBROADCASTQ 0(DX), Z20
	VPBROADCASTQ 8(DX), Z21
	VPBROADCASTQ 16(DX), Z22
	VPBROADCASTQ 24(DX), Z23
	VPBROADCASTQ 32(DX), Z24

	LOADADD(SI, Z28)
	MUL(Z20, Z21, Z22, Z23, Z24)
	TESTQ CX, CX
	JZ    last

loop:
	LOADADD(R8, Z29)
	MUL(Z20, Z21, Z22, Z23, Z24)
	ADDQ $128, R8
	DECQ CX
	JNZ  loop

last:
	LOADADD(R9, Z29)
	VMOVDQU64 40(DX), Z20
	VMOVDQU64 104(DX), Z21
	VMOVDQU64 168(DX), Z22
	VMOVDQU64 232(DX), Z23
	VMOVDQU64 296(DX), Z24
	MUL(Z20, Z21, Z22, Z23, Z24)

	HSUM(Z0, Y0, X0, 0)
	HSUM(Z1, Y1, X1, 64)
	HSUM(Z2, Y2, X2, 128)
	VZEROUPPER
	RET

// func polyMulLanes(a, b *[3][8]uint64)
TEXT ·polyMulLanes(SB), NOSPLIT, $0-16
	MOVQ a+0(FP), DI
	MOVQ b+8(FP), SI

	MOVQ         $0xfffffffffff, AX
	VPBROADCASTQ AX, Z31
	MOVQ         $0x3ffffffffff, AX
	VPBROADCASTQ AX, Z30

	VMOVDQU64 0(DI), Z0
	VMOVDQU64 64(DI), Z1
	VMOVDQU64 128(DI), Z2
	VMOVDQU64 0(SI), Z20
	VMOVDQU64 64(SI), Z21
	VMOVDQU64 128(SI), Z22

	// s1 = 20·b1, s2 = 20·b2.
	VPSLLQ $4, Z21, Z23
	VPSLLQ $2, Z21, Z25
	VPADDQ Z25, Z23, Z23
	VPSLLQ $4, Z22, Z24
	VPSLLQ $2, Z22, Z25
	VPADDQ Z25, Z24, Z24

	MUL(Z20, Z21, Z22, Z23, Z24)

	VMOVDQU64 Z0, 0(DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z2, 128(DI)
	VZEROUPPER
	RET
