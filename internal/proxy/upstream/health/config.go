package health

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// check is one compiled cluster.health_checks[] entry.
type check struct {
	idx                int
	timeout            time.Duration
	interval           time.Duration
	unhealthyInterval  time.Duration
	unhealthyEdge      time.Duration
	healthyEdge        time.Duration
	initialJitter      time.Duration
	jitter             time.Duration
	jitterPercent      uint32
	unhealthyThreshold uint32
	healthyThreshold   uint32
	altPort            string // "" keeps the host's port
	reuse              bool

	http *httpCheck // one of http, tcp
	tcp  *tcpCheck
}

type httpCheck struct {
	host      string // "" means the cluster name
	path      string
	method    string
	add       []headerAdd
	remove    []string
	expected  []statusRange
	retriable []statusRange
	send      []byte
	receive   [][]byte
	bufSize   int
	h2        bool
}

type headerAdd struct {
	key, value string
	action     corev3.HeaderValueOption_HeaderAppendAction
}

type statusRange struct{ lo, hi int } // [lo, hi)

type tcpCheck struct {
	send    []byte
	receive [][]byte
}

// maxBody bounds how much of a response is read for payload matching when
// response_buffer_size is 0 ("the entire response").
const maxBody = 1 << 20

func compile(cfg []*corev3.HealthCheck) ([]*check, error) {
	var errs []error
	var out []*check
	for i, hc := range cfg {
		c, err := compileOne(i, hc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

func compileOne(i int, hc *corev3.HealthCheck) (*check, error) {
	p := fmt.Sprintf("health_checks[%d]", i)
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", p, field, fmt.Sprintf(format, args...)))
	}
	dur := func(field string, d *durationpb.Duration, required bool) time.Duration {
		if d == nil {
			if required {
				bad(field, "required")
			}
			return 0
		}
		if err := d.CheckValid(); err != nil {
			bad(field, "%v", err)
			return 0
		}
		v := d.AsDuration()
		if v < 0 || (required && v == 0) {
			bad(field, "%v must be positive", v)
			return 0
		}
		return v
	}
	c := &check{idx: i}
	c.timeout = dur("timeout", hc.GetTimeout(), true)
	c.interval = dur("interval", hc.GetInterval(), true)
	c.initialJitter = dur("initial_jitter", hc.GetInitialJitter(), false)
	c.jitter = dur("interval_jitter", hc.GetIntervalJitter(), false)
	c.jitterPercent = hc.GetIntervalJitterPercent()
	c.unhealthyInterval = dur("unhealthy_interval", hc.GetUnhealthyInterval(), false)
	c.unhealthyEdge = dur("unhealthy_edge_interval", hc.GetUnhealthyEdgeInterval(), false)
	c.healthyEdge = dur("healthy_edge_interval", hc.GetHealthyEdgeInterval(), false)
	if c.unhealthyInterval == 0 {
		c.unhealthyInterval = c.interval
	}
	if c.unhealthyEdge == 0 {
		c.unhealthyEdge = c.unhealthyInterval
	}
	if c.healthyEdge == 0 {
		c.healthyEdge = c.interval
	}
	if hc.GetUnhealthyThreshold() == nil {
		bad("unhealthy_threshold", "required")
	}
	if hc.GetHealthyThreshold() == nil {
		bad("healthy_threshold", "required")
	}
	c.unhealthyThreshold = max(1, hc.GetUnhealthyThreshold().GetValue())
	c.healthyThreshold = max(1, hc.GetHealthyThreshold().GetValue())
	if ap := hc.GetAltPort(); ap != nil {
		if ap.GetValue() == 0 || ap.GetValue() > 65535 {
			bad("alt_port", "%d is not a port", ap.GetValue())
		}
		c.altPort = strconv.Itoa(int(ap.GetValue()))
	}
	c.reuse = hc.GetReuseConnection() == nil || hc.GetReuseConnection().GetValue()

	switch {
	case hc.GetHttpHealthCheck() != nil:
		h, err := compileHTTP(p+".http_health_check", hc.GetHttpHealthCheck())
		if err != nil {
			errs = append(errs, err)
		}
		c.http = h
	case hc.GetTcpHealthCheck() != nil:
		t := hc.GetTcpHealthCheck()
		c.tcp = &tcpCheck{}
		var err error
		if t.GetSend() != nil {
			if c.tcp.send, err = payload(t.GetSend()); err != nil {
				bad("tcp_health_check.send", "%v", err)
			}
		}
		for j, r := range t.GetReceive() {
			b, err := payload(r)
			if err != nil {
				bad(fmt.Sprintf("tcp_health_check.receive[%d]", j), "%v", err)
			}
			c.tcp.receive = append(c.tcp.receive, b)
		}
		if t.GetProxyProtocolConfig() != nil {
			bad("tcp_health_check.proxy_protocol_config", "not supported")
		}
	case hc.GetGrpcHealthCheck() != nil:
		bad("grpc_health_check", "not supported")
	case hc.GetCustomHealthCheck() != nil:
		bad("custom_health_check", "not supported")
	default:
		bad("health_checker", "one of http_health_check or tcp_health_check is required")
	}
	return c, errors.Join(errs...)
}

func compileHTTP(p string, h *corev3.HealthCheck_HttpHealthCheck) (*httpCheck, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", p, field, fmt.Sprintf(format, args...)))
	}
	c := &httpCheck{host: h.GetHost(), path: h.GetPath(), bufSize: 1024}
	if c.path == "" || c.path[0] != '/' {
		bad("path", "%q must start with /", c.path)
	}
	switch m := h.GetMethod(); m {
	case corev3.RequestMethod_METHOD_UNSPECIFIED:
		c.method = http.MethodGet
	case corev3.RequestMethod_CONNECT:
		bad("method", "CONNECT is not allowed")
	default:
		c.method = m.String()
	}
	for j, o := range h.GetRequestHeadersToAdd() {
		k := strings.ToLower(o.GetHeader().GetKey())
		if k == "" {
			bad(fmt.Sprintf("request_headers_to_add[%d].header.key", j), "empty")
			continue
		}
		v := o.GetHeader().GetValue()
		if raw := o.GetHeader().GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		a := o.GetAppendAction()
		if ap := o.GetAppend(); ap != nil && !ap.GetValue() {
			a = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD // deprecated append: false
		}
		c.add = append(c.add, headerAdd{key: k, value: v, action: a})
	}
	c.remove = h.GetRequestHeadersToRemove()
	ranges := func(field string, rs []*typev3.Int64Range) []statusRange {
		var out []statusRange
		for j, r := range rs {
			if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
				bad(fmt.Sprintf("%s[%d]", field, j), "[%d, %d) must be a non-empty range within [100, 600)", r.GetStart(), r.GetEnd())
				continue
			}
			out = append(out, statusRange{int(r.GetStart()), int(r.GetEnd())})
		}
		return out
	}
	c.expected = ranges("expected_statuses", h.GetExpectedStatuses())
	if len(h.GetExpectedStatuses()) == 0 {
		c.expected = []statusRange{{200, 201}} // Envoy: 200 only
	}
	c.retriable = ranges("retriable_statuses", h.GetRetriableStatuses())
	if h.GetSend() != nil {
		b, err := payload(h.GetSend())
		if err != nil {
			bad("send", "%v", err)
		}
		c.send = b
	}
	for j, r := range h.GetReceive() {
		b, err := payload(r)
		if err != nil {
			bad(fmt.Sprintf("receive[%d]", j), "%v", err)
		}
		c.receive = append(c.receive, b)
	}
	if s := h.GetResponseBufferSize(); s != nil {
		c.bufSize = int(min(s.GetValue(), maxBody))
		if s.GetValue() == 0 {
			c.bufSize = maxBody
		}
	}
	switch h.GetCodecClientType() {
	case typev3.CodecClientType_HTTP1:
	case typev3.CodecClientType_HTTP2:
		c.h2 = true
	default:
		bad("codec_client_type", "%v is not supported", h.GetCodecClientType())
	}
	if h.GetServiceNameMatcher() != nil {
		bad("service_name_matcher", "not supported")
	}
	return c, errors.Join(errs...)
}

// payload decodes a HealthCheck.Payload: text is hex, binary is raw.
func payload(p *corev3.HealthCheck_Payload) ([]byte, error) {
	switch v := p.GetPayload().(type) {
	case *corev3.HealthCheck_Payload_Text:
		b, err := hex.DecodeString(v.Text)
		if err != nil {
			return nil, fmt.Errorf("text: not hex: %w", err)
		}
		return b, nil
	case *corev3.HealthCheck_Payload_Binary:
		return v.Binary, nil
	}
	return nil, errors.New("empty payload")
}

func inRanges(status int, rs []statusRange) bool {
	for _, r := range rs {
		if status >= r.lo && status < r.hi {
			return true
		}
	}
	return false
}
