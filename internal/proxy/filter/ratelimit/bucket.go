package ratelimit

import (
	"sync/atomic"
	"time"
)

// bucket is a token bucket shared by every request of one compiled config. Its whole
// state is one 64-bit word, updated by compare-and-swap: the high 32 bits are the index
// of the last fill interval applied (counted from start), the low 32 bits the tokens
// left. Refill is lazy: a request adds the fills of the intervals elapsed since, which
// gives the same tokens as Envoy's fill timer without a timer per bucket.
type bucket struct {
	state    atomic.Uint64
	start    time.Time
	interval time.Duration
	max      uint32
	perFill  uint32
}

func newBucket(max, perFill uint32, interval time.Duration) *bucket {
	b := &bucket{start: time.Now(), interval: interval, max: max, perFill: perFill}
	b.state.Store(uint64(max)) // a bucket starts full, as Envoy's does
	return b
}

// take consumes one token at elapsed time now (since b.start). It reports whether a
// token was there, the tokens left, and the time until the next fill.
func (b *bucket) take(now time.Duration) (ok bool, remaining uint32, reset time.Duration) {
	epoch := uint32(now / b.interval) // wraps after 2^32 intervals; differences stay right
	reset = b.interval - now%b.interval
	for {
		old := b.state.Load()
		last, tokens := uint32(old>>32), uint32(old)
		// A caller that read the clock just before another advanced the epoch sees a
		// negative difference: it applies no fill and keeps the newer epoch.
		if d := int32(epoch - last); d > 0 {
			add := uint64(d) * uint64(b.perFill)
			if t := uint64(tokens) + add; t < uint64(b.max) {
				tokens = uint32(t)
			} else {
				tokens = b.max
			}
			last = epoch
		}
		if tokens == 0 {
			return false, 0, reset
		}
		if b.state.CompareAndSwap(old, uint64(last)<<32|uint64(tokens-1)) {
			return true, tokens - 1, reset
		}
	}
}

func (b *bucket) takeNow() (bool, uint32, time.Duration) { return b.take(time.Since(b.start)) }
