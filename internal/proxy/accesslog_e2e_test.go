package proxy_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// TestAccessLogRequestHeaders: an HTTP connection manager's access log reads request
// headers (user-agent, x-forwarded-for, the x-request-id the manager generated) from
// the request as it went through the proxy, for requests one after another on one
// kept-alive connection, then over HTTP/2, whose :path is logged as received too.
func TestAccessLogRequestHeaders(t *testing.T) {
	m := newH1Mesh(t)
	path := filepath.Join(t.TempDir(), "access.log")
	withLog := func(h *hcmv3.HttpConnectionManager) {
		h.AccessLog = []*accesslogv3.AccessLog{{
			Name: "envoy.access_loggers.file",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, &filev3.FileAccessLog{
				Path: path,
				AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
					Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
						Specifier: &corev3.DataSource_InlineString{InlineString: "%REQ(:PATH)% ua=%REQ(USER-AGENT)% xff=%REQ(X-FORWARDED-FOR)% id=%REQ(X-REQUEST-ID)%\n"},
					}},
				}},
			})},
		}}
	}
	m.waitApplied(t, m.cp.push(resources{
		listeners: []types.Resource{hcmListener(t, m.port, "http", "logged", withLog)},
		routes:    []types.Resource{routeConfig("r", prefixRoute("/", "a"))},
		clusters:  m.clusters,
		endpoints: m.eps,
	}))
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 3 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/echo/%d", m.port, i), nil)
		req.Header.Set("User-Agent", fmt.Sprintf("agent/%d", i))
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("192.0.2.%d", i+1))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	defer h2.CloseIdleConnections()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/echo/%%33?q=a%%20b", m.port), nil)
	req.Header.Set("User-Agent", "agent/3")
	req.Header.Set("X-Forwarded-For", "192.0.2.4")
	resp, err := (&http.Client{Transport: h2, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("the HTTP/2 request was answered over %s", resp.Proto)
	}
	eventually(t, 10*time.Second, func() error {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) < 4 {
			return fmt.Errorf("%d access log lines, want 4: %q", len(lines), b)
		}
		for i, l := range lines {
			want := fmt.Sprintf("/echo/%d ua=agent/%d xff=192.0.2.%d id=", i, i, i+1)
			if i == 3 {
				want = "/echo/%33?q=a%20b ua=agent/3 xff=192.0.2.4 id="
			}
			if !strings.HasPrefix(l, want) || len(l) != len(want)+36 {
				return fmt.Errorf("line %d: %q, want %q and a 36-character request id", i, l, want)
			}
		}
		return nil
	})
}
