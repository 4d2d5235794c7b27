//go:build race

package wgconn

const raceEnabled = true
