// Package smi holds the Service Mesh Interface TrafficSplit type (split.smi-spec.io
// v1alpha1..v1alpha4). No upstream Go module is vendored for SMI, so this mirrors the
// published spec: a root service and weighted backends.
package smi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"k8s.io/apimachinery/pkg/api/resource"
)

// TrafficSplitSpec is the spec of a TrafficSplit.
type TrafficSplitSpec struct {
	// Service is the root service clients address (an FQDN or a name in the same namespace).
	Service string `json:"service"`
	// Backends share the root service's traffic in proportion to their weights.
	Backends []TrafficSplitBackend `json:"backends"`
	// Matches (v1alpha3+) restricts the split to requests matching the referenced route groups.
	Matches []TypedLocalObjectReference `json:"matches,omitempty"`
}

// TrafficSplitBackend is one weighted destination.
type TrafficSplitBackend struct {
	Service string `json:"service"`
	Weight  Weight `json:"weight"`
}

// TypedLocalObjectReference points at an HTTPRouteGroup or TCPRoute in the same namespace.
type TypedLocalObjectReference struct {
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	APIGroup string `json:"apiGroup,omitempty"`
}

// Weight is a backend weight. v1alpha2+ write integers; v1alpha1 wrote Kubernetes quantities
// ("500m", "1"). Weights are relative within one split, so Normalize scales every backend
// of a split the same way.
type Weight struct {
	// Int is the integer form (valid when !IsQuantity).
	Int int64
	// Milli is the quantity in thousandths (valid when IsQuantity).
	Milli int64
	// IsQuantity records that the document used the string (quantity) form.
	IsQuantity bool
	// Raw is the value as written, for messages.
	Raw string
}

// UnmarshalJSON accepts a JSON integer or a quantity string.
func (w *Weight) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*w = Weight{Raw: string(b)}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		q, err := resource.ParseQuantity(s)
		if err != nil {
			return fmt.Errorf("weight %q is neither an integer nor a quantity: %w", s, err)
		}
		w.IsQuantity, w.Raw = true, s
		w.Milli = q.MilliValue()
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("weight must be an integer or a quantity string: %w", err)
	}
	if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return fmt.Errorf("weight %s must be an integer", b)
	}
	w.Int = int64(f)
	return nil
}

// MarshalJSON writes the form that was read.
func (w Weight) MarshalJSON() ([]byte, error) {
	if w.IsQuantity {
		return json.Marshal(w.Raw)
	}
	return []byte(strconv.FormatInt(w.Int, 10)), nil
}

// Normalize returns the backends' weights on one common scale: integers as written when no
// backend used the quantity form, otherwise every weight in thousandths (an integer n counts
// as the quantity "n").
func (s *TrafficSplitSpec) Normalize() []int64 {
	quantity := false
	for _, b := range s.Backends {
		quantity = quantity || b.Weight.IsQuantity
	}
	out := make([]int64, len(s.Backends))
	for i, b := range s.Backends {
		switch {
		case !quantity:
			out[i] = b.Weight.Int
		case b.Weight.IsQuantity:
			out[i] = b.Weight.Milli
		default:
			out[i] = b.Weight.Int * 1000
		}
	}
	return out
}
