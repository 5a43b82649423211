package ca

import (
	"fmt"
	"net/url"
	"strings"
)

// Identity is who a workload is, as an Authenticator established it: a service account
// in a namespace, plus the workload (pod) name for logs and audit. The certificate
// carries only the SPIFFE ID of (namespace, service account), like Istio's.
type Identity struct {
	Namespace      string
	ServiceAccount string
	// Workload is the pod or workload name; informational, may be empty.
	Workload string
}

// SpiffeID is the identity's SPIFFE ID in a trust domain:
// "spiffe://<td>/ns/<ns>/sa/<sa>" (the same form as node.Proxy.SpiffeID).
func (id Identity) SpiffeID(trustDomain string) string {
	return "spiffe://" + trustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

func (id Identity) String() string {
	return id.Namespace + "/" + id.ServiceAccount + "/" + id.Workload
}

// Validate checks each part is a Kubernetes-style name (lowercase letters, digits, '-',
// '.'; at most 253 bytes), which also keeps '/' out so "ns/sa/workload" splits one way.
func (id Identity) Validate() error {
	if err := validName(id.Namespace); err != nil {
		return fmt.Errorf("ca: identity namespace %q: %w", id.Namespace, err)
	}
	if err := validName(id.ServiceAccount); err != nil {
		return fmt.Errorf("ca: identity service account %q: %w", id.ServiceAccount, err)
	}
	if id.Workload != "" {
		if err := validName(id.Workload); err != nil {
			return fmt.Errorf("ca: identity workload %q: %w", id.Workload, err)
		}
	}
	return nil
}

func validName(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(s) > 253 {
		return fmt.Errorf("longer than 253 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
		default:
			return fmt.Errorf("byte %d (%q): only lowercase letters, digits, '-' and '.' are allowed", i, c)
		}
	}
	return nil
}

// ParseSpiffeID checks that id is a SPIFFE ID in trustDomain and returns it as a URL.
// Only the plain form is accepted: no user info, port, query, fragment or empty path.
func ParseSpiffeID(id, trustDomain string) (*url.URL, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("ca: identity %q: %w", id, err)
	}
	switch {
	case u.Scheme != "spiffe":
		return nil, fmt.Errorf("ca: identity %q: scheme must be spiffe", id)
	case u.Host != trustDomain:
		return nil, fmt.Errorf("ca: identity %q: trust domain must be %q", id, trustDomain)
	case u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return nil, fmt.Errorf("ca: identity %q: must be spiffe://<trust-domain>/<path> only", id)
	case u.Path == "" || u.Path == "/" || strings.Contains(u.Path, "//"):
		return nil, fmt.Errorf("ca: identity %q: path must not be empty", id)
	}
	return u, nil
}
