//go:build !race

package wgconn

const raceEnabled = false
