package lb

import (
	"math"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

const (
	// DefaultMinRingSize and DefaultMaxRingSize are ring_hash_lb_config's
	// minimum_ring_size and maximum_ring_size defaults; MaxRingSize is the largest
	// maximum_ring_size Envoy accepts.
	DefaultMinRingSize = 1024
	DefaultMaxRingSize = 8 * 1024 * 1024
	MaxRingSize        = 8 * 1024 * 1024
)

// ringHash is RING_HASH (ketama-style consistent hashing). Each host owns a number of
// points proportional to its weight, at xxHash64(key + "_" + i) as in Envoy, so a
// weft proxy and an Envoy map the same request hash to the same host. A request
// goes to the first point at or after its hash; an unavailable or excluded host passes
// the request on to the next point, exactly as if the ring had been built without it.
type ringHash struct {
	hosts []Host
	ring  []ringPoint // sorted by hash
	rng   *rng
}

type ringPoint struct {
	hash uint64
	idx  uint32
}

var (
	_ Balancer  = (*ringHash)(nil)
	_ anyPicker = (*ringHash)(nil)
	_ hashed    = (*ringHash)(nil)
)

// NewRingHash returns a RING_HASH balancer over hosts (copied). 0 sizes mean the
// defaults; sizes are clamped to [1, MaxRingSize] and minRingSize to maxRingSize.
// Requests without a hash (Context.HasHash false) land on a random point.
func NewRingHash(hosts []Host, minRingSize, maxRingSize uint64) Balancer {
	return newRingHash(hosts, minRingSize, maxRingSize, nil)
}

func newRingHash(hosts []Host, minSize, maxSize uint64, r *rng) *ringHash {
	if minSize == 0 {
		minSize = DefaultMinRingSize
	}
	if maxSize == 0 {
		maxSize = DefaultMaxRingSize
	}
	maxSize = min(maxSize, MaxRingSize)
	minSize = min(minSize, maxSize)
	b := &ringHash{hosts: copyHosts(hosts), rng: r}
	if len(b.hosts) == 0 {
		return b
	}
	var sum uint64
	minW := uint64(math.MaxUint64)
	for _, h := range b.hosts {
		w := weightOf(h)
		sum += w
		minW = min(minW, w)
	}
	// Scale so the lightest host gets at least one point and the ring at least minSize
	// points, but never more than maxSize points.
	minNorm := float64(minW) / float64(sum)
	scale := math.Min(math.Ceil(minNorm*float64(minSize))/minNorm, float64(maxSize))
	b.ring = make([]ringPoint, 0, int(scale)+len(b.hosts))
	var target float64
	buf := make([]byte, 0, 64)
	for i, h := range b.hosts {
		// Points are added while the ring is below the running target, so each host's
		// count and its point keys (key_0, key_1, ...) are what Envoy computes.
		target += float64(weightOf(h)) / float64(sum) * scale
		buf = append(buf[:0], h.Key()...)
		buf = append(buf, '_')
		base := len(buf)
		for k := 0; float64(len(b.ring)) < target; k++ {
			buf = strconv.AppendInt(buf[:base], int64(k), 10)
			b.ring = append(b.ring, ringPoint{hash: xxhash.Sum64(buf), idx: uint32(i)})
		}
	}
	slices.SortFunc(b.ring, func(x, y ringPoint) int {
		switch {
		case x.hash < y.hash:
			return -1
		case x.hash > y.hash:
			return 1
		}
		return int(x.idx) - int(y.idx)
	})
	return b
}

func (b *ringHash) hashesRequests() {}

func (b *ringHash) Pick(ctx *Context) Host    { return b.pick(ctx, false) }
func (b *ringHash) pickAny(ctx *Context) Host { return b.pick(ctx, true) }

func (b *ringHash) pick(ctx *Context, anyHost bool) Host {
	n := len(b.ring)
	if n == 0 {
		return nil
	}
	var h uint64
	if ctx != nil && ctx.HasHash {
		h = ctx.Hash
	} else {
		h = b.rng.Uint64()
	}
	// First point with hash >= h, wrapping to the start.
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if b.ring[m].hash < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == n {
		lo = 0
	}
	f := newFilter(ctx, anyHost)
	prev := uint32(math.MaxUint32)
	idx := b.ring[lo].idx
	for range probeLimit(len(b.hosts), n) {
		idx = b.ring[lo].idx
		if idx != prev {
			if f.accept(b.hosts[idx]) {
				return b.hosts[idx]
			}
			prev = idx
		}
		if lo++; lo == n {
			lo = 0
		}
	}
	return f.scan(b.hosts, int(idx))
}
