//go:build !linux

package cpuidle

import "errors"

type statFile struct{}

func openStat() (*statFile, error) {
	return nil, errors.New("cpuidle: idle time is read on Linux only")
}

func (*statFile) read() (Sample, error) { return Sample{}, errors.ErrUnsupported }

func (*statFile) close() {}
