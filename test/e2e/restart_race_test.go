//go:build e2e && race

package e2e

// raceEnabled: the processes this tier starts are built with -race too.
const raceEnabled = true
