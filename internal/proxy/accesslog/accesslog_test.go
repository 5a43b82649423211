package accesslog

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weft-mesh/weft/internal/proxy/stream"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func filledInfo() *stream.Info {
	return &stream.Info{
		Start:            time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC),
		Duration:         42*time.Millisecond + 700*time.Microsecond,
		Listener:         "virtualInbound",
		Downstream:       netip.MustParseAddrPort("10.0.0.1:51234"),
		DownstreamLocal:  netip.MustParseAddrPort("10.0.0.2:9080"),
		DownstreamTLS:    true,
		PeerPrincipal:    "spiffe://cluster.local/ns/default/sa/productpage",
		RequestedServer:  "outbound_.9080_._.reviews.default.svc.cluster.local",
		Protocol:         "HTTP/1.1",
		Method:           "GET",
		Authority:        "reviews:9080",
		Path:             "/reviews/0?u=jason",
		RequestID:        "3f2a-11",
		RouteName:        "default",
		VirtualHost:      "reviews.default.svc.cluster.local:9080",
		Cluster:          "inbound|9080||",
		UpstreamHost:     "10.0.0.2:9080",
		ResponseCode:     200,
		ResponseDetails:  "via_upstream",
		Attempts:         1,
		BytesReceived:    0,
		BytesSent:        358,
		UpstreamDuration: 40 * time.Millisecond,
	}
}

func filledHeaders() (req, resp http.Header) {
	req = http.Header{
		"User-Agent":      {"curl/8.5.0"},
		"X-Request-Id":    {"3f2a-11"},
		"X-Forwarded-For": {"192.0.2.7"},
		"Quote":           {`say "hi"` + "\n"},
	}
	resp = http.Header{"X-Envoy-Upstream-Service-Time": {"40"}, "Content-Type": {"application/json"}}
	return req, resp
}

func tcpInfo() *stream.Info {
	return &stream.Info{
		Start:           time.Date(2024, 5, 1, 10, 0, 1, 0, time.UTC),
		Duration:        1500 * time.Millisecond,
		Downstream:      netip.MustParseAddrPort("[::ffff:10.0.0.1]:40000"),
		DownstreamLocal: netip.MustParseAddrPort("[fd00::2]:3306"),
		Protocol:        "TCP",
		Cluster:         "outbound|3306||mysql.db.svc.cluster.local",
		UpstreamHost:    "10.0.0.9:3306",
		Flags:           stream.UpstreamConnectionFailure | stream.NoHealthyUpstream,
		BytesReceived:   10,
		BytesSent:       20,
		UpstreamFailure: "delayed connect error: 111",
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s:\n got %s\nwant %s", name, got, want)
	}
}

func TestGoldenLines(t *testing.T) {
	req, resp := filledHeaders()
	text := func(format string) func(i *stream.Info, req, resp http.Header) []byte {
		tm, err := parseTemplate(format)
		if err != nil {
			t.Fatal(err)
		}
		return func(i *stream.Info, req, resp http.Header) []byte {
			return tm.appendText(nil, &ctx{info: i, req: req, resp: resp}, false)
		}
	}
	jsonf := func(s *structpb.Struct) func(i *stream.Info, req, resp http.Header) []byte {
		j, err := compileJSON(s, true, false)
		if err != nil {
			t.Fatal(err)
		}
		return func(i *stream.Info, req, resp http.Header) []byte {
			var scratch []byte
			return append(j.appendJSON(nil, &ctx{info: i, req: req, resp: resp}, &scratch), '\n')
		}
	}
	tests := []struct {
		name      string
		format    func(i *stream.Info, req, resp http.Header) []byte
		info      *stream.Info
		req, resp http.Header
	}{
		{"envoy_default_http", text(EnvoyTextFormat), filledInfo(), req, resp},
		{"envoy_default_tcp", text(EnvoyTextFormat), tcpInfo(), nil, nil},
		{"istio_text_http", text(IstioTextFormat), filledInfo(), req, resp},
		{"istio_json_http", jsonf(IstioJSONFormat()), filledInfo(), req, resp},
		{"istio_json_tcp", jsonf(IstioJSONFormat()), tcpInfo(), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.format(tt.info, tt.req, tt.resp)
			golden(t, tt.name, got)
			if strings.HasPrefix(tt.name, "istio_json") {
				var m map[string]any
				if err := json.Unmarshal(got, &m); err != nil {
					t.Fatalf("not JSON: %v", err)
				}
			}
		})
	}
}

func TestOperators(t *testing.T) {
	req, resp := filledHeaders()
	info := filledInfo()
	info.Flags = stream.FaultInjected | stream.DelayInjected
	info.GRPCStatus = "14"
	info.Protocol = "HTTP/2.0"
	tests := []struct{ format, want string }{
		{"%START_TIME%", "2024-05-01T10:00:00.123Z"},
		{"%START_TIME(%Y/%m/%d %H:%M:%S)%", "2024/05/01 10:00:00"},
		{"%START_TIME(%s.%3f)%", "1714557600.123"},
		{"%START_TIME(%s%6f)%", "1714557600123456"},
		{"%START_TIME(%E3S)%", "00.123"},
		{"%START_TIME(%F %T %z)%", "2024-05-01 10:00:00 +0000"},
		{"%REQ(:METHOD)% %REQ(:path)% %REQ(:AUTHORITY)% %REQ(:SCHEME)%", "GET /reviews/0?u=jason reviews:9080 https"},
		{"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/reviews/0?u=jason"},
		{"%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/reviews/0"},
		{"%REQ(USER-AGENT):4%", "curl"},
		{"%REQ(X-MISSING)%", "-"},
		{"%RESP(content-type)%", "application/json"},
		{"%PROTOCOL%", "HTTP/2"},
		{"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%", "200 DI,FI via_upstream"},
		{"%RESPONSE_FLAGS_LONG%", "DelayInjected,FaultInjected"},
		{"%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESPONSE_DURATION%", "0 358 42 40"},
		{"%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %UPSTREAM_TRANSPORT_FAILURE_REASON%", "10.0.0.2:9080 inbound|9080|| -"},
		{"%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.1:51234 10.0.0.1 10.0.0.2:9080"},
		{"%DOWNSTREAM_LOCAL_PORT% %DOWNSTREAM_REMOTE_PORT%", "9080 51234"},
		{"%DOWNSTREAM_PEER_URI_SAN%", "spiffe://cluster.local/ns/default/sa/productpage"},
		{"%REQUESTED_SERVER_NAME% %ROUTE_NAME%", "outbound_.9080_._.reviews.default.svc.cluster.local default"},
		{"%CONNECTION_TERMINATION_DETAILS% %DYNAMIC_METADATA(istio.mixer:status)%", "- -"},
		{"%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "1"},
		{"%GRPC_STATUS% %GRPC_STATUS(SNAKE_STRING)% %GRPC_STATUS(NUMBER)%", "Unavailable UNAVAILABLE 14"},
		{"100%% %RESPONSE_CODE%", "100% 200"},
	}
	for _, tt := range tests {
		tm, err := parseTemplate(tt.format)
		if err != nil {
			t.Errorf("%s: %v", tt.format, err)
			continue
		}
		if got := string(tm.appendText(nil, &ctx{info: info, req: req, resp: resp}, false)); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.format, got, tt.want)
		}
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, f := range []string{"%NOPE%", "%REQ%", "%REQ(X", "%RESPONSE_CODE", "%START_TIME(%Q)%", "%GRPC_STATUS(X)%", "%REQ(X):0%"} {
		if _, err := parseTemplate(f); err == nil {
			t.Errorf("%q accepted", f)
		}
	}
}

func TestJSONTypingAndOmit(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{
		"code": "%RESPONSE_CODE%", "cluster": "%UPSTREAM_CLUSTER%", "mixed": "%RESPONSE_CODE%/%UPSTREAM_CLUSTER%",
		"lit": 7.0, "nested": map[string]any{"path": "%REQ(:PATH)%"},
	})
	info := &stream.Info{ResponseCode: 503, Path: "/a\"b"}
	c := &ctx{info: info}
	var scratch []byte
	for _, tt := range []struct {
		typed, omit bool
		want        string
	}{
		{true, false, `{"cluster":null,"code":503,"lit":7,"mixed":"503/-","nested":{"path":"/a\"b"}}`},
		{false, false, `{"cluster":"-","code":"503","lit":7,"mixed":"503/-","nested":{"path":"/a\"b"}}`},
		{true, true, `{"code":503,"lit":7,"mixed":"503/","nested":{"path":"/a\"b"}}`},
	} {
		j, err := compileJSON(s, tt.typed, tt.omit)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(j.appendJSON(nil, c, &scratch)); got != tt.want {
			t.Errorf("typed=%v omit=%v:\n got %s\nwant %s", tt.typed, tt.omit, got, tt.want)
		}
	}
}

func TestJSONEscaping(t *testing.T) {
	got := string(appendJSONString(nil, []byte("a\"\\\n\t\x01é\xff")))
	want := `"a\"\\\n\t\u0001é\ufffd"`
	if got != want {
		t.Errorf("got %s want %s", got, want)
	}
	var s string
	if err := json.Unmarshal([]byte(got), &s); err != nil {
		t.Error(err)
	}
}

func fileLog(t *testing.T, path string, cfg *filev3.FileAccessLog, filter *accesslogv3.AccessLogFilter) *accesslogv3.AccessLog {
	t.Helper()
	cfg.Path = path
	a, err := anypb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", Filter: filter, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestFileConcurrentWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := Default(path)
	if err != nil {
		t.Fatal(err)
	}
	before := Dropped()
	req, resp := filledHeaders()
	const workers, each = 20, 100
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				i := filledInfo()
				i.RequestID = fmt.Sprintf("w%d-%d", w, k)
				l.Log(i, req, resp)
			}
		}()
	}
	wg.Wait()
	l.Close()
	lines := readLines(t, path)
	if len(lines)+int(Dropped()-before) != workers*each {
		t.Fatalf("%d lines + %d dropped, want %d", len(lines), Dropped()-before, workers*each)
	}
	seen := map[string]bool{}
	for _, ln := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("torn line %q: %v", ln, err)
		}
		id, _ := m["request_id"].(string)
		// The header wins over Info for REQ(): the request carried 3f2a-11.
		if id != "3f2a-11" || m["response_code"] != 200.0 {
			t.Fatalf("line %s", ln)
		}
		seen[ln] = true
	}
}

func TestFileFormatsAndFilters(t *testing.T) {
	dir := t.TempDir()
	textPath := filepath.Join(dir, "text.log")
	errPath := filepath.Join(dir, "errors.log")
	flagPath := filepath.Join(dir, "flags.log")
	logs := []*accesslogv3.AccessLog{
		fileLog(t, textPath, &filev3.FileAccessLog{AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: "%RESPONSE_CODE% %REQ(:PATH)%\n"},
			}},
		}}}, nil),
		fileLog(t, errPath, &filev3.FileAccessLog{AccessLogFormat: &filev3.FileAccessLog_Format{Format: "%RESPONSE_CODE%\n"}},
			&accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
				Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE, Value: &corev3.RuntimeUInt32{DefaultValue: 500}},
			}}}),
		fileLog(t, flagPath, &filev3.FileAccessLog{AccessLogFormat: &filev3.FileAccessLog_Format{Format: "%RESPONSE_FLAGS%\n"}},
			&accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{
				Flags: []string{"UH", "NR"},
			}}}),
	}
	l, err := Build(logs)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		code  int
		path  string
		flags stream.Flags
	}{{200, "/ok", 0}, {503, "/down", stream.NoHealthyUpstream}, {404, "/none", stream.NoRouteFound}, {429, "/rl", stream.RateLimited}} {
		l.Log(&stream.Info{ResponseCode: c.code, Path: c.path, Flags: c.flags}, http.Header{}, http.Header{})
	}
	Flush()
	if got := strings.Join(readLines(t, textPath), "|"); got != "200 /ok|503 /down|404 /none|429 /rl" {
		t.Errorf("text log: %s", got)
	}
	if got := strings.Join(readLines(t, errPath), "|"); got != "503" {
		t.Errorf("status_code_filter log: %s", got)
	}
	if got := strings.Join(readLines(t, flagPath), "|"); got != "UH|NR" {
		t.Errorf("response_flag_filter log: %s", got)
	}
	l.Close()
	// After Close lines are dropped, not a panic.
	l.Log(&stream.Info{}, nil, nil)
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	stdout, _ := anypb.New(&streamv3.StdoutAccessLog{})
	tests := []struct {
		name string
		log  *accesslogv3.AccessLog
		want string
	}{
		{"bad operator", fileLog(t, filepath.Join(dir, "a"), &filev3.FileAccessLog{AccessLogFormat: &filev3.FileAccessLog_Format{Format: "%BOGUS%"}}, nil), "BOGUS"},
		{"bad dir", fileLog(t, filepath.Join(dir, "no/such/dir/a"), &filev3.FileAccessLog{}, nil), "path"},
		{"bad flag", fileLog(t, filepath.Join(dir, "b"), &filev3.FileAccessLog{}, &accesslogv3.AccessLogFilter{
			FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"ZZ"}}},
		}), "flags[0]"},
		{"unsupported filter", fileLog(t, filepath.Join(dir, "c"), &filev3.FileAccessLog{}, &accesslogv3.AccessLogFilter{
			FilterSpecifier: &accesslogv3.AccessLogFilter_TraceableFilter{TraceableFilter: &accesslogv3.TraceableFilter{}},
		}), "traceable_filter"},
		{"unsupported logger", &accesslogv3.AccessLog{Name: "x", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &corev3.Node{})}}, "unsupported access logger"},
	}
	for _, tt := range tests {
		_, err := Build([]*accesslogv3.AccessLog{
			{Name: "stdout", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout}},
			tt.log,
		})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "access_log[1]") {
			t.Errorf("%s: err %v, want access_log[1] and %q", tt.name, err, tt.want)
		}
	}
	if l, err := Build(nil); l != nil || err != nil {
		t.Errorf("empty list: %v %v", l, err)
	}
	var nilLogger *Logger
	nilLogger.Log(filledInfo(), nil, nil) // must not panic
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func BenchmarkFormatJSON(b *testing.B) {
	b.ReportAllocs()
	run := formatBench(b, true)
	for b.Loop() {
		run()
	}
}

func BenchmarkFormatText(b *testing.B) {
	b.ReportAllocs()
	run := formatBench(b, false)
	for b.Loop() {
		run()
	}
}

// TestFormatBenchmarkTwins run the benchmark bodies once.
func TestFormatBenchmarkTwins(t *testing.T) {
	formatBench(t, true)()
	formatBench(t, false)()
}

func formatBench(tb testing.TB, isJSON bool) func() {
	req, resp := filledHeaders()
	c := &ctx{info: filledInfo(), req: req, resp: resp}
	j, err := compileJSON(IstioJSONFormat(), true, false)
	if err != nil {
		tb.Fatal(err)
	}
	tm, err := parseTemplate(IstioTextFormat)
	if err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 0, 2048)
	scratch := make([]byte, 0, 512)
	return func() {
		if isJSON {
			buf = j.appendJSON(buf[:0], c, &scratch)
		} else {
			buf = tm.appendText(buf[:0], c, false)
		}
		if len(buf) < 100 {
			tb.Fatalf("short line %q", buf)
		}
	}
}
