//go:build amd64 && !purego

#include "textflag.h"

// The lane numbers 0-15, added to the block counter.
DATA lanes<>+0x00(SB)/8, $0x0000000100000000
DATA lanes<>+0x08(SB)/8, $0x0000000300000002
DATA lanes<>+0x10(SB)/8, $0x0000000500000004
DATA lanes<>+0x18(SB)/8, $0x0000000700000006
DATA lanes<>+0x20(SB)/8, $0x0000000900000008
DATA lanes<>+0x28(SB)/8, $0x0000000b0000000a
DATA lanes<>+0x30(SB)/8, $0x0000000d0000000c
DATA lanes<>+0x38(SB)/8, $0x0000000f0000000e
GLOBL lanes<>(SB), RODATA|NOPTR, $64

// QR4 runs four quarter rounds side by side, each on one word of
// sixteen blocks per register.
#define QR4(a0, b0, c0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3, d3) \
	VPADDD b0, a0, a0; \
	VPADDD b1, a1, a1; \
	VPADDD b2, a2, a2; \
	VPADDD b3, a3, a3; \
	VPXORD a0, d0, d0; \
	VPXORD a1, d1, d1; \
	VPXORD a2, d2, d2; \
	VPXORD a3, d3, d3; \
	VPROLD $16, d0, d0; \
	VPROLD $16, d1, d1; \
	VPROLD $16, d2, d2; \
	VPROLD $16, d3, d3; \
	VPADDD d0, c0, c0; \
	VPADDD d1, c1, c1; \
	VPADDD d2, c2, c2; \
	VPADDD d3, c3, c3; \
	VPXORD c0, b0, b0; \
	VPXORD c1, b1, b1; \
	VPXORD c2, b2, b2; \
	VPXORD c3, b3, b3; \
	VPROLD $12, b0, b0; \
	VPROLD $12, b1, b1; \
	VPROLD $12, b2, b2; \
	VPROLD $12, b3, b3; \
	VPADDD b0, a0, a0; \
	VPADDD b1, a1, a1; \
	VPADDD b2, a2, a2; \
	VPADDD b3, a3, a3; \
	VPXORD a0, d0, d0; \
	VPXORD a1, d1, d1; \
	VPXORD a2, d2, d2; \
	VPXORD a3, d3, d3; \
	VPROLD $8, d0, d0; \
	VPROLD $8, d1, d1; \
	VPROLD $8, d2, d2; \
	VPROLD $8, d3, d3; \
	VPADDD d0, c0, c0; \
	VPADDD d1, c1, c1; \
	VPADDD d2, c2, c2; \
	VPADDD d3, c3, c3; \
	VPXORD c0, b0, b0; \
	VPXORD c1, b1, b1; \
	VPXORD c2, b2, b2; \
	VPXORD c3, b3, b3; \
	VPROLD $7, b0, b0; \
	VPROLD $7, b1, b1; \
	VPROLD $7, b2, b2; \
	VPROLD $7, b3, b3

// TRANSPOSE4 turns words 4g ... 4g+3 of sixteen blocks (A-D) into, for
// each 128-bit lane k, those four words of block 4k (A), 4k+1 (B),
// 4k+2 (C) and 4k+3 (D).
#define TRANSPOSE4(A, B, C, D) \
	VPUNPCKLDQ  B, A, Z18; \
	VPUNPCKHDQ  B, A, Z19; \
	VPUNPCKLDQ  D, C, Z20; \
	VPUNPCKHDQ  D, C, Z21; \
	VPUNPCKLQDQ Z20, Z18, A; \
	VPUNPCKHQDQ Z20, Z18, B; \
	VPUNPCKLQDQ Z21, Z19, C; \
	VPUNPCKHQDQ Z21, Z19, D

// STORE4 gathers lane k of A-D (words 0-3, 4-7, 8-11, 12-15 of one
// block) into block 4k+r and stores it at Ok.
#define STORE4(A, B, C, D, O0, O1, O2, O3) \
	VSHUFI32X4 $0x44, B, A, Z18; \
	VSHUFI32X4 $0xee, B, A, Z19; \
	VSHUFI32X4 $0x44, D, C, Z20; \
	VSHUFI32X4 $0xee, D, C, Z21; \
	VSHUFI32X4 $0x88, Z20, Z18, Z22; \
	VSHUFI32X4 $0xdd, Z20, Z18, Z23; \
	VSHUFI32X4 $0x88, Z21, Z19, Z24; \
	VSHUFI32X4 $0xdd, Z21, Z19, Z25; \
	VMOVDQU64  Z22, O0(DI); \
	VMOVDQU64  Z23, O1(DI); \
	VMOVDQU64  Z24, O2(DI); \
	VMOVDQU64  Z25, O3(DI)

// func blocks(st *[16]uint32, ks *[batch]byte)
TEXT ·blocks(SB), NOSPLIT, $0-16
	MOVQ st+0(FP), AX
	MOVQ ks+8(FP), DI
	VPBROADCASTD 0(AX), Z0
	VPBROADCASTD 4(AX), Z1
	VPBROADCASTD 8(AX), Z2
	VPBROADCASTD 12(AX), Z3
	VPBROADCASTD 16(AX), Z4
	VPBROADCASTD 20(AX), Z5
	VPBROADCASTD 24(AX), Z6
	VPBROADCASTD 28(AX), Z7
	VPBROADCASTD 32(AX), Z8
	VPBROADCASTD 36(AX), Z9
	VPBROADCASTD 40(AX), Z10
	VPBROADCASTD 44(AX), Z11
	VPBROADCASTD 48(AX), Z12
	VPBROADCASTD 52(AX), Z13
	VPBROADCASTD 56(AX), Z14
	VPBROADCASTD 60(AX), Z15
	VPADDD       lanes<>(SB), Z12, Z12
	VMOVDQA64    Z12, Z16
	MOVQ         $10, CX

doubleRound:
	QR4(Z0, Z4, Z8, Z12, Z1, Z5, Z9, Z13, Z2, Z6, Z10, Z14, Z3, Z7, Z11, Z15)
	QR4(Z0, Z5, Z10, Z15, Z1, Z6, Z11, Z12, Z2, Z7, Z8, Z13, Z3, Z4, Z9, Z14)
	DECQ CX
	JNZ  doubleRound

	// The input added back in.
	VPBROADCASTD 0(AX), Z17
	VPADDD       Z17, Z0, Z0
	VPBROADCASTD 4(AX), Z17
	VPADDD       Z17, Z1, Z1
	VPBROADCASTD 8(AX), Z17
	VPADDD       Z17, Z2, Z2
	VPBROADCASTD 12(AX), Z17
	VPADDD       Z17, Z3, Z3
	VPBROADCASTD 16(AX), Z17
	VPADDD       Z17, Z4, Z4
	VPBROADCASTD 20(AX), Z17
	VPADDD       Z17, Z5, Z5
	VPBROADCASTD 24(AX), Z17
	VPADDD       Z17, Z6, Z6
	VPBROADCASTD 28(AX), Z17
	VPADDD       Z17, Z7, Z7
	VPBROADCASTD 32(AX), Z17
	VPADDD       Z17, Z8, Z8
	VPBROADCASTD 36(AX), Z17
	VPADDD       Z17, Z9, Z9
	VPBROADCASTD 40(AX), Z17
	VPADDD       Z17, Z10, Z10
	VPBROADCASTD 44(AX), Z17
	VPADDD       Z17, Z11, Z11
	VPADDD       Z16, Z12, Z12
	VPBROADCASTD 52(AX), Z17
	VPADDD       Z17, Z13, Z13
	VPBROADCASTD 56(AX), Z17
	VPADDD       Z17, Z14, Z14
	VPBROADCASTD 60(AX), Z17
	VPADDD       Z17, Z15, Z15

	TRANSPOSE4(Z0, Z1, Z2, Z3)
	TRANSPOSE4(Z4, Z5, Z6, Z7)
	TRANSPOSE4(Z8, Z9, Z10, Z11)
	TRANSPOSE4(Z12, Z13, Z14, Z15)
	STORE4(Z0, Z4, Z8, Z12, 0, 256, 512, 768)
	STORE4(Z1, Z5, Z9, Z13, 64, 320, 576, 832)
	STORE4(Z2, Z6, Z10, Z14, 128, 384, 640, 896)
	STORE4(Z3, Z7, Z11, Z15, 192, 448, 704, 960)
	VZEROUPPER
	RET
