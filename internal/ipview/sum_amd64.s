#include "textflag.h"

// Each 64-octet block is two 32-octet vectors; the even and the odd
// 32-bit words of each go to their own 64-bit lanes (zero-extended), so
// four accumulators of four lanes gather the sum without carries.

// SUM2 adds the 32-bit words of Y0 and Y1 to the accumulators Y4-Y7; Y8
// is zero. It destroys Y0 and Y1.
#define SUM2 \
	VPBLENDD $0xAA, Y8, Y0, Y2 \
	VPSRLQ   $32, Y0, Y0 \
	VPBLENDD $0xAA, Y8, Y1, Y3 \
	VPSRLQ   $32, Y1, Y1 \
	VPADDQ   Y2, Y4, Y4 \
	VPADDQ   Y0, Y5, Y5 \
	VPADDQ   Y3, Y6, Y6 \
	VPADDQ   Y1, Y7, Y7

// REDUCE adds the lanes of Y4-Y7 into AX.
#define REDUCE \
	VPADDQ       Y5, Y4, Y4 \
	VPADDQ       Y7, Y6, Y6 \
	VPADDQ       Y6, Y4, Y4 \
	VEXTRACTI128 $1, Y4, X5 \
	VPADDQ       X5, X4, X4 \
	VPSHUFD      $0x4E, X4, X5 \
	VPADDQ       X5, X4, X4 \
	VMOVQ        X4, AX \
	VZEROUPPER

#define ZERO \
	VPXOR Y4, Y4, Y4 \
	VPXOR Y5, Y5, Y5 \
	VPXOR Y6, Y6, Y6 \
	VPXOR Y7, Y7, Y7 \
	VPXOR Y8, Y8, Y8

// func sumAVX2(src *byte, n int) uint64
TEXT ·sumAVX2(SB), NOSPLIT, $0-24
	MOVQ src+0(FP), SI
	MOVQ n+8(FP), CX
	SHRQ $6, CX
	ZERO

sumloop:
	VMOVDQU (SI), Y0
	VMOVDQU 32(SI), Y1
	SUM2
	ADDQ $64, SI
	DECQ CX
	JNZ  sumloop

	REDUCE
	MOVQ AX, ret+16(FP)
	RET

// func copySumAVX2(dst, src *byte, n int) uint64
TEXT ·copySumAVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $6, CX
	ZERO

copyloop:
	VMOVDQU (SI), Y0
	VMOVDQU 32(SI), Y1
	VMOVDQU Y0, (DI)
	VMOVDQU Y1, 32(DI)
	SUM2
	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  copyloop

	REDUCE
	MOVQ AX, ret+24(FP)
	RET
