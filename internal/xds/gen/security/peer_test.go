package security

import (
	"testing"
)

func pa(name, ns, spec string) string {
	return "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec: " + spec + "\n"
}

// TestPeerModePrecedence: workload over namespace over mesh, port-level over all, UNSET
// inherits, PERMISSIVE by default, the oldest policy of a level wins.
func TestPeerModePrecedence(t *testing.T) {
	tests := []struct {
		name            string
		yaml            string
		p9080, p0, p700 Mode
	}{
		{"none", ``, Permissive, Permissive, Permissive},
		{"mesh strict", pa("default", "istio-system", "{mtls: {mode: STRICT}}"), Strict, Strict, Strict},
		{"namespace over mesh", pa("default", "istio-system", "{mtls: {mode: STRICT}}") + pa("ns", "default", "{mtls: {mode: DISABLE}}"), Disable, Disable, Disable},
		{"namespace unset inherits", pa("default", "istio-system", "{mtls: {mode: STRICT}}") + pa("ns", "default", "{mtls: {}}"), Strict, Strict, Strict},
		{"namespace without mtls inherits", pa("default", "istio-system", "{mtls: {mode: DISABLE}}") + pa("ns", "default", "{}"), Disable, Disable, Disable},
		{"workload over namespace", pa("ns", "default", "{mtls: {mode: PERMISSIVE}}") + pa("wl", "default", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}}"), Strict, Strict, Strict},
		{"other workload", pa("ns", "default", "{mtls: {mode: DISABLE}}") + pa("wl", "default", "{selector: {matchLabels: {app: ratings}}, mtls: {mode: STRICT}}"), Disable, Disable, Disable},
		{"port level", pa("wl", "default", "{selector: {matchLabels: {app: reviews, version: v1}}, mtls: {mode: STRICT}, portLevelMtls: {9080: {mode: DISABLE}}}"), Disable, Strict, Strict},
		{"port level unset inherits the workload", pa("ns", "default", "{mtls: {mode: DISABLE}}") +
			pa("wl", "default", "{selector: {matchLabels: {app: reviews}}, portLevelMtls: {9080: {mode: UNSET}, 700: {mode: STRICT}}}"), Disable, Disable, Strict},
		{"oldest namespace policy wins", pa("b-first", "default", "{mtls: {mode: STRICT}}") + pa("a-second", "default", "{mtls: {mode: DISABLE}}"), Strict, Strict, Strict},
		{"root namespace selector ignored", pa("wl", "istio-system", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}}"), Permissive, Permissive, Permissive},
		{"other namespace ignored", pa("ns", "other", "{mtls: {mode: STRICT}}") + pa("wl", "other", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}}"), Permissive, Permissive, Permissive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := bookinfo(tc.yaml)
			for _, c := range []struct {
				port uint32
				want Mode
			}{{9080, tc.p9080}, {0, tc.p0}, {700, tc.p700}} {
				if got := PeerMode(s, reviews(), c.port); got != c.want {
					t.Errorf("port %d: %v, want %v", c.port, got, c.want)
				}
				if got := WorkloadPeerMode(s, "default", map[string]string{"app": "reviews", "version": "v1"}, c.port); got != c.want {
					t.Errorf("port %d by labels: %v, want %v", c.port, got, c.want)
				}
			}
		})
	}
}
