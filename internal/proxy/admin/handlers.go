package admin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// endpoint is one admin path: its help line, and whether it changes state (POST only,
// as Envoy requires for mutating endpoints).
type endpoint struct {
	path    string
	help    string
	post    bool
	handler http.HandlerFunc
}

func (s *Server) endpoints() []endpoint {
	return []endpoint{
		{"/clusters", "upstream cluster status (?format=json)", false, s.clusters},
		{"/config_dump", "dump current config (?resource=, e.g. dynamic_active_clusters)", false, s.configDump},
		{"/drain_listeners", "drain listeners (?inboundonly)", true, s.drainListeners},
		{"/heap_dump", "dump the heap profile in pprof format (?gc=1 collects first)", false, s.heapDump},
		{"/logging", "query/change logging level (?level=debug|info|warn|error)", true, s.logging},
		{"/memory", "current memory allocation and process RSS", false, s.memory},
		{"/quitquitquit", "exit the server gracefully", true, s.quit},
		{"/ready", "print server state, 200 when LIVE", false, s.ready},
		{"/server_info", "print server version/status information", false, s.serverInfo},
		{"/stats", "print server stats (?filter=regex, ?usedonly, ?format=json|prometheus)", false, s.stats},
		{"/stats/prometheus", "print server stats in prometheus format", false, s.prometheus},
	}
}

func (s *Server) adminMux() http.Handler {
	mux := http.NewServeMux()
	eps := s.endpoints()
	for _, e := range eps {
		mux.HandleFunc(e.path, methodGuard(e))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		b.WriteString("admin commands are:\n")
		for _, e := range eps {
			method := ""
			if e.post {
				method = " (POST)"
			}
			fmt.Fprintf(&b, "  %s%s: %s\n", e.path, method, e.help)
		}
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		if r.URL.Path != "/" {
			w.WriteHeader(http.StatusNotFound)
		}
		_, _ = io.WriteString(w, b.String())
	})
	return mux
}

func methodGuard(e endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case e.post && r.Method != http.MethodPost:
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "This endpoint requires POST", http.StatusMethodNotAllowed)
			return
		case !e.post && r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		e.handler(w, r)
	}
}

func (s *Server) healthMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.opts.Source.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

func (s *Server) promMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/stats/prometheus", s.prometheus)
	return mux
}

// serverState is Envoy's envoy.admin.v3.ServerInfo.State: its numbers are the
// server.state gauge, its names what /ready answers.
type serverState int32

const (
	stateLive            serverState = 0
	stateDraining        serverState = 1
	statePreInitializing serverState = 2
	stateInitializing    serverState = 3
)

func (st serverState) String() string {
	switch st {
	case stateLive:
		return "LIVE"
	case stateDraining:
		return "DRAINING"
	case statePreInitializing:
		return "PRE_INITIALIZING"
	case stateInitializing:
		return "INITIALIZING"
	}
	return strconv.Itoa(int(st))
}

// state is Envoy's server state as /ready and server.state report it.
func (s *Server) state() serverState {
	if s.opts.Source.Ready() {
		return stateLive
	}
	if s.ctx.Err() != nil {
		return stateDraining
	}
	return stateInitializing
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	if st != stateLive {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, st.String()+"\n")
}

func (s *Server) serverInfo(w http.ResponseWriter, r *http.Request) {
	var v any
	if si, ok := s.opts.Source.(ServerInfoSource); ok {
		v = si.ServerInfo()
	}
	if v == nil {
		up := durationpb.New(time.Since(s.started).Truncate(time.Second))
		st := s.state()
		v = &Message{Type: "envoy.admin.v3.ServerInfo", Fields: []Field{
			{"version", or(s.opts.Version, "weft")},
			{"state", Enum{int32(st), st.String()}},
			{"uptime_current_epoch", up},
			{"uptime_all_epochs", up},
		}}
	}
	if m, ok := v.(*Message); ok {
		writeMessage(w, m)
		return
	}
	if m, ok := v.(proto.Message); ok {
		writeProto(w, m)
		return
	}
	writeJSON(w, v)
}

func writeProto(w http.ResponseWriter, m proto.Message) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		http.Error(w, "admin: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func writeMessage(w http.ResponseWriter, m interface{ JSON() ([]byte, error) }) {
	b, err := m.JSON()
	if err != nil {
		http.Error(w, "admin: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "admin: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func (s *Server) configDump(w http.ResponseWriter, r *http.Request) {
	resource := r.URL.Query().Get("resource")
	d, err := s.opts.Source.ConfigDump(resource)
	if err == nil && resource != "" && len(d.Configs) == 0 {
		var full *ConfigDump
		if full, err = s.opts.Source.ConfigDump(""); err == nil {
			var ok bool
			if d, ok = pickResource(full, resource); !ok {
				err = fmt.Errorf("resource %q: %w", resource, ErrNotFound)
			}
		}
	}
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNotFound) {
			code = http.StatusNotFound
		}
		http.Error(w, "admin: config_dump: "+err.Error(), code)
		return
	}
	writeMessage(w, d)
}

func (s *Server) drainListeners(w http.ResponseWriter, r *http.Request) {
	_, inboundOnly := r.URL.Query()["inboundonly"]
	// Envoy answers at once and drains in the background; the drain ends with the
	// listeners' own timeout, or when the admin server closes.
	go func() {
		if err := s.opts.Source.DrainListeners(s.ctx, inboundOnly); err != nil && s.ctx.Err() == nil {
			s.log.Warn("drain_listeners", "err", err)
		}
	}()
	_, _ = io.WriteString(w, "OK\n")
}

func (s *Server) quit(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "OK\n")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// After the reply: the shutdown closes this server.
	go s.opts.Source.Quit()
}

func (s *Server) logging(w http.ResponseWriter, r *http.Request) {
	lv := s.opts.LogLevel
	if lv == nil {
		http.Error(w, "admin: logging level is not adjustable", http.StatusNotImplemented)
		return
	}
	if l := r.URL.Query().Get("level"); l != "" {
		var level slog.Level
		switch strings.ToLower(l) {
		case "trace", "debug":
			level = slog.LevelDebug
		case "info":
			level = slog.LevelInfo
		case "warn", "warning":
			level = slog.LevelWarn
		case "error", "critical", "off":
			level = slog.LevelError
		default:
			http.Error(w, "admin: unknown level "+strconv.Quote(l), http.StatusBadRequest)
			return
		}
		lv.Set(level)
	}
	fmt.Fprintf(w, "active loggers:\n  weft: %s\n", strings.ToLower(lv.Level().String()))
}

// refreshServerStats sets Envoy's server.* gauges before stats are read: state and
// liveness (read by Istio's agent as server.state and listener_manager.workers_started),
// uptime and memory.
func (s *Server) refreshServerStats() {
	st := s.opts.Stats
	state := s.state()
	st.Gauge("server.state").Set(int64(state))
	live, workers := int64(0), int64(0)
	if state == stateLive {
		live, workers = 1, 1
	}
	st.Gauge("server.live").Set(live)
	st.Gauge("listener_manager.workers_started").Set(workers)
	st.Gauge("server.uptime").Set(int64(time.Since(s.started).Seconds()))
	st.Gauge("server.concurrency").Set(int64(runtime.GOMAXPROCS(0)))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.Gauge("server.memory_allocated").Set(int64(ms.HeapAlloc))
	st.Gauge("server.memory_heap_size").Set(int64(ms.HeapSys))
	rss, _ := procStatus()
	if rss == 0 {
		rss = ms.Sys
	}
	st.Gauge("server.memory_physical_size").Set(int64(rss))
}

func (s *Server) prometheus(w http.ResponseWriter, r *http.Request) {
	s.refreshServerStats()
	var buf bytes.Buffer
	if err := s.opts.Stats.WritePrometheus(&buf); err != nil {
		http.Error(w, "admin: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

// statLine is one metric of a /stats listing: "name: value".
type statLine struct {
	name, value string
	numeric     bool
	n           int64
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "prometheus" {
		s.prometheus(w, r)
		return
	}
	var match func([]byte) bool
	if f := q.Get("filter"); f != "" {
		re, err := regexp.Compile(f)
		if err != nil {
			http.Error(w, "admin: filter: "+err.Error(), http.StatusBadRequest)
			return
		}
		match = re.Match
	}
	_, usedOnly := q["usedonly"]
	s.refreshServerStats()
	var lines []statLine
	for _, m := range s.opts.Stats.Metrics(match) {
		l := statLine{name: m.Name, numeric: m.Histogram == nil, n: m.Value}
		if l.numeric {
			l.value = strconv.FormatInt(m.Value, 10)
		} else {
			l.value = m.Histogram.Summary()
		}
		// usedonly: Envoy lists metrics ever updated; a zero or empty one is taken as unused.
		if usedOnly && (l.numeric && l.n == 0 || !l.numeric && m.Histogram.Count() == 0) {
			continue
		}
		lines = append(lines, l)
	}
	if format == "json" {
		type jstat struct {
			Name      string `json:"name"`
			Value     *int64 `json:"value,omitempty"`
			Histogram string `json:"histogram,omitempty"`
		}
		out := struct {
			Stats []jstat `json:"stats"`
		}{Stats: make([]jstat, 0, len(lines))}
		for _, l := range lines {
			j := jstat{Name: l.name}
			if l.numeric {
				n := l.n
				j.Value = &n
			} else {
				j.Histogram = l.value
			}
			out.Stats = append(out.Stats, j)
		}
		writeJSON(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	bw := bufio.NewWriter(w)
	for _, l := range lines {
		bw.WriteString(l.name)
		bw.WriteString(": ")
		bw.WriteString(l.value)
		bw.WriteByte('\n')
	}
	_ = bw.Flush()
}
