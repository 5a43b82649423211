package netrbac

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/proxy/listener"
	"github.com/weft-mesh/weft/internal/proxy/stats"
)

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func cidr(a string, n uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(n)}
}

func anyPerm() *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
}

func anyPrin() *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
}

func one(action rbacconfigv3.RBAC_Action, perm *rbacconfigv3.Permission, prin *rbacconfigv3.Principal) *rbacconfigv3.RBAC {
	return &rbacconfigv3.RBAC{Action: action, Policies: map[string]*rbacconfigv3.Policy{
		"p": {Permissions: []*rbacconfigv3.Permission{perm}, Principals: []*rbacconfigv3.Principal{prin}}}}
}

func TestCheck(t *testing.T) {
	conn := ConnAttrs{
		Source:      netip.MustParseAddrPort("10.1.2.3:5555"),
		Destination: netip.MustParseAddrPort("10.9.0.5:3306"),
		TLS:         true,
		Principal:   "spiffe://cluster.local/ns/db/sa/app",
		SNI:         "mysql.db.svc.cluster.local",
	}
	tests := []struct {
		name  string
		perm  *rbacconfigv3.Permission
		prin  *rbacconfigv3.Principal
		match bool
	}{
		{"principal", anyPerm(), &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: exact("spiffe://cluster.local/ns/db/sa/app")}}}, true},
		{"other principal", anyPerm(), &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: exact("spiffe://cluster.local/ns/db/sa/other")}}}, false},
		{"source ip", anyPerm(), &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.1.0.0", 16)}}, true},
		{"destination port", &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_DestinationPort{DestinationPort: 3306}}, anyPrin(), true},
		{"destination port other", &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_DestinationPort{DestinationPort: 5432}}, anyPrin(), false},
		{"destination ip", &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_DestinationIp{DestinationIp: cidr("10.9.0.5", 32)}}, anyPrin(), true},
		{"sni", &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_RequestedServerName{RequestedServerName: exact("mysql.db.svc.cluster.local")}}, anyPrin(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, action := range []rbacconfigv3.RBAC_Action{rbacconfigv3.RBAC_ALLOW, rbacconfigv3.RBAC_DENY} {
				p, err := Compile(&rbacv3.RBAC{StatPrefix: "tcp.", Rules: one(action, tt.perm, tt.prin)}, nil)
				if err != nil {
					t.Fatal(err)
				}
				allowed, policy := p.Check(conn)
				if want := tt.match == (action == rbacconfigv3.RBAC_ALLOW); allowed != want {
					t.Errorf("%v: allowed=%v want %v", action, allowed, want)
				}
				if tt.match != (policy == "p") {
					t.Errorf("%v: policy %q", action, policy)
				}
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	header := &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":path",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "/admin"}}}}
	tests := []struct {
		name string
		m    *rbacv3.RBAC
		want string
	}{
		// A DENY on an HTTP attribute cannot be enforced on a connection: refuse it rather
		// than let everything through.
		{"http header", &rbacv3.RBAC{StatPrefix: "tcp.", Rules: one(rbacconfigv3.RBAC_DENY, header, anyPrin())},
			`rules.policies["p"].permissions[0].header: only HTTP requests have it`},
		{"shadow url_path", &rbacv3.RBAC{StatPrefix: "tcp.", ShadowRules: one(rbacconfigv3.RBAC_DENY, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{
			UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/")}}}}, anyPrin())}, `shadow_rules.policies["p"].permissions[0].url_path`},
		{"stat prefix", &rbacv3.RBAC{Rules: one(rbacconfigv3.RBAC_DENY, anyPerm(), anyPrin())}, "stat_prefix: is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.m, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// --- through the listener manager, over loopback ---

// tagFactory is a terminal filter that writes its tag and closes.
type tagFactory struct{}

func (tagFactory) ConfigType() string { return "google.protobuf.StringValue" }

func (tagFactory) Build(typed *anypb.Any, _ listener.ChainInfo) (listener.NetworkFilter, error) {
	var v wrapperspb.StringValue
	if err := typed.UnmarshalTo(&v); err != nil {
		return nil, err
	}
	return tagFilter(v.GetValue()), nil
}

type tagFilter string

func (f tagFilter) ServeConn(_ context.Context, c *listener.Conn) {
	_, _ = io.WriteString(c, string(f)+"\n")
	_ = c.Close()
}

func (tagFilter) Drain(context.Context) error { return nil }

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func rbacListener(t *testing.T, name string, cfg *rbacv3.RBAC) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{
			{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, cfg)}},
			{Name: "test.tag", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, wrapperspb.String(name))}},
		}}},
	}
}

func dialTag(t *testing.T, addr net.Addr) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSpace(line)
}

func TestThroughListener(t *testing.T) {
	st := stats.New()
	m := listener.NewManager(listener.Options{
		Stats:    st,
		Filters:  []listener.NetworkFilterFactory{tagFactory{}},
		Wrappers: []listener.WrapperFactory{NewFactory(st, nil)},
	})
	t.Cleanup(func() { _ = m.Close() })

	loopback := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: cidr("127.0.0.0", 8)}}
	allow := rbacListener(t, "allow", &rbacv3.RBAC{StatPrefix: "tcp.", Rules: one(rbacconfigv3.RBAC_ALLOW, anyPerm(), loopback)})
	deny := rbacListener(t, "deny", &rbacv3.RBAC{StatPrefix: "tcp.", Rules: one(rbacconfigv3.RBAC_DENY, anyPerm(), loopback),
		DelayDeny: durationpb.New(50 * time.Millisecond)})
	shadow := rbacListener(t, "shadow", &rbacv3.RBAC{StatPrefix: "shadowed", ShadowRules: one(rbacconfigv3.RBAC_DENY, anyPerm(), loopback)})
	if err := m.Update([]*listenerv3.Listener{allow, deny, shadow}); err != nil {
		t.Fatal(err)
	}
	if got := dialTag(t, m.Addr("allow")); got != "allow" {
		t.Fatalf("allowed connection got %q", got)
	}
	if got := dialTag(t, m.Addr("deny")); got != "" {
		t.Fatalf("denied connection reached the terminal filter: %q", got)
	}
	if got := dialTag(t, m.Addr("shadow")); got != "shadow" {
		t.Fatalf("shadow rules enforced: %q", got)
	}
	for name, want := range map[string]int64{"tcp.rbac.allowed": 1, "tcp.rbac.denied": 1, "shadowed.rbac.shadow_denied": 1} {
		if v, _ := st.Value(name); v != want {
			t.Errorf("%s = %d, want %d", name, v, want)
		}
	}
	// A config the filter cannot evaluate is refused by Update, naming the filter.
	header := &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "x"}}}
	bad := rbacListener(t, "bad", &rbacv3.RBAC{StatPrefix: "tcp.", Rules: one(rbacconfigv3.RBAC_DENY, header, anyPrin())})
	err := m.Update([]*listenerv3.Listener{allow, bad})
	if err == nil || !strings.Contains(err.Error(), "only HTTP requests have it") {
		t.Fatalf("Update: %v", err)
	}
	if got := dialTag(t, m.Addr("deny")); got != "" {
		t.Fatalf("old config not kept after a refused update: %q", got)
	}
}
