//go:build amd64 && !purego

package chachapoly

// setVector turns the vector code off (where the CPU has it, it stays on
// for true) and returns what restores it.
func setVector(on bool) (restore func()) {
	was := accelerated
	accelerated = was && on
	return func() { accelerated = was }
}
