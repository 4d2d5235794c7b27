//go:build race

package cpuidle

const raceEnabled = true
