package validation

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// ServiceEntry follows Istio's ValidateServiceEntry plus its CRD rules.
func ServiceEntry(m Meta, se *networking.ServiceEntry) Result {
	var r Result
	p := Path("spec")
	if ws := se.WorkloadSelector; ws != nil {
		lp := p.Field("workloadSelector").Field("labels")
		for _, k := range sortedStringKeys(ws.Labels) {
			v := ws.Labels[k]
			switch {
			case k == "":
				invalidf(&r, lp, k, "empty key is not supported in selector")
			case strings.Contains(k, "*") || strings.Contains(v, "*"):
				invalidf(&r, lp.Key(k), v, "wildcard is not supported in selector")
			default:
				checkLabels(&r, lp, map[string]string{k: v})
			}
		}
		if len(ws.Labels) == 0 {
			r.Warnf(p.Field("workloadSelector"), "workload selector specified without labels; the service entry will select all workloads in the namespace")
		}
		if se.Endpoints != nil {
			r.Errorf(p, "only one of WorkloadSelector or Endpoints can be set")
		}
	}
	if len(se.Hosts) == 0 {
		required(&r, p.Field("hosts"))
	}
	for i, h := range se.Hosts {
		hp := p.Field("hosts").Index(i)
		if h == "*" {
			invalidf(&r, hp, h, "hostname cannot be wildcard")
			continue
		}
		if err := ValidateWildcardDomain(h); err != nil {
			invalidf(&r, hp, h, "%v", err)
		} else if partialWildcard(h) {
			r.Warnf(hp, "partial wildcard %q not allowed", h)
		}
	}
	cidr := false
	for i, a := range se.Addresses {
		cidr = cidr || strings.Contains(a, "/")
		if err := validateIPOrCIDR(a); err != nil {
			invalidf(&r, p.Field("addresses").Index(i), a, "%v", err)
		}
	}
	if cidr && se.Resolution != networking.ServiceEntry_NONE && se.Resolution != networking.ServiceEntry_STATIC {
		r.Errorf(p.Field("addresses"), "CIDR addresses are allowed only for NONE/STATIC resolution types")
	}

	portNames := map[string]bool{}
	portNumbers := map[uint32]bool{}
	for i, port := range se.Ports {
		pp := p.Field("ports").Index(i)
		if port == nil {
			r.Errorf(pp, "service entry port may not be null")
			continue
		}
		if portNames[port.Name] {
			r.Errorf(pp.Field("name"), "Duplicate value: %q", port.Name)
		}
		portNames[port.Name] = true
		if portNumbers[port.Number] {
			invalidf(&r, pp.Field("number"), port.Number, "port number cannot be duplicated")
		}
		portNumbers[port.Number] = true
		checkPortName(&r, pp.Field("name"), port.Name)
		checkProtocol(&r, pp.Field("protocol"), port.Protocol)
		checkPort(&r, pp.Field("number"), int64(port.Number))
		if port.TargetPort != 0 {
			checkPort(&r, pp.Field("targetPort"), int64(port.TargetPort))
			if se.Resolution == networking.ServiceEntry_NONE {
				r.Warnf(pp.Field("targetPort"), "targetPort has no effect when resolution mode is NONE")
			}
		}
	}

	switch se.Resolution {
	case networking.ServiceEntry_NONE:
		if len(se.Endpoints) != 0 {
			r.Errorf(p.Field("endpoints"), "NONE mode cannot set endpoints")
		}
		if se.WorkloadSelector != nil {
			r.Warnf(p.Field("workloadSelector"), "workloadSelector should not be set when resolution mode is NONE")
		}
	case networking.ServiceEntry_STATIC:
		for i, ep := range se.Endpoints {
			checkWorkloadEntry(&r, p.Field("endpoints").Index(i), ep, portNames, false)
		}
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.Endpoints) == 0 {
			for i, h := range se.Hosts {
				if h != "*" && ValidateFQDN(h) != nil {
					invalidf(&r, p.Field("hosts").Index(i), h, "hosts must be FQDN if no endpoints are provided for resolution mode %s", se.Resolution)
				}
			}
		}
		if se.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN && len(se.Endpoints) > 1 {
			r.Errorf(p.Field("endpoints"), "DNS_ROUND_ROBIN mode cannot have multiple endpoints")
		}
		for i, ep := range se.Endpoints {
			checkWorkloadEntry(&r, p.Field("endpoints").Index(i), ep, portNames, true)
		}
		if se.WorkloadSelector != nil {
			r.Warnf(p.Field("workloadSelector"), "workloadSelector should not be set when resolution mode is %v", se.Resolution)
		}
	case networking.ServiceEntry_DYNAMIC_DNS:
		if len(se.Endpoints) != 0 {
			r.Errorf(p.Field("endpoints"), "DYNAMIC_DNS mode cannot set endpoints")
		}
	}

	// Plain TCP carries no host name, so one port cannot serve several hosts unless the
	// hosts are ignored (resolution NONE).
	if se.Resolution != networking.ServiceEntry_NONE && len(se.Hosts) > 1 {
		for i, port := range se.Ports {
			if port != nil && !protocolIsHTTP(port.Protocol) && !protocolIsTLS(port.Protocol) {
				r.Errorf(p.Field("ports").Index(i), "multiple hosts provided with non-HTTP, non-TLS ports")
				break
			}
		}
	}
	checkExportTo(&r, p.Field("exportTo"), m.Namespace, se.ExportTo, true)
	return r
}

// checkWorkloadEntry validates a WorkloadEntry spec or a ServiceEntry endpoint. servicePorts
// (nil for a standalone WorkloadEntry) are the port names endpoint ports must refer to.
func checkWorkloadEntry(r *Result, p Path, we *networking.WorkloadEntry, servicePorts map[string]bool, allowFQDN bool) {
	if we == nil {
		r.Errorf(p, "endpoint may not be null")
		return
	}
	addr := we.Address
	switch {
	case addr == "":
		if we.Network == "" {
			r.Errorf(p, "Address is required")
		} else {
			r.Warnf(p.Field("address"), "address is unset with network %q", we.Network)
		}
	case strings.HasPrefix(addr, unixPrefix):
		checkUnixAddress(r, p.Field("address"), strings.TrimPrefix(addr, unixPrefix))
		if len(we.Ports) != 0 {
			r.Errorf(p, "UDS may not include ports")
		}
	case isIP(addr):
	case !allowFQDN:
		invalidf(r, p.Field("address"), addr, "endpoint address is not a valid IP address")
	case ValidateFQDN(addr) != nil:
		invalidf(r, p.Field("address"), addr, "endpoint address is not a valid FQDN or an IP address")
	}
	checkEndpointPorts(r, p.Field("ports"), we.Ports, servicePorts)
	checkLabels(r, p.Field("labels"), we.Labels)
}

func checkEndpointPorts(r *Result, p Path, ports map[string]uint32, servicePorts map[string]bool) {
	for _, name := range sortedStringKeys(ports) {
		if len(name) >= 63 || !dnsLabelRE.MatchString(name) {
			invalidf(r, p, name, "port name must be valid")
			continue
		}
		if servicePorts != nil && !servicePorts[name] {
			invalidf(r, p.Key(name), name, "endpoint port is not defined by the service entry")
		}
		checkPort(r, p.Key(name), int64(ports[name]))
	}
}

// WorkloadEntry follows Istio's ValidateWorkloadEntry.
func WorkloadEntry(_ Meta, we *networking.WorkloadEntry) Result {
	var r Result
	checkWorkloadEntry(&r, "spec", we, nil, true)
	return r
}

// WorkloadGroup follows Istio's ValidateWorkloadGroup and its CRD rules.
func WorkloadGroup(_ Meta, wg *networking.WorkloadGroup) Result {
	var r Result
	p := Path("spec")
	if wg.Metadata != nil {
		checkLabels(&r, p.Field("metadata").Field("labels"), wg.Metadata.Labels)
	}
	if t := wg.Template; t == nil {
		required(&r, p.Field("template"))
	} else {
		tp := p.Field("template")
		if strings.HasPrefix(t.Address, unixPrefix) {
			checkUnixAddress(&r, tp.Field("address"), strings.TrimPrefix(t.Address, unixPrefix))
			if len(t.Ports) != 0 {
				r.Errorf(tp, "UDS may not include ports")
			}
		}
		checkEndpointPorts(&r, tp.Field("ports"), t.Ports, nil)
		checkLabels(&r, tp.Field("labels"), t.Labels)
	}
	if pr := wg.Probe; pr != nil {
		pp := p.Field("probe")
		for _, f := range []struct {
			name string
			v    int32
		}{{"periodSeconds", pr.PeriodSeconds}, {"initialDelaySeconds", pr.InitialDelaySeconds},
			{"timeoutSeconds", pr.TimeoutSeconds}, {"successThreshold", pr.SuccessThreshold}, {"failureThreshold", pr.FailureThreshold}} {
			nonNegative(&r, pp.Field(f.name), f.v)
		}
		switch hc := pr.HealthCheckMethod.(type) {
		case *networking.ReadinessProbe_HttpGet:
			hp := pp.Field("httpGet")
			if hc.HttpGet == nil {
				required(&r, hp)
				break
			}
			checkPort(&r, hp.Field("port"), int64(hc.HttpGet.Port))
			if s := hc.HttpGet.Scheme; s != "" && s != "HTTP" && s != "HTTPS" {
				invalidf(&r, hp.Field("scheme"), s, "scheme must be one of [HTTP, HTTPS]")
			}
			for i, h := range hc.HttpGet.HttpHeaders {
				np := hp.Field("httpHeaders").Index(i).Field("name")
				if h == nil || !headerNameRE.MatchString(h.Name) {
					invalidf(&r, np, h.GetName(), "%s in body should match '%s'", np, headerNameRE)
				}
			}
		case *networking.ReadinessProbe_TcpSocket:
			if hc.TcpSocket == nil {
				required(&r, pp.Field("tcpSocket"))
				break
			}
			checkPort(&r, pp.Field("tcpSocket").Field("port"), int64(hc.TcpSocket.Port))
		case *networking.ReadinessProbe_Grpc:
			if hc.Grpc == nil {
				required(&r, pp.Field("grpc"))
				break
			}
			checkPort(&r, pp.Field("grpc").Field("port"), int64(hc.Grpc.Port))
		case *networking.ReadinessProbe_Exec:
			if hc.Exec == nil || len(hc.Exec.Command) == 0 {
				required(&r, pp.Field("exec").Field("command"))
			}
		default:
			r.Errorf(pp, "one of httpGet, tcpSocket, grpc or exec must be set")
		}
	}
	return r
}
