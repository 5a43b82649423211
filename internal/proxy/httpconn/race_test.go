//go:build race

package httpconn

// raceEnabled: the race detector changes what escapes, and so allocation counts.
const raceEnabled = true
