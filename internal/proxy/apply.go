package proxy

import (
	"errors"
	"fmt"
	"iter"
	"slices"
	"sort"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// xDS type URLs, as on the wire.
const (
	TypeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	TypeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	TypeSecret   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// resourceState is the last accepted state of one xDS type, for config_dump.
type resourceState struct {
	version   string
	updated   time.Time
	resources map[string]*anypb.Any
	lastError string // the last NACKed update's error, cleared by the next accepted one
	errorAt   time.Time
	errorVer  string
}

// state holds what the proxy applied, by type, for config_dump and subscriptions.
type state struct {
	mu sync.Mutex
	by map[string]*resourceState
}

func (s *state) get(typeURL string) *resourceState {
	if s.by == nil {
		s.by = map[string]*resourceState{}
	}
	rs := s.by[typeURL]
	if rs == nil {
		rs = &resourceState{}
		s.by[typeURL] = rs
	}
	return rs
}

// Apply implements xdsclient.Handler: it compiles the whole state of one type and swaps
// it in, or returns the error that the client NACKs with, changing nothing.
func (p *Proxy) Apply(typeURL, version string, resources map[string]*anypb.Any) error {
	err := p.apply(typeURL, resources)
	p.state.mu.Lock()
	rs := p.state.get(typeURL)
	if err != nil {
		rs.lastError, rs.errorAt, rs.errorVer = err.Error(), time.Now(), version
	} else {
		rs.version, rs.updated, rs.resources, rs.lastError = version, time.Now(), resources, ""
	}
	p.state.mu.Unlock()
	if err != nil {
		p.log.Warn("rejected xds update", "type", shortType(typeURL), "version", version, "err", err)
		return err
	}
	p.log.Debug("applied xds update", "type", shortType(typeURL), "version", version, "resources", len(resources))
	if typeURL == TypeListener || typeURL == TypeCluster {
		p.markWarm(typeURL)
	}
	return nil
}

func (p *Proxy) apply(typeURL string, resources map[string]*anypb.Any) error {
	switch typeURL {
	case TypeCluster:
		// Each resource is decoded when the manager asks for it and dropped once
		// compiled: the decoded clusters of a whole mesh are not all held at once.
		names := make(map[string]bool, len(resources))
		err := p.clusters.UpdateSeq(func(yield func(*clusterv3.Cluster, error) bool) {
			for _, c := range p.static.clusters {
				if !yield(c, nil) {
					return
				}
			}
			for c, err := range decodeEach(resources, func() *clusterv3.Cluster { return new(clusterv3.Cluster) }) {
				if err == nil {
					names[c.GetName()] = true
				}
				if !yield(c, err) {
					return
				}
			}
		})
		if err != nil {
			return err
		}
		p.dynClusters.Store(&names)
		p.subscribe(TypeEndpoint, p.clusters.EDSNames())
		p.subscribeSecrets()
		return nil
	case TypeEndpoint:
		return p.clusters.UpdateEndpointsSeq(decodeEach(resources, func() *endpointv3.ClusterLoadAssignment { return new(endpointv3.ClusterLoadAssignment) }))
	case TypeListener:
		dyn, err := unmarshalAll[*listenerv3.Listener](resources, func() *listenerv3.Listener { return new(listenerv3.Listener) })
		if err != nil {
			return err
		}
		all := append(slices.Clone(p.static.listeners), dyn...)
		// Subscribe to the routes first, so a new listener's routes are on their way
		// while it binds.
		names, err := rdsNames(all)
		if err != nil {
			return err
		}
		if err := p.listeners.Update(all); err != nil {
			return err
		}
		p.subscribe(TypeRoute, names)
		p.subscribeSecrets()
		return nil
	case TypeRoute:
		rcs, err := unmarshalAll[*routev3.RouteConfiguration](resources, func() *routev3.RouteConfiguration { return new(routev3.RouteConfiguration) })
		if err != nil {
			return err
		}
		return p.routes.Update(rcs)
	case TypeSecret:
		secrets, err := unmarshalAll[*tlsv3.Secret](resources, func() *tlsv3.Secret { return new(tlsv3.Secret) })
		if err != nil {
			return err
		}
		return p.secrets.Update(secrets)
	}
	return fmt.Errorf("unsupported resource type %s", typeURL)
}

func (p *Proxy) subscribe(typeURL string, names []string) {
	if p.xds != nil {
		p.xds.Subscribe(typeURL, names)
	}
}

func (p *Proxy) subscribeSecrets() {
	names := append(p.clusters.SecretNames(), p.listeners.SecretNames()...)
	sort.Strings(names)
	p.subscribe(TypeSecret, slices.Compact(names))
}

// unmarshalAll decodes resources in name order, so compilation and its errors are
// deterministic.
func unmarshalAll[T proto.Message](resources map[string]*anypb.Any, mk func() T) ([]T, error) {
	out := make([]T, 0, len(resources))
	var errs []error
	for m, err := range decodeEach(resources, mk) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	return out, errors.Join(errs...)
}

// decodeEach yields resources decoded one at a time in name order (a resource that
// does not decode yields its error), so compilation and its errors are deterministic
// and a consumer that drops each message holds one at a time.
func decodeEach[T proto.Message](resources map[string]*anypb.Any, mk func() T) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		names := make([]string, 0, len(resources))
		for n := range resources {
			names = append(names, n)
		}
		sort.Strings(names)
		var zero T
		for _, n := range names {
			m := mk()
			if err := resources[n].UnmarshalTo(m); err != nil {
				if !yield(zero, fmt.Errorf("resource %q: %w", n, err)) {
					return
				}
				continue
			}
			if !yield(m, nil) {
				return
			}
		}
	}
}

// rdsNames lists the RDS route configurations the listeners' HTTP connection managers
// name, sorted and unique.
func rdsNames(ls []*listenerv3.Listener) ([]string, error) {
	var names []string
	for _, l := range ls {
		chains := l.GetFilterChains()
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(slices.Clone(chains), dc)
		}
		for ci, fc := range chains {
			for fi, f := range fc.GetFilters() {
				tc := f.GetTypedConfig()
				if tc == nil || tc.MessageName() != "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
					continue
				}
				hcm := new(hcmv3.HttpConnectionManager)
				if err := tc.UnmarshalTo(hcm); err != nil {
					return nil, fmt.Errorf("listener %q: filter_chains[%d].filters[%d]: %w", l.GetName(), ci, fi, err)
				}
				if n := hcm.GetRds().GetRouteConfigName(); n != "" {
					names = append(names, n)
				}
			}
		}
	}
	sort.Strings(names)
	return slices.Compact(names), nil
}

func shortType(typeURL string) string {
	switch typeURL {
	case TypeListener:
		return "LDS"
	case TypeRoute:
		return "RDS"
	case TypeCluster:
		return "CDS"
	case TypeEndpoint:
		return "EDS"
	case TypeSecret:
		return "SDS"
	}
	return typeURL
}
