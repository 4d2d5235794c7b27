package cpuidle

import "os"

func readStat() (Sample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return Sample{}, err
	}
	return ParseStat(b)
}
