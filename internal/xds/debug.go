package xds

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// DebugHandler serves the control plane's xDS debug pages (Istio's /debug paths):
//
//	/debug/syncz                   every proxy's ProxyStatus, JSON
//	/debug/config_dump?proxyID=ID  the configuration generated for that proxy, protojson
//	/debug/connections             the open xDS streams
func (s *Server) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/syncz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Status())
	})
	mux.HandleFunc("GET /debug/config_dump", s.serveConfigDump)
	mux.HandleFunc("GET /debug/connections", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Connections())
	})
	return mux
}

// Connection is one open xDS stream.
type Connection struct {
	ProxyID  string    `json:"proxyID,omitempty"` // empty until the first request
	StreamID int64     `json:"streamID"`
	Delta    bool      `json:"delta"`
	TypeURL  string    `json:"typeURL,omitempty"` // empty for ADS
	OpenedAt time.Time `json:"openedAt"`
}

// Connections lists the open streams, by proxy id then stream.
func (s *Server) Connections() []Connection {
	s.mu.Lock()
	out := make([]Connection, 0, len(s.streams))
	for _, st := range s.streams {
		c := Connection{StreamID: st.key.id, Delta: st.key.delta, TypeURL: st.typeURL, OpenedAt: st.openedAt}
		if st.ps != nil {
			c.ProxyID = st.ps.id
		}
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.ProxyID != b.ProxyID {
			return a.ProxyID < b.ProxyID
		}
		if a.Delta != b.Delta {
			return !a.Delta
		}
		return a.StreamID < b.StreamID
	})
	return out
}

// configDump is /debug/config_dump's body: the proxy's current snapshot.
type configDump struct {
	ProxyID string `json:"proxyID"`
	// Versions and Resources are keyed by type URL; each resource is an Any in protojson.
	Versions  map[string]string            `json:"versions"`
	Resources map[string][]json.RawMessage `json:"resources"`
}

func (s *Server) serveConfigDump(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("proxyID")
	if id == "" {
		http.Error(w, "xds: config_dump: query parameter proxyID is required", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	ps := s.proxies[id]
	var res Resources
	var versions map[string]string
	if ps != nil {
		res, versions = ps.resources, maps.Clone(ps.versions)
	}
	s.mu.Unlock()
	if ps == nil {
		http.Error(w, fmt.Sprintf("xds: config_dump: proxy %q is not connected", id), http.StatusNotFound)
		return
	}
	d := configDump{ProxyID: id, Versions: versions, Resources: map[string][]json.RawMessage{}}
	// res is immutable once generated (see Resources), so it is read without the lock.
	for _, t := range slices.Sorted(maps.Keys(res)) {
		items := sortedByName(res[t])
		list := make([]json.RawMessage, 0, len(items))
		for _, item := range items {
			a, err := anypb.New(item)
			if err == nil {
				var b []byte
				b, err = protojson.Marshal(a)
				list = append(list, b)
			}
			if err != nil {
				http.Error(w, fmt.Sprintf("xds: config_dump: proxy %q: %v", id, err), http.StatusInternalServerError)
				return
			}
		}
		d.Resources[t] = list
	}
	writeJSON(w, d)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "xds: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}
