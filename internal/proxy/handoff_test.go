package proxy_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// TestHTTPFilterChangeAppliesToOpenConnections: when only a listener's HTTP filters
// change, a keep-alive connection opened before the change is handed to the new
// connection manager: its next request meets the new filters at once (here a fault
// filter that aborts everything with 418), on the same TCP connection, without
// "Connection: close". A security filter change (RBAC) relies on this: the old
// manager must not serve another request on a pooled connection.
func TestHTTPFilterChangeAppliesToOpenConnections(t *testing.T) {
	m := newMesh(t, false)
	m.routes(t, prefixRoute("/", "a"))
	m.waitBackend(t, "/", "a")

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	send := func(i int) *http.Response {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET /r%d HTTP/1.1\r\nHost: test\r\n\r\n", i); err != nil {
			t.Fatalf("request %d: write: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on the kept-alive connection: %v", i, err)
		}
		resp.Body.Close()
		return resp
	}
	if r := send(1); r.StatusCode != 200 || r.Close {
		t.Fatalf("before the change: %d, close %v", r.StatusCode, r.Close)
	}

	abortAll := &hcmv3.HttpFilter{Name: "envoy.filters.http.fault", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: &typev3.FractionalPercent{Numerator: 100}},
	})}}
	v := m.pushRC(t, routeConfig("r", prefixRoute("/", "a")), abortAll)
	eventually(t, 10*time.Second, func() error {
		if got := m.cp.acked("type.googleapis.com/envoy.config.listener.v3.Listener"); got != v {
			return fmt.Errorf("listener version acked %q, want %q", got, v)
		}
		return nil
	})
	// The connection was idle when the listener changed: its next request goes
	// through the new filters.
	for i := 2; i <= 4; i++ {
		r := send(i)
		if r.StatusCode != 418 {
			t.Fatalf("request %d after the filter change on the old connection: %d, want 418 from the new filters", i, r.StatusCode)
		}
		if r.Close {
			t.Fatalf("request %d: the connection was closed (Connection: close); want it handed over", i)
		}
	}
}
