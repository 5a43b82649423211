package pgv

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// validator is the generated PGV method; the test binary may link them all.
type validator interface{ ValidateAll() error }

// pgvLeaves flattens a generated validator's error into "path: reason" lines.
func pgvLeaves(err error, prefix string) []string {
	type multi interface{ AllErrors() []error }
	type fieldErr interface {
		Field() string
		Reason() string
		Cause() error
	}
	if err == nil {
		return nil
	}
	if m, ok := err.(multi); ok {
		var out []string
		for _, e := range m.AllErrors() {
			out = append(out, pgvLeaves(e, prefix)...)
		}
		return out
	}
	fe, ok := err.(fieldErr)
	if !ok {
		return []string{prefix + ": " + err.Error()}
	}
	path := snake(fe.Field())
	if prefix != "" {
		path = prefix + "." + path
	}
	if c := fe.Cause(); c != nil {
		if _, ok := c.(fieldErr); ok {
			return pgvLeaves(c, path)
		}
		if _, ok := c.(multi); ok {
			return pgvLeaves(c, path)
		}
	}
	return []string{path + ": " + fe.Reason()}
}

func snake(f string) string {
	var b strings.Builder
	for i, r := range f {
		if r == '[' {
			b.WriteString(f[i:])
			break
		}
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func ourLeaves(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		out = append(out, e.Error())
	}
	return out
}

// paths keeps the field path of each line (the reasons may be worded differently for
// ranges and well-known formats).
func paths(lines []string) []string {
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		p, _, _ := strings.Cut(l, ": ")
		out = append(out, strings.ToLower(strings.ReplaceAll(p, "_", "")))
	}
	slices.Sort(out)
	return out
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// seeds are valid messages of the types weft-proxy validates, rich enough that mutating
// them reaches many rules.
func seeds() []proto.Message {
	addr := &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}}
	cluster := &clusterv3.Cluster{
		Name: "c", ConnectTimeout: durationpb.New(1e9), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LbPolicy: clusterv3.Cluster_ROUND_ROBIN, PerConnectionBufferLimitBytes: wrapperspb.UInt32(1024),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
				LoadBalancingWeight: wrapperspb.UInt32(3)}}}}},
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(5)}}},
		OutlierDetection: &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(5), Interval: durationpb.New(1e9),
			MaxEjectionPercent: wrapperspb.UInt32(10)},
		HealthChecks: []*corev3.HealthCheck{{Timeout: durationpb.New(1e9), Interval: durationpb.New(1e9),
			UnhealthyThreshold: wrapperspb.UInt32(2), HealthyThreshold: wrapperspb.UInt32(2),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/h",
				RequestHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-a", Value: "b"}}}}}}},
	}
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{{Name: "x-h", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "v"}}}}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: "a", Weight: wrapperspb.UInt32(50)}, {Name: "b", Weight: wrapperspb.UInt32(50)}}}},
				Timeout: durationpb.New(5e9),
				RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2), PerTryTimeout: durationpb.New(1e9),
					RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(1e7), MaxInterval: durationpb.New(1e8)}},
			}},
			RequestHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-b", Value: "c"}}},
		}},
	}}}
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: "in", RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}}, StreamIdleTimeout: durationpb.New(1e9)}
	listener := &listenerv3.Listener{Name: "l", Address: addr, FilterChains: []*listenerv3.FilterChain{{
		FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80), ServerNames: []string{"a.example"}},
		Filters:          []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}},
	}}}
	secret := &tlsv3.Secret{Name: "s", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "x"}}}}}
	boot := &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "n", Cluster: "c"},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Listeners: []*listenerv3.Listener{listener}, Clusters: []*clusterv3.Cluster{cluster}, Secrets: []*tlsv3.Secret{secret}},
		Admin:           &bootstrapv3.Admin{Address: addr}}
	cors := &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "https://"}}},
		AllowMethods: "GET", MaxAge: "60"}
	fault := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503},
		Percentage: &typev3.FractionalPercent{Numerator: 10, Denominator: typev3.FractionalPercent_HUNDRED}},
		MaxActiveFaults: wrapperspb.UInt32(3), Headers: []*routev3.HeaderMatcher{{Name: "x-f", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}
	lrl := &lrlv3.LocalRateLimit{StatPrefix: "rl", TokenBucket: &typev3.TokenBucket{MaxTokens: 10, TokensPerFill: wrapperspb.UInt32(1), FillInterval: durationpb.New(1e9)}}
	return []proto.Message{boot, cluster, listener, rc, hcm, cors, fault, lrl}
}

// TestMatchesGeneratedValidators: on valid messages and on thousands of seeded random
// mutations of them, Check reports a violation at exactly the field paths where the
// generated ValidateAll does.
func TestMatchesGeneratedValidators(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	const perSeed = 300
	mismatches, violations := 0, 0
	for _, seed := range seeds() {
		name := string(seed.ProtoReflect().Descriptor().Name())
		if err := Check(seed, ""); err != nil {
			t.Fatalf("%s: valid seed rejected: %v", name, err)
		}
		if err := seed.(validator).ValidateAll(); err != nil {
			t.Fatalf("%s: seed not valid for the generated validator either: %v", name, err)
		}
		for i := 0; i < perSeed; i++ {
			m := proto.Clone(seed)
			for k := 0; k < 1+rnd.Intn(3); k++ {
				mutate(rnd, m.ProtoReflect(), 0)
			}
			want := paths(pgvLeaves(m.(validator).ValidateAll(), ""))
			got := paths(ourLeaves(Check(m, "")))
			violations += len(want)
			if !slices.Equal(want, got) {
				mismatches++
				if mismatches <= 5 {
					t.Errorf("%s mutation %d: generated validator says\n  %v\nCheck says\n  %v\nmessage: %v", name, i, pgvLeaves(m.(validator).ValidateAll(), ""), ourLeaves(Check(m, "")), m)
				}
			}
		}
	}
	if violations < 500 {
		t.Errorf("only %d violations produced: the mutations do not exercise the rules", violations)
	}
	t.Logf("%d violations compared", violations)
}

// mutate changes one randomly chosen field somewhere in m: a scalar to an edge value, a
// message cleared or descended into, a list emptied or given an item.
func mutate(rnd *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	if fields.Len() == 0 {
		return
	}
	// Prefer fields that are set, so the mutation lands in the populated tree.
	var set []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool { set = append(set, fd); return true })
	var fd protoreflect.FieldDescriptor
	if len(set) > 0 && rnd.Intn(4) > 0 {
		fd = set[rnd.Intn(len(set))]
	} else {
		fd = fields.Get(rnd.Intn(fields.Len()))
	}
	switch {
	case fd.IsMap():
		m.Clear(fd)
	case fd.IsList():
		l := m.Mutable(fd).List()
		switch {
		case l.Len() > 0 && rnd.Intn(3) == 0:
			m.Clear(fd)
		case l.Len() > 0 && fd.Message() != nil && depth < 8:
			mutate(rnd, l.Get(rnd.Intn(l.Len())).Message(), depth+1)
		case fd.Message() != nil:
			l.Append(protoreflect.ValueOfMessage(l.NewElement().Message()))
		default:
			l.Append(edge(rnd, fd))
			if l.Len() > 0 && rnd.Intn(2) == 0 {
				l.Append(l.Get(0))
			}
		}
	case fd.Message() != nil:
		if !m.Has(fd) || rnd.Intn(3) == 0 {
			if m.Has(fd) {
				m.Clear(fd)
			} else {
				m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
			}
			return
		}
		if depth < 8 {
			mutate(rnd, m.Mutable(fd).Message(), depth+1)
		}
	default:
		m.Set(fd, edge(rnd, fd))
	}
}

func edge(rnd *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rnd.Intn(2) == 0)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber([]int32{0, 1, 2, 99, -1}[rnd.Intn(5)]))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32([]int32{0, -1, 1, 100, 65536, 1 << 30}[rnd.Intn(6)])
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64([]int64{0, -1, 1, 100, 1 << 40}[rnd.Intn(5)])
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32([]uint32{0, 1, 100, 65535, 65536, 1 << 31}[rnd.Intn(6)])
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64([]uint64{0, 1, 100, 1 << 40}[rnd.Intn(4)])
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32([]float32{0, -1, 0.5, 100, 101}[rnd.Intn(5)])
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64([]float64{0, -1, 0.5, 100, 101}[rnd.Intn(5)])
	case protoreflect.StringKind:
		return protoreflect.ValueOfString([]string{"", "a", "x-y", "bad header\n", ":path", "UPPER", "127.0.0.1", "::1", "a.example.com", "-bad-.", strings.Repeat("z", 300), "héllo", "*"}[rnd.Intn(13)])
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([][]byte{nil, []byte("a"), make([]byte, 4), make([]byte, 16)}[rnd.Intn(4)])
	}
	panic(fmt.Sprint("kind ", fd.Kind()))
}

func TestCheckReportsPaths(t *testing.T) {
	c := &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(-1),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: "1.2.3.4", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 70000}}}}}}}}}}}}
	err := Check(c, "static_resources.clusters[0]")
	for _, want := range []string{
		"static_resources.clusters[0].connect_timeout: value must be greater than 0s",
		"static_resources.clusters[0].load_assignment.cluster_name: value length must be at least 1 runes",
		"static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: value must be less than or equal to 65535",
	} {
		if err == nil || !slices.Contains(ourLeaves(err), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if Check(nil, "") != nil || Check((*clusterv3.Cluster)(nil), "") != nil {
		t.Error("nil message reported")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Error("violations not joined")
	}
}
