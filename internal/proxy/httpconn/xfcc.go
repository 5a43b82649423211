package httpconn

import (
	"net/http"
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/weft-mesh/weft/internal/proxy/listener"
)

// xfccPolicy is the compiled forward_client_cert_details + set_current_client_cert_details:
// how x-forwarded-client-cert is built for mTLS requests. Istio sets APPEND_FORWARD with
// the URI (the caller's SPIFFE ID) on inbound listeners, which is how a workload learns
// who called it.
type xfccPolicy struct {
	mode hcmv3.HttpConnectionManager_ForwardClientCertDetails
}

func newXFCC(cfg *hcmv3.HttpConnectionManager) (xfccPolicy, error) {
	return xfccPolicy{mode: cfg.GetForwardClientCertDetails()}, nil
}

const xfccHeader = "X-Forwarded-Client-Cert" // canonical: used as the map key directly

func (p xfccPolicy) apply(h http.Header, c *listener.Conn) {
	mtls := c != nil && c.TLS && c.PeerPrincipal != ""
	switch p.mode {
	case hcmv3.HttpConnectionManager_SANITIZE:
		delete(h, xfccHeader)
	case hcmv3.HttpConnectionManager_FORWARD_ONLY:
		if !mtls {
			delete(h, xfccHeader)
		}
	case hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
	case hcmv3.HttpConnectionManager_APPEND_FORWARD, hcmv3.HttpConnectionManager_SANITIZE_SET:
		if !mtls {
			if p.mode == hcmv3.HttpConnectionManager_SANITIZE_SET {
				delete(h, xfccHeader)
			} else if c == nil || !c.TLS {
				// Envoy only forwards an XFCC header received over mTLS.
				delete(h, xfccHeader)
			}
			return
		}
		cur := p.current(c)
		if p.mode == hcmv3.HttpConnectionManager_SANITIZE_SET || h.Get(xfccHeader) == "" {
			h.Set(xfccHeader, cur)
		} else {
			h.Set(xfccHeader, strings.Join(h.Values(xfccHeader), ",")+","+cur)
		}
	}
}

// current is this hop's element. It carries the peer's URI SAN whatever
// set_current_client_cert_details asks: that is the field meshes rely on. Envoy's By and
// Hash fields are not produced yet (the listener does not pass the certificates here).
func (p xfccPolicy) current(c *listener.Conn) string {
	return "URI=" + c.PeerPrincipal
}
