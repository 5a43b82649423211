package smi

import (
	"encoding/json"
	"testing"
)

func TestWeight(t *testing.T) {
	for _, c := range []struct {
		in       string
		quantity bool
		int, mil int64
		bad      bool
	}{
		{in: `50`, int: 50},
		{in: `"500m"`, quantity: true, mil: 500},
		{in: `"2"`, quantity: true, mil: 2000},
		{in: `1.5`, bad: true},
		{in: `"lots"`, bad: true},
		{in: `true`, bad: true},
	} {
		var w Weight
		err := json.Unmarshal([]byte(c.in), &w)
		if c.bad {
			if err == nil {
				t.Errorf("%s accepted", c.in)
			}
			continue
		}
		if err != nil || w.IsQuantity != c.quantity || w.Int != c.int || w.Milli != c.mil {
			t.Errorf("%s: %+v %v", c.in, w, err)
		}
		out, _ := json.Marshal(w)
		if string(out) != c.in {
			t.Errorf("%s round-trips to %s", c.in, out)
		}
	}
	s := TrafficSplitSpec{Backends: []TrafficSplitBackend{{Weight: Weight{Int: 1}}, {Weight: Weight{IsQuantity: true, Milli: 250}}}}
	if got := s.Normalize(); got[0] != 1000 || got[1] != 250 {
		t.Errorf("mixed normalise = %v", got)
	}
}
