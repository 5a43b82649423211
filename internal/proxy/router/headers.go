package router

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/weft-mesh/weft/internal/proxy/h1"
	"github.com/weft-mesh/weft/internal/proxy/stream"
)

// fmtCtx is what a header value template may read.
type fmtCtx struct {
	r      *http.Request // the downstream request (pseudo-headers)
	reqH   http.Header   // the request headers as they are being mutated
	respH  http.Header   // the response headers; nil while mutating the request
	info   *stream.Info
	status int
}

type fmtOp uint8

const (
	opLiteral fmtOp = iota
	opRemoteAddr
	opRemoteAddrNoPort
	opRemotePort
	opLocalAddr
	opLocalAddrNoPort
	opLocalPort
	opPeerURISAN
	opSNI
	opProtocol
	opHostname
	opReq
	opResp
	opStartTime
	opUpstreamAddr
	opUpstreamCluster
	opRouteName
	opResponseCode
	opResponseFlags
	opRequestID
)

var simpleOps = map[string]fmtOp{
	"DOWNSTREAM_REMOTE_ADDRESS":                     opRemoteAddr,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":        opRemoteAddrNoPort,
	"DOWNSTREAM_REMOTE_PORT":                        opRemotePort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              opRemoteAddr,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": opRemoteAddrNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS":                      opLocalAddr,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         opLocalAddrNoPort,
	"DOWNSTREAM_LOCAL_PORT":                         opLocalPort,
	"DOWNSTREAM_PEER_URI_SAN":                       opPeerURISAN,
	"REQUESTED_SERVER_NAME":                         opSNI,
	"PROTOCOL":                                      opProtocol,
	"HOSTNAME":                                      opHostname,
	"START_TIME":                                    opStartTime,
	"UPSTREAM_REMOTE_ADDRESS":                       opUpstreamAddr,
	"UPSTREAM_HOST":                                 opUpstreamAddr,
	"UPSTREAM_CLUSTER":                              opUpstreamCluster,
	"ROUTE_NAME":                                    opRouteName,
	"RESPONSE_CODE":                                 opResponseCode,
	"RESPONSE_FLAGS":                                opResponseFlags,
	"STREAM_ID":                                     opRequestID,
}

type tmplPart struct {
	op       fmtOp
	lit      string // literal text, or the START_TIME layout
	key, alt string // REQ/RESP header keys (canonical or pseudo ":x")
	maxLen   int
}

// template is a header value with Envoy's %COMMAND% substitutions, parsed once when the
// route table is compiled.
type template struct {
	parts  []tmplPart
	static bool // no substitutions: lit is the value
	lit    string
}

var hostname = sync.OnceValue(func() string { h, _ := os.Hostname(); return h })

// parseTemplate parses a header value. "%%" is a literal percent sign; an unknown or
// unterminated command is an error, as Envoy rejects them.
func parseTemplate(s string) (template, error) {
	if !strings.Contains(s, "%") {
		return template{static: true, lit: s}, nil
	}
	var t template
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, tmplPart{op: opLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%')
			i += 2
			continue
		}
		end := commandEnd(s, i+1)
		if end < 0 {
			return template{}, fmt.Errorf("unterminated variable expression at offset %d in %q", i, s)
		}
		cmd := s[i+1 : end]
		i = end + 1
		p, err := parseCommand(cmd)
		if err != nil {
			return template{}, fmt.Errorf("%w in %q", err, s)
		}
		flush()
		t.parts = append(t.parts, p)
	}
	flush()
	if len(t.parts) == 1 && t.parts[0].op == opLiteral {
		return template{static: true, lit: t.parts[0].lit}, nil
	}
	if len(t.parts) == 0 {
		return template{static: true}, nil
	}
	return t, nil
}

// commandEnd finds the percent sign closing a command that starts at i: the command
// name, an optional "(argument)" that may itself hold percent signs (START_TIME formats),
// and an optional ":length". It returns -1 when there is none.
func commandEnd(s string, i int) int {
	j := i
	for j < len(s) && (s[j] == '_' || (s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= '0' && s[j] <= '9')) {
		j++
	}
	if j < len(s) && s[j] == '(' {
		k := strings.IndexByte(s[j:], ')')
		if k < 0 {
			return -1
		}
		j += k + 1
	}
	k := strings.IndexByte(s[j:], '%')
	if k < 0 {
		return -1
	}
	return j + k
}

func parseCommand(cmd string) (tmplPart, error) {
	var p tmplPart
	name, arg, hasArg := cmd, "", false
	if open := strings.IndexByte(cmd, '('); open >= 0 {
		closeIdx := strings.LastIndexByte(cmd, ')')
		if closeIdx < open {
			return p, fmt.Errorf("malformed command %%%s%%", cmd)
		}
		name, arg, hasArg = cmd[:open], cmd[open+1:closeIdx], true
		if rest := cmd[closeIdx+1:]; rest != "" {
			if rest[0] != ':' {
				return p, fmt.Errorf("malformed command %%%s%%", cmd)
			}
			n, err := strconv.Atoi(rest[1:])
			if err != nil || n <= 0 {
				return p, fmt.Errorf("malformed length in %%%s%%", cmd)
			}
			p.maxLen = n
		}
	}
	switch name {
	case "REQ", "RESP":
		if !hasArg || arg == "" {
			return p, fmt.Errorf("%%%s%% needs a header name", name)
		}
		p.op = opReq
		if name == "RESP" {
			p.op = opResp
		}
		main, alt, _ := strings.Cut(arg, "?")
		p.key = headerKeyForTemplate(main)
		if alt != "" {
			p.alt = headerKeyForTemplate(alt)
		}
		return p, nil
	case "START_TIME":
		p.op = opStartTime
		if hasArg && arg != "" {
			p.lit = arg
		}
		return p, nil
	}
	op, ok := simpleOps[name]
	if !ok || hasArg {
		return p, fmt.Errorf("unsupported variable %%%s%%", cmd)
	}
	p.op = op
	return p, nil
}

func headerKeyForTemplate(name string) string {
	if strings.HasPrefix(name, ":") {
		return strings.ToLower(name)
	}
	return http.CanonicalHeaderKey(name)
}

func (t *template) eval(c *fmtCtx) string {
	if t.static {
		return t.lit
	}
	var b strings.Builder
	for i := range t.parts {
		p := &t.parts[i]
		if p.op == opLiteral {
			b.WriteString(p.lit)
			continue
		}
		v := p.value(c)
		if p.maxLen > 0 && len(v) > p.maxLen {
			v = v[:p.maxLen]
		}
		b.WriteString(v)
	}
	return b.String()
}

func (p *tmplPart) value(c *fmtCtx) string {
	info := c.info
	if info == nil {
		info = &stream.Info{}
	}
	switch p.op {
	case opRemoteAddr:
		if info.Downstream.IsValid() {
			return info.Downstream.String()
		}
	case opRemoteAddrNoPort:
		if info.Downstream.IsValid() {
			return info.Downstream.Addr().String()
		}
	case opRemotePort:
		if info.Downstream.IsValid() {
			return strconv.Itoa(int(info.Downstream.Port()))
		}
	case opLocalAddr:
		if info.DownstreamLocal.IsValid() {
			return info.DownstreamLocal.String()
		}
	case opLocalAddrNoPort:
		if info.DownstreamLocal.IsValid() {
			return info.DownstreamLocal.Addr().String()
		}
	case opLocalPort:
		if info.DownstreamLocal.IsValid() {
			return strconv.Itoa(int(info.DownstreamLocal.Port()))
		}
	case opPeerURISAN:
		return info.PeerPrincipal
	case opSNI:
		return info.RequestedServer
	case opProtocol:
		if info.Protocol != "" {
			return info.Protocol
		}
		if c.r != nil {
			return c.r.Proto
		}
	case opHostname:
		return hostname()
	case opStartTime:
		st := info.Start
		if st.IsZero() {
			st = time.Now()
		}
		if p.lit == "" {
			return st.UTC().Format("2006-01-02T15:04:05.000Z")
		}
		return strftime(p.lit, st.UTC())
	case opUpstreamAddr:
		return info.UpstreamHost
	case opUpstreamCluster:
		return info.Cluster
	case opRouteName:
		return info.RouteName
	case opResponseCode:
		if c.status != 0 {
			return strconv.Itoa(c.status)
		}
		return strconv.Itoa(info.ResponseCode)
	case opResponseFlags:
		return info.Flags.String()
	case opRequestID:
		return info.RequestID
	case opReq:
		if v := c.reqValue(p.key); v != "" || p.alt == "" {
			return v
		}
		return c.reqValue(p.alt)
	case opResp:
		if c.respH == nil {
			return ""
		}
		if v := c.respH.Get(p.key); v != "" || p.alt == "" {
			return v
		}
		return c.respH.Get(p.alt)
	}
	return ""
}

func (c *fmtCtx) reqValue(key string) string {
	if key != "" && key[0] == ':' {
		if c.r == nil {
			return ""
		}
		switch key {
		case ":authority":
			return c.r.Host
		case ":path":
			return requestPath(c.r)
		case ":method":
			return c.r.Method
		case ":scheme":
			return requestScheme(c.r)
		}
		return ""
	}
	if key == "Host" && c.r != nil {
		return c.r.Host
	}
	h := c.reqH
	if h == nil && c.r != nil {
		h = c.r.Header
	}
	return h1.FirstValue(h, key)
}

// strftime formats t with the common strftime conversions Envoy's START_TIME accepts:
// %Y %m %d %H %M %S %y %j %e %z %Z %s, %f and %1f..%9f (fractional seconds), %%.
func strftime(layout string, t time.Time) string {
	var b strings.Builder
	for i := 0; i < len(layout); i++ {
		c := layout[i]
		if c != '%' || i+1 >= len(layout) {
			b.WriteByte(c)
			continue
		}
		i++
		switch d := layout[i]; d {
		case 'Y':
			b.WriteString(strconv.Itoa(t.Year()))
		case 'm':
			pad2(&b, int(t.Month()))
		case 'd':
			pad2(&b, t.Day())
		case 'e':
			b.WriteString(strconv.Itoa(t.Day()))
		case 'H':
			pad2(&b, t.Hour())
		case 'M':
			pad2(&b, t.Minute())
		case 'S':
			pad2(&b, t.Second())
		case 'y':
			pad2(&b, t.Year()%100)
		case 'j':
			b.WriteString(fmt.Sprintf("%03d", t.YearDay()))
		case 'z':
			b.WriteString(t.Format("-0700"))
		case 'Z':
			b.WriteString(t.Format("MST"))
		case 's':
			b.WriteString(strconv.FormatInt(t.Unix(), 10))
		case 'f':
			b.WriteString(fmt.Sprintf("%09d", t.Nanosecond()))
		case '%':
			b.WriteByte('%')
		default:
			if d >= '1' && d <= '9' && i+1 < len(layout) && layout[i+1] == 'f' {
				n := int(d - '0')
				b.WriteString(fmt.Sprintf("%09d", t.Nanosecond())[:n])
				i++
				continue
			}
			b.WriteByte('%')
			b.WriteByte(d)
		}
	}
	return b.String()
}

func pad2(b *strings.Builder, n int) {
	if n < 10 {
		b.WriteByte('0')
	}
	b.WriteString(strconv.Itoa(n))
}

type appendAction uint8

const (
	appendOrAdd       appendAction = iota // APPEND_IF_EXISTS_OR_ADD
	addIfAbsent                           // ADD_IF_ABSENT
	overwriteOrAdd                        // OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIfExists                     // OVERWRITE_IF_EXISTS
)

type headerAdd struct {
	key       string // canonical
	tmpl      template
	action    appendAction
	keepEmpty bool
}

// headerLevel is one level's (route config, virtual host, route or weighted cluster)
// headers_to_remove and headers_to_add. Envoy removes before it adds within a level.
type headerLevel struct {
	remove []string
	add    []headerAdd
}

// headerOps are the levels in the order they apply.
type headerOps []headerLevel

func compileHeaderLevel(adds []*corev3.HeaderValueOption, removes []string, addField, removeField string) (headerLevel, error) {
	var lv headerLevel
	var errs []error
	for i, name := range removes {
		if err := checkMutableHeader(name); err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", removeField, i, err))
			continue
		}
		lv.remove = append(lv.remove, http.CanonicalHeaderKey(name))
	}
	for i, o := range adds {
		a, err := compileHeaderAdd(o)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", addField, i, err))
			continue
		}
		lv.add = append(lv.add, a)
	}
	return lv, errors.Join(errs...)
}

func checkMutableHeader(name string) error {
	if name == "" {
		return errors.New("header name is required")
	}
	if strings.HasPrefix(name, ":") || strings.EqualFold(name, "host") {
		return fmt.Errorf("header %q: pseudo-headers and host may not be modified", name)
	}
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("header %q: invalid name", name)
	}
	return nil
}

func compileHeaderAdd(o *corev3.HeaderValueOption) (headerAdd, error) {
	h := o.GetHeader()
	if h == nil {
		return headerAdd{}, errors.New("header: is required")
	}
	if err := checkMutableHeader(h.GetKey()); err != nil {
		return headerAdd{}, fmt.Errorf("header.key: %w", err)
	}
	value := h.GetValue()
	if len(h.GetRawValue()) > 0 {
		value = string(h.GetRawValue())
	}
	tmpl, err := parseTemplate(value)
	if err != nil {
		return headerAdd{}, fmt.Errorf("header.value: %w", err)
	}
	for _, p := range tmpl.parts {
		// Literal text and START_TIME layouts end up in the value as written.
		if (p.op == opLiteral || p.op == opStartTime) && !httpguts.ValidHeaderFieldValue(p.lit) {
			return headerAdd{}, fmt.Errorf("header.value: invalid characters in %q", value)
		}
	}
	if tmpl.static && !httpguts.ValidHeaderFieldValue(tmpl.lit) {
		return headerAdd{}, fmt.Errorf("header.value: invalid characters in %q", value)
	}
	a := headerAdd{key: http.CanonicalHeaderKey(h.GetKey()), tmpl: tmpl, keepEmpty: o.GetKeepEmptyValue()}
	if ap := o.GetAppend(); ap != nil {
		// The deprecated append flag: true appends, false overwrites.
		if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			return headerAdd{}, errors.New("append and append_action are both set")
		}
		if ap.GetValue() {
			a.action = appendOrAdd
		} else {
			a.action = overwriteOrAdd
		}
		return a, nil
	}
	switch o.GetAppendAction() {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		a.action = appendOrAdd
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		a.action = addIfAbsent
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		a.action = overwriteOrAdd
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		a.action = overwriteIfExists
	default:
		return headerAdd{}, fmt.Errorf("append_action: unknown value %d", o.GetAppendAction())
	}
	return a, nil
}

func (ops headerOps) empty() bool {
	for _, lv := range ops {
		if len(lv.add) > 0 || len(lv.remove) > 0 {
			return false
		}
	}
	return true
}

// apply mutates h.
func (ops headerOps) apply(h http.Header, c *fmtCtx) {
	for i := range ops {
		ops[i].apply(h, c)
	}
}

func (lv *headerLevel) apply(h http.Header, c *fmtCtx) {
	for _, k := range lv.remove {
		delete(h, k)
	}
	for i := range lv.add {
		a := &lv.add[i]
		_, exists := h[a.key]
		switch a.action {
		case addIfAbsent:
			if exists {
				continue
			}
		case overwriteIfExists:
			if !exists {
				continue
			}
		}
		v := a.tmpl.eval(c)
		if v == "" && !a.keepEmpty {
			continue
		}
		if a.action == appendOrAdd {
			h[a.key] = append(h[a.key], v)
		} else {
			h[a.key] = []string{v}
		}
	}
}
