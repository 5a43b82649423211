// Package meshfile reads weft's mesh file: the services of a local mesh, the workloads
// behind them and how to start each one on this machine. It is the registry source of
// `weft up` (no Kubernetes) and is written for humans:
//
//	mesh: bookinfo
//	namespace: default            # default: "default"
//	trustDomain: cluster.local    # default: "cluster.local"
//	gateway:
//	  port: 8080                  # the ingress gateway's HTTP port on 127.0.0.1
//	services:
//	- name: reviews
//	  ports: [http:9080]          # name:port; the name's prefix is the protocol, as in Istio
//	  workloads:
//	  - name: reviews-v2
//	    labels: {version: v2}     # app=<service> is added
//	    serviceAccount: bookinfo-reviews
//	    command: [$WEFT, sample, bookinfo, reviews, --version, v2, --addr, $APP_ADDR:9080]
//	    env: {LOG_LEVEL: info}
//
// Each workload gets its own loopback addresses, so every service keeps its real port on
// one machine: the workload's sidecar (what the mesh routes to: its "pod IP") listens on
// 127.2.X.Y, and the application listens on 127.1.X.Y. $WEFT, $APP_IP, $APP_ADDR (=
// $APP_IP), $POD_IP, $PROXY (the sidecar's outbound HTTP proxy URL) are expanded in
// command and env.
package meshfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/registry"
)

// Mesh is a parsed mesh file.
type Mesh struct {
	Mesh        string     `json:"mesh"`
	Namespace   string     `json:"namespace,omitempty"`
	TrustDomain string     `json:"trustDomain,omitempty"`
	Gateway     *Gateway   `json:"gateway,omitempty"`
	Services    []*Service `json:"services"`

	// File is where the mesh was read from.
	File string `json:"-"`
}

// Gateway is the local ingress gateway.
type Gateway struct {
	// Port is the HTTP port on 127.0.0.1 (Istio's ingress gateway serves 8080 in its pod).
	Port uint32 `json:"port,omitempty"`
	// Labels select it in Istio Gateway resources; default {istio: ingressgateway}.
	Labels map[string]string `json:"labels,omitempty"`
}

// Service is a service and its workloads.
type Service struct {
	Name      string      `json:"name"`
	Namespace string      `json:"namespace,omitempty"`
	Ports     []string    `json:"ports"`
	Workloads []*Workload `json:"workloads,omitempty"`

	ports []registry.Port
}

// Workload is one instance of a service.
type Workload struct {
	Name           string            `json:"name"`
	Labels         map[string]string `json:"labels,omitempty"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
	Locality       string            `json:"locality,omitempty"`
	// Command starts the application; empty means it is started elsewhere (then
	// Address says where it is).
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// Address, when set, is the application's address; by default weft assigns one.
	Address string `json:"address,omitempty"`
	// NoSidecar runs the workload without a proxy (it is reached in plaintext).
	NoSidecar bool `json:"noSidecar,omitempty"`

	// Assigned by Load.
	AppIP netip.Addr `json:"-"`
	PodIP netip.Addr `json:"-"`
	// Service is the service the workload belongs to.
	Service *Service `json:"-"`
}

// Load reads and validates a mesh file.
func Load(path string) (*Mesh, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse reads a mesh file's content; name is used in errors.
func Parse(data []byte, name string) (*Mesh, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	m := new(Mesh)
	if err := dec.Decode(m); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	m.File = name
	if err := m.complete(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Mesh) complete() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", m.File, field, fmt.Sprintf(format, args...)))
	}
	if m.Namespace == "" {
		m.Namespace = "default"
	}
	if m.TrustDomain == "" {
		m.TrustDomain = "cluster.local"
	}
	if m.Gateway != nil {
		if m.Gateway.Port == 0 {
			m.Gateway.Port = 8080
		}
		if len(m.Gateway.Labels) == 0 {
			m.Gateway.Labels = map[string]string{"istio": "ingressgateway"}
		}
	}
	if len(m.Services) == 0 {
		bad("services", "at least one service is required")
	}
	names := map[string]bool{}
	workloads := map[string]bool{}
	n := 0
	for i, s := range m.Services {
		f := fmt.Sprintf("services[%d]", i)
		if !isDNSLabel(s.Name) {
			bad(f+".name", "%q is not a DNS label (lowercase letters, digits, '-')", s.Name)
		}
		if s.Namespace == "" {
			s.Namespace = m.Namespace
		}
		if names[s.Namespace+"/"+s.Name] {
			bad(f+".name", "duplicate service %q", s.Name)
		}
		names[s.Namespace+"/"+s.Name] = true
		if len(s.Ports) == 0 {
			bad(f+".ports", "at least one port is required")
		}
		for j, p := range s.Ports {
			port, err := parsePort(p)
			if err != nil {
				bad(fmt.Sprintf("%s.ports[%d]", f, j), "%v", err)
				continue
			}
			s.ports = append(s.ports, port)
		}
		for j, w := range s.Workloads {
			wf := fmt.Sprintf("%s.workloads[%d]", f, j)
			w.Service = s
			if w.Name == "" {
				w.Name = fmt.Sprintf("%s-%d", s.Name, j+1)
			}
			if workloads[w.Name] {
				bad(wf+".name", "duplicate workload %q", w.Name)
			}
			workloads[w.Name] = true
			if w.Labels == nil {
				w.Labels = map[string]string{}
			}
			if _, ok := w.Labels["app"]; !ok {
				w.Labels["app"] = s.Name
			}
			if w.ServiceAccount == "" {
				w.ServiceAccount = "default"
			}
			n++
			if n > 250*250 {
				bad(wf, "too many workloads")
				continue
			}
			hi, lo := byte(n/250), byte(n%250+1)
			w.AppIP = netip.AddrFrom4([4]byte{127, 1, hi, lo})
			w.PodIP = netip.AddrFrom4([4]byte{127, 2, hi, lo})
			if w.NoSidecar {
				w.PodIP = w.AppIP
			}
			if w.Address != "" {
				a, err := netip.ParseAddr(w.Address)
				if err != nil {
					bad(wf+".address", "%v", err)
				} else {
					w.AppIP = a
					if w.NoSidecar {
						w.PodIP = a
					}
				}
			}
			if len(w.Command) == 0 && w.Address == "" {
				bad(wf, "command or address is required (how to start it, or where it runs)")
			}
		}
	}
	return errors.Join(errs...)
}

// parsePort reads "name:port" ("http:9080", "grpc-api:50051") or a bare port (TCP).
func parsePort(s string) (registry.Port, error) {
	name, num, ok := strings.Cut(s, ":")
	if !ok {
		name, num = "tcp", s
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return registry.Port{}, fmt.Errorf("port %q: must be name:1..65535", s)
	}
	proto, _, _ := strings.Cut(name, "-")
	return registry.Port{Name: name, Number: uint32(n), Protocol: registry.ParseProtocol(proto)}, nil
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Hostname is a service's FQDN, as Kubernetes names it.
func (m *Mesh) Hostname(s *Service) string {
	return s.Name + "." + s.Namespace + ".svc." + m.TrustDomain
}

// Workloads lists every workload in file order.
func (m *Mesh) Workloads() []*Workload {
	var out []*Workload
	for _, s := range m.Services {
		out = append(out, s.Workloads...)
	}
	return out
}

// Source returns the mesh's services and instances as a registry source.
func (m *Mesh) Source() registry.Source {
	st := &registry.Static{SourceName: "mesh file " + m.File}
	for _, s := range m.Services {
		host := m.Hostname(s)
		st.Svcs = append(st.Svcs, &registry.Service{
			Hostname: host, Name: s.Name, Namespace: s.Namespace, Ports: s.ports, Source: "mesh file " + m.File,
		})
		for _, w := range s.Workloads {
			for _, p := range s.ports {
				st.Insts = append(st.Insts, &registry.Instance{
					Service: host, ServicePort: p.Number, Address: w.PodIP.String(), Port: p.Number,
					Workload: w.Name, Namespace: s.Namespace, Labels: w.Labels, ServiceAccount: w.ServiceAccount,
					Locality: w.Locality, Weight: 1, Healthy: true, Sidecar: !w.NoSidecar,
				})
			}
		}
	}
	registry.SortInstances(st.Insts)
	return st
}

// Ports are the service's parsed ports.
func (s *Service) ParsedPorts() []registry.Port { return s.ports }
