//go:build !linux

package wgconn

import "net"

func newBatchReader(_ *net.UDPConn, fallback batchReader) batchReader { return fallback }
