//go:build !amd64

package ipview

// blockSize is the run of octets addBlocks takes at once.
const blockSize = 8

// addBlocks returns the sum of src[:n], copying it to dst when dst is not
// nil.
func addBlocks(dst, src []byte, n int) uint64 {
	if dst != nil {
		copy(dst, src[:n])
	}
	return addTail(src[:n])
}
