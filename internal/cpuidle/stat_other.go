//go:build !linux

package cpuidle

import "errors"

func readStat() (Sample, error) {
	return Sample{}, errors.New("cpuidle: idle time is read on Linux only")
}
