package control

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/config"
)

// api is the control plane's HTTP API on the monitoring port: what `weft apply`,
// `weft delete`, `weft get`, `weft proxy-status` and `weft status` call.
//
//	GET    /ready                     200 once the first snapshot is served
//	GET    /metrics                   Prometheus
//	GET    /debug/syncz ...           the xDS server's debug handlers
//	GET    /apis/config?kind=K[&namespace=N][&name=X]   resources as YAML
//	POST   /apis/config?file=F        apply a YAML/JSON file (validated whole)
//	DELETE /apis/config?file=F        delete the resources a YAML/JSON file names
//	GET    /apis/errors               files of the config directory that are rejected
type api struct {
	s       *Server
	mu      sync.Mutex
	sources map[string][]config.Key // "api:<file>" -> keys applied from it
}

func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-a.s.ready:
			fmt.Fprintln(w, "ready")
		default:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.s.xds.Metrics(), promhttp.HandlerOpts{}))
	mux.Handle("/debug/", a.s.xds.DebugHandler())
	mux.HandleFunc("GET /apis/config", a.get)
	mux.HandleFunc("POST /apis/config", a.apply)
	mux.HandleFunc("DELETE /apis/config", a.delete)
	mux.HandleFunc("GET /apis/errors", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.s.dir.errors())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// parse reads a request body as a config file; the reply carries every error.
func parse(w http.ResponseWriter, r *http.Request) (*config.FileResult, bool) {
	name := r.URL.Query().Get("file")
	if name == "" {
		name = "request"
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	res := config.ParseFile(name, data)
	if !res.OK() {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprintln(w, res.Err())
		return nil, false
	}
	return res, true
}

func (a *api) apply(w http.ResponseWriter, r *http.Request) {
	res, ok := parse(w, r)
	if !ok {
		return
	}
	source := "api:" + res.File
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.s.store.Apply(source, res.Resources); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	keys := make([]config.Key, 0, len(res.Resources))
	var lines []string
	for _, rs := range res.Resources {
		keys = append(keys, rs.Key())
		lines = append(lines, rs.String()+" applied")
	}
	a.sources[source] = keys
	for _, ig := range res.Ignored {
		lines = append(lines, fmt.Sprintf("%v ignored", ig))
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	res, ok := parse(w, r)
	if !ok {
		return
	}
	want := map[config.Key]bool{}
	for _, rs := range res.Resources {
		want[rs.Key()] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	deleted := map[config.Key]bool{}
	srcs := make([]string, 0, len(a.sources))
	for s := range a.sources {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	for _, src := range srcs {
		var del, keep []config.Key
		for _, k := range a.sources[src] {
			if want[k] {
				del = append(del, k)
				deleted[k] = true
			} else {
				keep = append(keep, k)
			}
		}
		if len(del) == 0 {
			continue
		}
		if err := a.s.store.Delete(src, del...); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		a.sources[src] = keep
	}
	var lines []string
	for _, rs := range res.Resources {
		if deleted[rs.Key()] {
			lines = append(lines, rs.String()+" deleted")
		} else {
			lines = append(lines, rs.String()+" not found among applied resources (resources from the config directory are deleted by removing their file)")
		}
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

// get lists resources as a YAML stream of Kubernetes-shaped objects.
func (a *api) get(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind, ok := kindByName(q.Get("kind"))
	if !ok {
		http.Error(w, fmt.Sprintf("unknown kind %q", q.Get("kind")), http.StatusBadRequest)
		return
	}
	name := q.Get("name")
	var docs []string
	for _, rs := range a.s.store.List(kind, q.Get("namespace")) {
		if name != "" && rs.Name != name {
			continue
		}
		obj := map[string]any{
			"apiVersion": rs.APIVersion,
			"kind":       rs.GVK().Kind,
			"metadata":   map[string]any{"name": rs.Name, "namespace": rs.Namespace, "labels": rs.Labels, "annotations": map[string]string{"weft.dev/source": rs.Source.String()}},
			"spec":       rs.Spec,
		}
		js, err := json.Marshal(obj)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		docs = append(docs, string(y))
	}
	if name != "" && len(docs) == 0 {
		http.Error(w, fmt.Sprintf("%s %q not found", kind, name), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	fmt.Fprint(w, strings.Join(docs, "---\n"))
}

// kindByName accepts a kind's name in any case, its plural, or Istio's short names.
func kindByName(s string) (config.Kind, bool) {
	s = strings.ToLower(s)
	// kubectl's qualified form, "gateways.gateway.networking.k8s.io", names the group:
	// the only way to tell the Gateway API Gateway from Istio's.
	s, group, _ := strings.Cut(s, ".")
	short := map[string]string{"vs": "virtualservice", "dr": "destinationrule", "gw": "gateway", "se": "serviceentry",
		"we": "workloadentry", "pa": "peerauthentication", "ap": "authorizationpolicy", "ra": "requestauthentication"}
	if long, ok := short[s]; ok {
		s = long
	}
	s = strings.TrimSuffix(s, "s")
	s = strings.TrimSuffix(s, "ie") // policies -> polic(y)
	for _, k := range config.Kinds() {
		if group != "" && k.Group() != group {
			continue
		}
		n := strings.ToLower(k.String())
		if n == s || strings.TrimSuffix(n, "y") == s {
			return k, true
		}
	}
	return config.KindUnknown, false
}
