//go:build !amd64

package ipview

// setVector does nothing: there is no vector loop here.
func setVector(bool) (restore func()) { return func() {} }
