package listener

import (
	"bytes"
	"encoding/json"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/node"
	"github.com/weft-mesh/weft/internal/snapshot"
	"github.com/weft-mesh/weft/internal/xds/gen/listener/simtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenFiles is the Bookinfo configuration the golden files are generated from.
var goldenFiles = []string{
	"destination-rule-all.yaml", "bookinfo-gateway.yaml",
	"virtual-service-reviews-test-v2.yaml", "virtual-service-ratings-test-delay.yaml",
}

// render is stable JSON of a proxy's listeners and routes: protojson (which varies its
// whitespace on purpose) re-indented by encoding/json.
func render(t *testing.T, ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration) []byte {
	t.Helper()
	doc := struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
	}{}
	mo := protojson.MarshalOptions{}
	for _, l := range ls {
		b, err := mo.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		doc.Listeners = append(doc.Listeners, b)
	}
	for _, rc := range rcs {
		b, err := mo.Marshal(rc)
		if err != nil {
			t.Fatal(err)
		}
		doc.Routes = append(doc.Routes, b)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestGolden(t *testing.T) {
	s := simtest.BookinfoFiles(goldenFiles...)
	for _, tc := range []struct {
		file string
		p    *node.Proxy
	}{
		{"bookinfo-productpage-explicit.json", simtest.SidecarProxy("productpage-v1", node.Explicit)},
		{"bookinfo-productpage-redirect.json", simtest.SidecarProxy("productpage-v1", node.Redirect)},
		{"bookinfo-ingressgateway.json", simtest.GatewayProxy(node.Explicit)},
		{"bookinfo-grpc-client.json", simtest.GRPCProxy("default")},
	} {
		t.Run(tc.file, func(t *testing.T) {
			ls, rcs := generate(t, s, tc.p)
			got := render(t, ls, rcs)
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from the generated config; run go test -update and review the diff", path)
			}
		})
	}
}

// TestDeterministic: the same mesh yields the same bytes, whatever the order its
// pieces arrive in (DESIGN: pushes happen only on real change).
func TestDeterministic(t *testing.T) {
	base := simtest.BookinfoInput(loadAll(goldenFiles)...)
	proxies := []*node.Proxy{
		simtest.SidecarProxy("productpage-v1", node.Explicit), simtest.SidecarProxy("reviews-v2", node.Redirect),
		simtest.GatewayProxy(node.Redirect), simtest.GRPCProxy("default"),
	}
	marshal := func(s *snapshot.Snapshot, p *node.Proxy) []byte {
		ls, rcs := generate(t, s, p)
		var buf []byte
		mo := proto.MarshalOptions{Deterministic: true}
		for _, l := range ls {
			b, err := mo.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			buf = append(buf, b...)
		}
		for _, rc := range rcs {
			b, err := mo.Marshal(rc)
			if err != nil {
				t.Fatal(err)
			}
			buf = append(buf, b...)
		}
		return buf
	}
	want := map[string][]byte{}
	for _, p := range proxies {
		want[p.ID] = marshal(snapshot.Build(base), p)
		if !bytes.Equal(want[p.ID], marshal(snapshot.Build(base), p)) {
			t.Fatalf("%s: two generations differ", p.ID)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		in := base
		in.Services = shuffled(rng, base.Services)
		in.Instances = shuffled(rng, base.Instances)
		in.VirtualServices = shuffled(rng, base.VirtualServices)
		in.DestinationRules = shuffled(rng, base.DestinationRules)
		in.Gateways = shuffled(rng, base.Gateways)
		s := snapshot.Build(in)
		for _, p := range proxies {
			if !bytes.Equal(want[p.ID], marshal(s, p)) {
				t.Fatalf("shuffle %d: %s: output depends on input order", i, p.ID)
			}
		}
	}
}

func shuffled[T any](rng *rand.Rand, in []T) []T {
	out := append([]T(nil), in...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func loadAll(files []string) []simtest.Configs {
	var out []simtest.Configs
	for _, f := range files {
		out = append(out, simtest.MustLoad(f))
	}
	return out
}
