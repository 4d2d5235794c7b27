//go:build !amd64 || purego

package chachapoly

// setVector does nothing: there is no vector code here.
func setVector(bool) (restore func()) { return func() {} }
