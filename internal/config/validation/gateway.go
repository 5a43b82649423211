package validation

import (
	"net"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

const unixPrefix = "unix://"

// Gateway follows Istio's ValidateGateway (networking.istio.io Gateway).
func Gateway(m Meta, g *networking.Gateway) Result {
	var r Result
	if m.Name != "" && !isK8sLabel(m.Name) {
		invalidf(&r, "metadata.name", m.Name, "invalid gateway name: must be a DNS-1123 label (no dots)")
	}
	p := Path("spec")
	if len(g.Servers) == 0 {
		required(&r, p.Field("servers"))
	}
	portNames := map[string]int{}
	for i, s := range g.Servers {
		sp := p.Field("servers").Index(i)
		if s == nil {
			r.Errorf(sp, "server may not be null")
			continue
		}
		checkServer(&r, sp, s)
		if s.Port != nil && s.Port.Name != "" {
			if prev, dup := portNames[s.Port.Name]; dup {
				r.Errorf(sp.Field("port").Field("name"), "Duplicate value: %q: port names in servers must be unique (also used by servers[%d])", s.Port.Name, prev)
			} else {
				portNames[s.Port.Name] = i
			}
			if !protocolIsHTTP(s.Port.Protocol) && s.GetTls().GetHttpsRedirect() {
				r.Warnf(sp.Field("tls").Field("httpsRedirect"), "tls.httpsRedirect should only be used with http servers")
			}
		}
	}
	checkSelectorLabels(&r, p.Field("selector"), g.Selector, "label")
	return r
}

func checkServer(r *Result, p Path, s *networking.Server) {
	if len(s.Hosts) == 0 {
		required(r, p.Field("hosts"))
	}
	for i, h := range s.Hosts {
		checkNamespacedHost(r, p.Field("hosts").Index(i), h, true)
	}
	portOK := true
	pp := p.Field("port")
	if s.Port == nil {
		required(r, pp)
		portOK = false
	} else {
		if s.Port.Protocol == "" {
			required(r, pp.Field("protocol"))
			portOK = false
		} else if !protocolKnown(s.Port.Protocol) {
			checkProtocol(r, pp.Field("protocol"), s.Port.Protocol)
			portOK = false
		}
		if s.Port.Number > 0 || !strings.HasPrefix(s.Bind, unixPrefix) {
			checkPort(r, pp.Field("number"), int64(s.Port.Number))
		}
		if s.Port.TargetPort > 0 {
			r.Errorf(pp.Field("targetPort"), "targetPort has no impact on Gateways")
		}
		if s.Port.Name == "" {
			required(r, pp.Field("name"))
		}
	}
	if strings.HasPrefix(s.Bind, unixPrefix) {
		checkUnixAddress(r, p.Field("bind"), strings.TrimPrefix(s.Bind, unixPrefix))
		if s.Port != nil && s.Port.Number != 0 {
			r.Errorf(pp.Field("number"), "port number must be 0 for unix domain socket")
		}
	} else if s.Bind != "" && !isIP(s.Bind) {
		invalidf(r, p.Field("bind"), s.Bind, "bind must be an IP address or a unix:// path")
	}
	checkServerTLS(r, p.Field("tls"), s.Tls)
	if portOK {
		switch {
		case protocolIsTLS(s.Port.Protocol) && s.Tls == nil:
			required(r, p.Field("tls"))
		case !protocolIsTLS(s.Port.Protocol) && s.Tls != nil:
			if protocolIsHTTP(s.Port.Protocol) {
				// Plain HTTP servers may only carry httpsRedirect.
				t := s.Tls
				passthrough := t.Mode == networking.ServerTLSSettings_PASSTHROUGH || t.Mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH
				if !passthrough || t.CaCertificates != "" || t.PrivateKey != "" || t.ServerCertificate != "" {
					r.Errorf(p.Field("tls"), "server cannot have TLS settings for plain text HTTP ports")
				}
			} else {
				r.Errorf(p.Field("tls"), "server cannot have TLS settings for non HTTPS/TLS ports")
			}
		}
	}
}

// checkNamespacedHost validates "namespace/dnsName" hosts of Gateway servers and Sidecar
// egress listeners. Gateways also accept a bare dnsName (old style) and IP addresses.
func checkNamespacedHost(r *Result, p Path, host string, gateway bool) {
	ns, name, slash := strings.Cut(host, "/")
	if !slash {
		if gateway {
			checkHostPart(r, p, host, true)
			return
		}
		invalidf(r, p, host, "host must be of form namespace/dnsName")
		return
	}
	if ns == "" || name == "" {
		invalidf(r, p, host, "config namespace and dnsName in host entry cannot be empty")
		return
	}
	if ns != "*" && ns != "." && (gateway || ns != "~") && !isK8sLabel(ns) {
		invalidf(r, p, host, "invalid namespace value %q", ns)
	}
	checkHostPart(r, p, name, gateway)
}

func checkHostPart(r *Result, p Path, name string, gateway bool) {
	if name != "*" && !strings.Contains(name, ".") {
		invalidf(r, p, name, "short names (non FQDN) are not allowed")
	}
	if err := ValidateWildcardDomain(name); err != nil && !(gateway && isIP(name)) {
		invalidf(r, p, name, "%v", err)
	}
	if partialWildcard(name) {
		invalidf(r, p, name, "partial wildcard %q not allowed", name)
	}
}

// Cipher suites Envoy's BoringSSL accepts for Gateway servers.
var cipherSuites = []string{"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
	"ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
	"ECDHE-RSA-AES256-SHA", "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA"}

func cipherKnown(c string) bool {
	if c == "" || c == "ALL" {
		return true
	}
	// Operators ("-", "+", "!") and bracketed groups are passed through to BoringSSL.
	if b := c[0]; !(b >= 'A' && b <= 'Z') && !(b >= 'a' && b <= 'z') && !(b >= '0' && b <= '9') {
		return true
	}
	for _, k := range cipherSuites {
		if k == c {
			return true
		}
	}
	return false
}

func checkServerTLS(r *Result, p Path, t *networking.ServerTLSSettings) {
	if t == nil {
		return
	}
	if (t.MinProtocolVersion == networking.ServerTLSSettings_TLSV1_0 || t.MinProtocolVersion == networking.ServerTLSSettings_TLSV1_1) &&
		len(t.CipherSuites) == 0 {
		r.Warnf(p.Field("minProtocolVersion"), "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers")
	}
	seen := map[string]bool{}
	for i, c := range t.CipherSuites {
		cp := p.Field("cipherSuites").Index(i)
		if !cipherKnown(c) {
			r.Warnf(cp, "ignoring invalid cipher suite %q", c)
		} else if seen[c] {
			r.Warnf(cp, "ignoring duplicate cipher suite %q", c)
		}
		seen[c] = true
	}
	set := 0
	for _, b := range []bool{t.CredentialName != "", len(t.CredentialNames) > 0, len(t.TlsCertificates) > 0} {
		if b {
			set++
		}
	}
	if set > 1 {
		r.Errorf(p, "only one of credentialName, credentialNames or tlsCertificates can be set")
	}
	if len(t.CredentialNames) > 2 {
		r.Errorf(p.Field("credentialNames"), "Too many: %d: must have at most 2 items", len(t.CredentialNames))
	}
	if len(t.TlsCertificates) > 2 {
		r.Errorf(p.Field("tlsCertificates"), "Too many: %d: must have at most 2 items", len(t.TlsCertificates))
	}
	switch t.Mode {
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		// The workload certificate is used; any certificate setting is a mistake.
		for _, f := range []struct{ name, v string }{{"serverCertificate", t.ServerCertificate}, {"privateKey", t.PrivateKey},
			{"caCertificates", t.CaCertificates}, {"credentialName", t.CredentialName}} {
			if f.v != "" {
				r.Errorf(p.Field(f.name), "ISTIO_MUTUAL TLS cannot have associated %s", f.name)
			}
		}
		return
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		if t.CaCrl != "" || t.ServerCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" || t.CredentialName != "" {
			r.Warnf(p, "%v mode does not use certificates, they will be ignored", t.Mode)
		}
	}
	remote := t.CredentialName != "" || len(t.CredentialNames) > 0 || len(t.TlsCertificates) > 0
	switch t.Mode {
	case networking.ServerTLSSettings_SIMPLE:
		if !remote {
			if t.ServerCertificate == "" {
				r.Errorf(p.Field("serverCertificate"), "SIMPLE TLS requires a server certificate (or credentialName)")
			}
			if t.PrivateKey == "" {
				r.Errorf(p.Field("privateKey"), "SIMPLE TLS requires a private key (or credentialName)")
			}
		}
		if t.CaCrl != "" {
			r.Errorf(p.Field("caCrl"), "CRL is not supported with SIMPLE TLS")
		}
	case networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		if !remote {
			if t.ServerCertificate == "" {
				r.Errorf(p.Field("serverCertificate"), "MUTUAL TLS requires a server certificate (or credentialName)")
			}
			if t.PrivateKey == "" {
				r.Errorf(p.Field("privateKey"), "MUTUAL TLS requires a private key (or credentialName)")
			}
			if t.CaCertificates == "" && t.CaCertCredentialName == "" {
				r.Errorf(p.Field("caCertificates"), "MUTUAL TLS requires a client CA bundle (or credentialName)")
			}
		}
	}
	if t.CaCrl != "" && t.CredentialName != "" {
		r.Errorf(p.Field("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the credential")
	}
}

// Sidecar follows Istio's ValidateSidecar.
func Sidecar(m Meta, s *networking.Sidecar) Result {
	var r Result
	p := Path("spec")
	if ws := s.WorkloadSelector; ws != nil {
		checkSelectorLabels(&r, p.Field("workloadSelector").Field("labels"), ws.Labels, "label")
		if len(ws.Labels) == 0 {
			r.Warnf(p.Field("workloadSelector"), "workload selector specified without labels; the sidecar will be applied to all services in namespace")
		}
	}
	if len(s.Egress) == 0 && len(s.Ingress) == 0 && s.OutboundTrafficPolicy == nil && s.InboundConnectionPool == nil {
		r.Errorf(p, "sidecar: empty configuration provided")
		return r
	}
	ports := map[uint32]bool{}
	for i, in := range s.Ingress {
		ip := p.Field("ingress").Index(i)
		if in == nil {
			r.Errorf(ip, "ingress may not be null")
			continue
		}
		if in.Port == nil {
			required(&r, ip.Field("port"))
			continue
		}
		if in.Port.TargetPort > 0 {
			r.Errorf(ip.Field("port").Field("targetPort"), "targetPort has no impact on Sidecars")
		}
		checkSidecarPort(&r, ip.Field("port"), in.Port, in.Bind)
		if ports[in.Port.Number] {
			r.Errorf(ip.Field("port").Field("number"), "Duplicate value: %d: ports on IP bound listeners must be unique", in.Port.Number)
		}
		ports[in.Port.Number] = true
		if in.DefaultEndpoint != "" {
			checkDefaultEndpoint(&r, ip.Field("defaultEndpoint"), in.DefaultEndpoint)
		}
		if t := in.Tls; t != nil {
			tp := ip.Field("tls")
			if len(t.SubjectAltNames) > 0 {
				r.Errorf(tp.Field("subjectAltNames"), "subjectAltNames is not supported in ingress tls")
			}
			if t.HttpsRedirect {
				r.Errorf(tp.Field("httpsRedirect"), "httpsRedirect is not supported")
			}
			if t.CredentialName != "" {
				r.Errorf(tp.Field("credentialName"), "credentialName is not currently supported")
			}
			if t.Mode == networking.ServerTLSSettings_ISTIO_MUTUAL || t.Mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH {
				r.Errorf(tp.Field("mode"), "Unsupported value: %q: cannot be used in sidecar ingress tls", t.Mode.String())
			}
			checkServerTLS(&r, tp, t)
		}
		checkConnectionPool(&r, ip.Field("connectionPool"), in.ConnectionPool)
		if in.ConnectionPool.GetHttp() != nil && !protocolIsHTTP(in.Port.Protocol) {
			r.Warnf(ip.Field("connectionPool").Field("http"), "HTTP connection pool settings are configured for port %d but its protocol is not HTTP (%s); only TCP settings will apply",
				in.Port.Number, in.Port.Protocol)
		}
	}
	checkConnectionPool(&r, p.Field("inboundConnectionPool"), s.InboundConnectionPool)

	ports = map[uint32]bool{}
	uds := map[string]bool{}
	catchAll := false
	for i, e := range s.Egress {
		ep := p.Field("egress").Index(i)
		if e == nil {
			r.Errorf(ep, "egress listener may not be null")
			continue
		}
		if e.Port == nil {
			// Only one catch-all listener, and it must be last.
			switch {
			case catchAll:
				r.Errorf(ep, "egress can have only one listener with empty port")
				continue
			case i != len(s.Egress)-1:
				r.Errorf(ep, "the egress listener with empty port should be the last listener in the list")
			default:
				catchAll = true
			}
		} else {
			if e.Port.TargetPort > 0 {
				r.Errorf(ep.Field("port").Field("targetPort"), "targetPort has no impact on Sidecars")
			}
			if e.Port.Number == 0 {
				checkProtocol(&r, ep.Field("port").Field("protocol"), e.Port.Protocol)
				if !strings.HasPrefix(e.Bind, unixPrefix) {
					r.Errorf(ep.Field("bind"), "ports with 0 value must have a unix domain socket bind address")
				} else {
					checkUnixAddress(&r, ep.Field("bind"), strings.TrimPrefix(e.Bind, unixPrefix))
				}
				if e.CaptureMode != networking.CaptureMode_DEFAULT && e.CaptureMode != networking.CaptureMode_NONE {
					r.Errorf(ep.Field("captureMode"), "captureMode must be DEFAULT/NONE for unix domain socket listeners")
				}
				if uds[e.Bind] {
					r.Errorf(ep.Field("bind"), "Duplicate value: %q: unix domain socket values for listeners must be unique", e.Bind)
				}
				uds[e.Bind] = true
			} else {
				checkSidecarPort(&r, ep.Field("port"), e.Port, e.Bind)
				if ports[e.Port.Number] {
					r.Errorf(ep.Field("port").Field("number"), "Duplicate value: %d: ports on IP bound listeners must be unique", e.Port.Number)
				}
				ports[e.Port.Number] = true
			}
		}
		if len(e.Hosts) == 0 {
			required(&r, ep.Field("hosts"))
		}
		byNS := map[string]map[string]bool{}
		for j, h := range e.Hosts {
			hp := ep.Field("hosts").Index(j)
			checkNamespacedHost(&r, hp, h, false)
			ns, svc, ok := strings.Cut(h, "/")
			if !ok {
				continue
			}
			if ns == "." {
				ns = m.Namespace
			}
			if byNS[ns] == nil {
				byNS[ns] = map[string]bool{}
			}
			if byNS[ns][svc] || byNS[ns]["*"] || (svc == "*" && len(byNS[ns]) > 0) {
				r.Warnf(hp, "duplicated egress host: %s", h)
			}
			byNS[ns][svc] = true
		}
		if byNS["*"]["*"] && len(byNS) != 1 {
			r.Warnf(ep.Field("hosts"), "`*/*` host select all resources, no other hosts can be added")
		}
	}
	if tp := s.OutboundTrafficPolicy; tp != nil && tp.EgressProxy != nil {
		op := p.Field("outboundTrafficPolicy")
		if tp.Mode != networking.OutboundTrafficPolicy_ALLOW_ANY {
			r.Errorf(op.Field("egressProxy"), "egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode")
		} else {
			if err := ValidateFQDN(tp.EgressProxy.Host); err != nil {
				invalidf(&r, op.Field("egressProxy").Field("host"), tp.EgressProxy.Host, "%v", err)
			}
			if tp.EgressProxy.Port == nil {
				required(&r, op.Field("egressProxy").Field("port"))
			} else {
				checkDestination(&r, op.Field("egressProxy"), tp.EgressProxy)
			}
		}
	}
	return r
}

func checkSidecarPort(r *Result, p Path, port *networking.SidecarPort, bind string) {
	if port.Name != "" {
		checkPortName(r, p.Field("name"), port.Name)
	}
	checkProtocol(r, p.Field("protocol"), port.Protocol)
	checkPort(r, p.Field("number"), int64(port.Number))
	if bind != "" && !isIP(bind) {
		invalidf(r, p, bind, "bind must be an IP address")
	}
}

// checkDefaultEndpoint: 127.0.0.1:port, 0.0.0.0:port, [::1]:port, [::]:port, :port or unix://path.
func checkDefaultEndpoint(r *Result, p Path, ep string) {
	if strings.HasPrefix(ep, unixPrefix) {
		checkUnixAddress(r, p, strings.TrimPrefix(ep, unixPrefix))
		return
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		invalidf(r, p, ep, "%v", err)
		return
	}
	switch host {
	case "", "127.0.0.1", "0.0.0.0", "::1", "::":
	default:
		invalidf(r, p, ep, "defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset")
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		invalidf(r, p, ep, "defaultEndpoint port (%s) is not a number", port)
		return
	}
	checkPort(r, p, int64(n))
}
