package bootstrap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func TestLoadYAMLAndJSONAgree(t *testing.T) {
	y, err := Load("testdata/static.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j, err := Load("testdata/static.json")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(y, j) {
		t.Fatal("static.yaml and static.json differ")
	}
	if err := Validate(y); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	sr := y.GetStaticResources()
	if len(sr.GetListeners()) != 2 || len(sr.GetClusters()) != 1 || len(sr.GetSecrets()) != 1 {
		t.Fatalf("static resources: %d listeners %d clusters %d secrets", len(sr.GetListeners()), len(sr.GetClusters()), len(sr.GetSecrets()))
	}
	var hcm hcmv3.HttpConnectionManager
	if err := sr.GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	if got := strings.Join(names, ","); got != "envoy.filters.http.fault,envoy.filters.http.cors,envoy.filters.http.local_ratelimit,envoy.filters.http.rbac,envoy.filters.http.jwt_authn,envoy.filters.http.router" {
		t.Errorf("http filters = %s", got)
	}
	var utc tlsv3.UpstreamTlsContext
	if err := sr.GetClusters()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&utc); err != nil || utc.GetSni() != "reviews.default.svc.cluster.local" {
		t.Errorf("cluster TLS = %v, %v", utc.GetSni(), err)
	}
	if got := sr.GetSecrets()[0].GetTlsCertificate().GetPrivateKey().GetFilename(); got != "/etc/certs/key.pem" {
		t.Errorf("secret key file = %q", got)
	}
	if _, _, _, ok, err := XDS(y); ok || err != nil {
		t.Errorf("XDS on a static bootstrap = ok %v, %v", ok, err)
	}
}

// TestParseSniffsFormat: without a telling extension the content decides.
func TestParseSniffsFormat(t *testing.T) {
	for _, f := range []string{"testdata/static.yaml", "testdata/static.json"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Parse(data, "bootstrap")
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if b.GetNode().GetCluster() != "reviews" {
			t.Errorf("%s: node.cluster = %q", f, b.GetNode().GetCluster())
		}
	}
	b, err := Parse(nil, "empty.yaml")
	if err != nil || !proto.Equal(b, &bootstrapv3.Bootstrap{}) {
		t.Errorf("empty file = %v, %v", b, err)
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Load("testdata/bad_field.yaml"); err == nil ||
		!strings.Contains(err.Error(), `bootstrap "testdata/bad_field.yaml": static_resources.clusters[0].conect_timeout: unknown field "conect_timeout"`) {
		t.Errorf("misspelled field: %v", err)
	}
	if _, err := Load("testdata/missing.yaml"); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	tests := []struct {
		name, file, data string
		want             []string
	}{
		{
			"json misspelled field", "b.json",
			"{\n  \"node\": {\"id\": \"a\"},\n  \"static_resources\": {\"listeners\": [{\"name\": \"l\", \"adress\": {}}]}\n}",
			[]string{`bootstrap "b.json": static_resources.listeners[0].adress: unknown field "adress"`},
		},
		{
			"bad enum", "b.yaml",
			"static_resources:\n  clusters:\n  - name: c\n    type: STATICC\n",
			[]string{`bootstrap "b.yaml": static_resources.clusters[0].type:`, "STATICC"},
		},
		{
			"unregistered typed_config", "b.yaml",
			"static_resources:\n  listeners:\n  - name: l\n    filter_chains:\n    - filters:\n      - name: x\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy\n",
			[]string{`bootstrap "b.yaml": static_resources.listeners[0].filter_chains[0].filters[0].typed_config`, "redis_proxy"},
		},
		{
			"misspelled field inside typed_config", "b.yaml",
			"static_resources:\n  listeners:\n  - name: l\n    filter_chains:\n    - filters:\n      - name: x\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefx: t\n",
			[]string{`static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefx: unknown field "stat_prefx"`},
		},
		{
			"yaml syntax", "b.yaml",
			"node:\n  id: a\n bad: [\n",
			[]string{`bootstrap "b.yaml": `, "line"},
		},
		{
			"json syntax", "b.json",
			"{\n  \"node\": {\"id\": \"a\",}\n}",
			[]string{`bootstrap "b.json": line 2 column`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data), tt.file)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestJSONPathAt(t *testing.T) {
	js := []byte(`{"a":{"b":[1,{"c":"x"}]},"d":"\"q"}`)
	tests := []struct {
		at   string // substring whose first byte is the offset
		want string
	}{
		{`"a"`, "a"},
		{`{"b"`, "a"},
		{`"b"`, "a.b"},
		{`[1`, "a.b"},
		{`1,`, "a.b[0]"},
		{`{"c"`, "a.b[1]"},
		{`"c"`, "a.b[1].c"},
		{`"x"`, "a.b[1].c"},
		{`"d"`, "d"},
		{`"\"q"`, "d"},
	}
	for _, tt := range tests {
		off := strings.Index(string(js), tt.at)
		if got := jsonPathAt(js, off); got != tt.want {
			t.Errorf("at %s (%d): %q, want %q", tt.at, off, got, tt.want)
		}
	}
	if got := jsonPathAt(js, 3); got != "" {
		t.Errorf("inside a key: %q", got)
	}
}

func TestValidate(t *testing.T) {
	valid, err := Load("testdata/ads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(valid); err != nil {
		t.Fatalf("ads.yaml: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(b *bootstrapv3.Bootstrap)
		want   []string
	}{
		{"node id", func(b *bootstrapv3.Bootstrap) { b.Node.Id = "" }, []string{"node.id: required when dynamic_resources is set"}},
		{"api type", func(b *bootstrapv3.Bootstrap) { b.DynamicResources.AdsConfig.ApiType = 0 /* REST_LEGACY */ }, []string{"dynamic_resources.ads_config.api_type: DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE not supported"}},
		{"ads cluster missing", func(b *bootstrapv3.Bootstrap) { b.StaticResources.Clusters[0].Name = "other" }, []string{`dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: cluster "xds-grpc" is not in static_resources.clusters`}},
		{"no grpc service", func(b *bootstrapv3.Bootstrap) { b.DynamicResources.AdsConfig.GrpcServices = nil }, []string{"dynamic_resources.ads_config.grpc_services: one gRPC service required"}},
		{"lds not ads", func(b *bootstrapv3.Bootstrap) {
			b.DynamicResources.LdsConfig = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: "/etc/lds.yaml"}}}
		}, []string{"dynamic_resources.lds_config: only ads is supported"}},
		{"cds by ads without ads_config", func(b *bootstrapv3.Bootstrap) { b.DynamicResources.AdsConfig = nil }, []string{"dynamic_resources.cds_config: ads requires dynamic_resources.ads_config"}},
		{"several violations at once", func(b *bootstrapv3.Bootstrap) {
			b.Node.Id = ""
			b.StaticResources.Clusters = append(b.StaticResources.Clusters, b.StaticResources.Clusters[0])
		}, []string{"node.id: required", `static_resources.clusters[1].name: duplicate cluster "xds-grpc"`}},
		{"proto rule", func(b *bootstrapv3.Bootstrap) { b.StaticResources.Clusters[0].LoadAssignment.ClusterName = "" }, []string{"static_resources.clusters[0].load_assignment.cluster_name: value length must be at least 1 runes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := proto.Clone(valid).(*bootstrapv3.Bootstrap)
			tt.mutate(b)
			err := Validate(b)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestXDS(t *testing.T) {
	ads, err := Load("testdata/ads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	target, delta, tls, ok, err := XDS(ads)
	if err != nil || !ok || target != "weft.weft-system.svc:15012" || !delta || tls.GetSni() != "weft.weft-system.svc" {
		t.Fatalf("XDS(ads.yaml) = %q %v %v %v %v", target, delta, tls, ok, err)
	}

	tests := []struct {
		name    string
		yaml    string
		target  string
		delta   bool
		wantErr string
	}{
		{"static ip sotw", `
node: {id: proxy-1}
dynamic_resources:
  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}
static_resources:
  clusters:
  - name: x
    type: STATIC
    load_assignment:
      cluster_name: x
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: "::1", port_value: 15010}}}}]}]
`, "[::1]:15010", false, ""},
		{"unix socket", `
node: {id: proxy-1}
dynamic_resources:
  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}
static_resources:
  clusters:
  - name: x
    load_assignment:
      cluster_name: x
      endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: /etc/weft/xds.sock}}}}]}]
`, "unix:///etc/weft/xds.sock", false, ""},
		{"google grpc", `
node: {id: proxy-1}
dynamic_resources:
  ads_config: {api_type: DELTA_GRPC, grpc_services: [{google_grpc: {target_uri: "dns:///cp:15010", stat_prefix: xds}}]}
`, "dns:///cp:15010", true, ""},
		{"eds cluster", `
dynamic_resources:
  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}
static_resources:
  clusters: [{name: x, type: EDS}]
`, "", false, `static_resources.clusters[0] ("x").type: EDS not supported`},
		{"two endpoints", `
dynamic_resources:
  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}
static_resources:
  clusters:
  - name: x
    load_assignment:
      cluster_name: x
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 1}}}
        - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 1}}}
`, "", false, "exactly one endpoint, has 2"},
		{"missing cluster", `
dynamic_resources:
  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}
`, "", false, `cluster_name: cluster "x" is not in static_resources.clusters`},
		{"rest", `
dynamic_resources:
  ads_config: {api_type: REST, grpc_services: [{envoy_grpc: {cluster_name: x}}]}
`, "", false, "api_type: REST not supported"},
		{"no port", `
dynamic_resources:
  ads_config: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: x}}]}
static_resources:
  clusters:
  - name: x
    load_assignment:
      cluster_name: x
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: cp}}}}]}]
`, "", false, "endpoint.address: socket_address.port_value: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Parse([]byte(tt.yaml), tt.name+".yaml")
			if err != nil {
				t.Fatal(err)
			}
			target, delta, tls, ok, err := XDS(b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !ok || target != tt.target || delta != tt.delta || tls != nil {
				t.Fatalf("XDS = %q %v %v %v %v", target, delta, tls, ok, err)
			}
		})
	}
}

func TestFromFlags(t *testing.T) {
	tests := []struct {
		name        string
		f           Flags
		wantTarget  string
		wantCluster string // cluster type
	}{
		{"ip sotw", Flags{NodeID: "n1", Cluster: "c", XDSAddress: "127.0.0.1:15010", AdminAddress: "127.0.0.1:15000"}, "127.0.0.1:15010", "STATIC"},
		{"name delta", Flags{NodeID: "n1", XDSAddress: "weft.weft-system.svc:15012", Delta: true}, "weft.weft-system.svc:15012", "STRICT_DNS"},
		{"ipv6", Flags{NodeID: "n1", XDSAddress: "[::1]:15010"}, "[::1]:15010", "STATIC"},
		{"unix", Flags{NodeID: "n1", XDSAddress: "unix:///run/weft/xds.sock"}, "unix:///run/weft/xds.sock", "STATIC"},
		{"no xds", Flags{NodeID: "n1", AdminAddress: "127.0.0.1:15000"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := FromFlags(tt.f)
			if err := Validate(b); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			// The built bootstrap is a valid file too: it round-trips through Parse.
			js, err := protojson.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(js, "flags.json")
			if err != nil || !proto.Equal(back, b) {
				t.Fatalf("round trip: %v", err)
			}
			target, delta, _, ok, err := XDS(b)
			if err != nil || target != tt.wantTarget || ok != (tt.wantTarget != "") || delta != tt.f.Delta && ok {
				t.Fatalf("XDS = %q %v %v %v", target, delta, ok, err)
			}
			if ok {
				if got := b.GetStaticResources().GetClusters()[0].GetType().String(); got != tt.wantCluster {
					t.Errorf("cluster type = %s, want %s", got, tt.wantCluster)
				}
			}
			if tt.f.AdminAddress != "" && b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue() != 15000 {
				t.Errorf("admin = %v", b.GetAdmin())
			}
		})
	}
}

// TestLoadTestdata: every file in testdata except the deliberately bad ones loads and
// validates, so the samples stay true.
func TestLoadTestdata(t *testing.T) {
	files, _ := filepath.Glob("testdata/*")
	if len(files) < 4 {
		t.Fatalf("testdata has %d files", len(files))
	}
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "bad_") {
			continue
		}
		b, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := Validate(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
