package xds

import (
	"maps"
	"sort"
	"time"

	"github.com/weft-mesh/weft/internal/node"
)

// ProxyStatus is one proxy's sync state, as `weft proxy-status` shows it.
type ProxyStatus struct {
	ID          string    `json:"id"`
	Type        node.Type `json:"type"`
	Connected   bool      `json:"connected"`
	ConnectedAt time.Time `json:"connectedAt"`
	Streams     int       `json:"streams"`
	// PerType by short name: CDS, LDS, RDS, EDS, SDS.
	PerType map[string]TypeStatus `json:"perType"`
	// Versions the proxy should have (its current snapshot), by short name.
	Versions map[string]string `json:"versions,omitempty"`
	// GenErrors counts failed generations for the proxy; LastGenError is the latest,
	// cleared by the next successful generation.
	GenErrors    int    `json:"genErrors,omitempty"`
	LastGenError string `json:"lastGenError,omitempty"`
}

// TypeStatus is what one xDS type's last exchange with a proxy was.
type TypeStatus struct {
	Sent   string    `json:"sent,omitempty"`   // version last sent
	Acked  string    `json:"acked,omitempty"`  // version last ACKed
	Nacked string    `json:"nacked,omitempty"` // version NACKed (cleared by a later ACK)
	Error  string    `json:"error,omitempty"`  // the proxy's NACK error_detail message
	SentAt time.Time `json:"sentAt"`
}

// Synced reports whether the proxy ACKed the last version it was sent.
func (t TypeStatus) Synced() bool { return t.Sent != "" && t.Acked == t.Sent }

// Status is every known proxy's status (connected, or disconnected within
// DisconnectGrace), sorted by proxy id.
func (s *Server) Status() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for _, ps := range s.proxies {
		out = append(out, ps.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// status copies ps; the caller holds Server.mu.
func (ps *proxyState) status() ProxyStatus {
	st := ProxyStatus{
		ID:           ps.id,
		Connected:    ps.streams > 0,
		ConnectedAt:  ps.connectedAt,
		Streams:      ps.streams,
		PerType:      make(map[string]TypeStatus, len(ps.perType)),
		GenErrors:    ps.genErrors,
		LastGenError: ps.lastGenErr,
	}
	if ps.proxy != nil {
		st.Type = ps.proxy.Type
	}
	for k, v := range ps.perType {
		st.PerType[k] = *v
	}
	if ps.versions != nil {
		st.Versions = make(map[string]string, len(ps.versions))
		for t, v := range maps.All(ps.versions) {
			st.Versions[ShortName(t)] = v
		}
	}
	return st
}
