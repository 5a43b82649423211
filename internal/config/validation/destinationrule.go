package validation

import (
	"math"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	typev1beta1 "istio.io/api/type/v1beta1"
)

// DestinationRule follows Istio's ValidateDestinationRule.
func DestinationRule(m Meta, dr *networking.DestinationRule) Result {
	var r Result
	p := Path("spec")
	if dr.Host == "" {
		required(&r, p.Field("host"))
	} else if err := ValidateWildcardDomain(dr.Host); err != nil {
		invalidf(&r, p.Field("host"), dr.Host, "%v", err)
	}
	checkTrafficPolicy(&r, p.Field("trafficPolicy"), dr.TrafficPolicy)
	names := map[string]bool{}
	for i, s := range dr.Subsets {
		sp := p.Field("subsets").Index(i)
		if s == nil {
			r.Errorf(sp, "subset may not be null")
			continue
		}
		switch {
		case s.Name == "":
			required(&r, sp.Field("name"))
		case names[s.Name]:
			r.Errorf(sp.Field("name"), "Duplicate value: %q", s.Name)
		case !IsDNS1123Label(s.Name):
			invalidf(&r, sp.Field("name"), s.Name, "subset name is invalid (must be a DNS-1123 label)")
		}
		names[s.Name] = true
		checkLabels(&r, sp.Field("labels"), s.Labels)
		checkTrafficPolicy(&r, sp.Field("trafficPolicy"), s.TrafficPolicy)
	}
	checkExportTo(&r, p.Field("exportTo"), m.Namespace, dr.ExportTo, false)
	if dr.WorkloadSelector != nil {
		for _, e := range dr.ExportTo {
			if e != "." && e != m.Namespace {
				r.Errorf(p.Field("exportTo"), "destination rule with workload selector cannot have exportTo beyond current namespace")
				break
			}
		}
	}
	checkWorkloadSelector(&r, p.Field("workloadSelector"), dr.WorkloadSelector)
	return r
}

// checkWorkloadSelector applies the shared matchLabels rules (no empty keys, no wildcards).
func checkWorkloadSelector(r *Result, p Path, s *typev1beta1.WorkloadSelector) {
	if s == nil {
		return
	}
	checkSelectorLabels(r, p.Field("matchLabels"), s.MatchLabels, "label")
	if len(s.MatchLabels) == 0 {
		r.Warnf(p, "workload selector specified without labels")
	}
}

func checkSelectorLabels(r *Result, p Path, labels map[string]string, what string) {
	for _, k := range sortedStringKeys(labels) {
		v := labels[k]
		switch {
		case k == "":
			invalidf(r, p, k, "key must not be empty")
		case strings.Contains(k, "*"):
			invalidf(r, p.Key(k), k, "wildcard not allowed in %s key match", what)
		case strings.Contains(v, "*"):
			invalidf(r, p.Key(k), v, "wildcard not allowed in %s value match", what)
		default:
			checkLabels(r, p, map[string]string{k: v})
		}
	}
}

func checkTrafficPolicy(r *Result, p Path, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	if tp.OutlierDetection == nil && tp.ConnectionPool == nil && tp.LoadBalancer == nil && tp.Tls == nil &&
		tp.PortLevelSettings == nil && tp.Tunnel == nil && tp.ProxyProtocol == nil && tp.RetryBudget == nil {
		r.Errorf(p, "traffic policy must have at least one field")
		return
	}
	if tp.Tunnel != nil && tp.ProxyProtocol != nil {
		r.Errorf(p, "tunnel and proxyProtocol must not be set together")
	}
	checkOutlier(r, p.Field("outlierDetection"), tp.OutlierDetection)
	checkConnectionPool(r, p.Field("connectionPool"), tp.ConnectionPool)
	checkLoadBalancer(r, p.Field("loadBalancer"), tp.LoadBalancer, tp.OutlierDetection)
	checkClientTLS(r, p.Field("tls"), tp.Tls)
	ports := map[uint32]bool{}
	for i, pl := range tp.PortLevelSettings {
		pp := p.Field("portLevelSettings").Index(i)
		if pl == nil {
			r.Errorf(pp, "port traffic policy may not be null")
			continue
		}
		if pl.Port == nil {
			required(r, pp.Field("port"))
		} else {
			checkPort(r, pp.Field("port").Field("number"), int64(pl.Port.Number))
			if ports[pl.Port.Number] {
				r.Warnf(pp.Field("port").Field("number"), "port %d has more than one port level setting; the first one is used", pl.Port.Number)
			}
			ports[pl.Port.Number] = true
		}
		if pl.OutlierDetection == nil && pl.ConnectionPool == nil && pl.LoadBalancer == nil && pl.Tls == nil {
			r.Errorf(pp, "port traffic policy must have at least one field")
			continue
		}
		checkOutlier(r, pp.Field("outlierDetection"), pl.OutlierDetection)
		checkConnectionPool(r, pp.Field("connectionPool"), pl.ConnectionPool)
		checkLoadBalancer(r, pp.Field("loadBalancer"), pl.LoadBalancer, pl.OutlierDetection)
		checkClientTLS(r, pp.Field("tls"), pl.Tls)
	}
	if t := tp.Tunnel; t != nil {
		tpp := p.Field("tunnel")
		if t.Protocol != "" && t.Protocol != "CONNECT" && t.Protocol != "POST" {
			r.Errorf(tpp.Field("protocol"), `Unsupported value: %q: supported values: "CONNECT", "POST"`, t.Protocol)
		}
		if ValidateFQDN(t.TargetHost) != nil && !isIP(t.TargetHost) {
			invalidf(r, tpp.Field("targetHost"), t.TargetHost, "tunnel target host must be valid FQDN or IP address")
		}
		checkPort(r, tpp.Field("targetPort"), int64(t.TargetPort))
	}
	if rb := tp.RetryBudget; rb != nil && rb.Percent != nil {
		checkPercentRange(r, p.Field("retryBudget").Field("percent"), rb.Percent.GetValue())
	}
}

func checkOutlier(r *Result, p Path, o *networking.OutlierDetection) {
	if o == nil {
		return
	}
	checkDuration(r, p.Field("baseEjectionTime"), o.BaseEjectionTime)
	checkDuration(r, p.Field("interval"), o.Interval)
	if o.ConsecutiveErrors != 0 {
		r.Warnf(p.Field("consecutiveErrors"), "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead")
	}
	if !o.SplitExternalLocalOriginErrors && o.ConsecutiveLocalOriginFailures.GetValue() > 0 {
		r.Errorf(p.Field("consecutiveLocalOriginFailures"), "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false")
	}
	checkPercentInt(r, p.Field("maxEjectionPercent"), o.MaxEjectionPercent)
	checkPercentInt(r, p.Field("minHealthPercent"), o.MinHealthPercent)
	for i, c := range o.OutlierDetectionHttpErrorCodes {
		if c < 100 || c > 599 {
			invalidf(r, p.Field("outlierDetectionHttpErrorCodes").Index(i), c, "must be an HTTP status code (100-599)")
		}
	}
}

func checkPercentInt(r *Result, p Path, v int32) {
	if v < 0 || v > 100 {
		invalidf(r, p, v, "percentage must be in range 0..100")
	}
}

func nonNegative(r *Result, p Path, v int32) {
	if v < 0 {
		invalidf(r, p, v, "must be non-negative")
	}
}

func checkConnectionPool(r *Result, p Path, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	if cp.Http == nil && cp.Tcp == nil {
		r.Errorf(p, "connection pool must have at least one field")
		return
	}
	if h := cp.Http; h != nil {
		hp := p.Field("http")
		nonNegative(r, hp.Field("http1MaxPendingRequests"), h.Http1MaxPendingRequests)
		nonNegative(r, hp.Field("http2MaxRequests"), h.Http2MaxRequests)
		nonNegative(r, hp.Field("maxRequestsPerConnection"), h.MaxRequestsPerConnection)
		nonNegative(r, hp.Field("maxRetries"), h.MaxRetries)
		nonNegative(r, hp.Field("maxConcurrentStreams"), h.MaxConcurrentStreams)
		checkDuration(r, hp.Field("idleTimeout"), h.IdleTimeout)
		if h.H2UpgradePolicy == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && h.UseClientProtocol {
			r.Errorf(hp.Field("useClientProtocol"), "use client protocol must not be true when H2UpgradePolicy is UPGRADE")
		}
		if ka := h.Http2KeepAlive; ka != nil {
			checkDuration(r, hp.Field("http2KeepAlive").Field("interval"), ka.Interval)
			checkDuration(r, hp.Field("http2KeepAlive").Field("timeout"), ka.Timeout)
		}
	}
	if t := cp.Tcp; t != nil {
		tp := p.Field("tcp")
		nonNegative(r, tp.Field("maxConnections"), t.MaxConnections)
		checkDuration(r, tp.Field("connectTimeout"), t.ConnectTimeout)
		checkDuration(r, tp.Field("maxConnectionDuration"), t.MaxConnectionDuration)
		checkDuration(r, tp.Field("idleTimeout"), t.IdleTimeout)
		if ka := t.TcpKeepalive; ka != nil {
			checkDuration(r, tp.Field("tcpKeepalive").Field("time"), ka.Time)
			checkDuration(r, tp.Field("tcpKeepalive").Field("interval"), ka.Interval)
		}
	}
}

func checkLoadBalancer(r *Result, p Path, lb *networking.LoadBalancerSettings, outlier *networking.OutlierDetection) {
	if lb == nil {
		return
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		cp := p.Field("consistentHash")
		if c := ch.GetHttpCookie(); c != nil && c.Name == "" {
			required(r, cp.Field("httpCookie").Field("name"))
		}
		if ch.MinimumRingSize != 0 {
			r.Warnf(cp.Field("minimumRingSize"), "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead")
			if ch.HashAlgorithm != nil {
				r.Errorf(cp, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
			}
		}
		if ml := ch.GetMaglev(); ml != nil {
			tp := cp.Field("maglev").Field("tableSize")
			switch {
			case ml.TableSize == 0:
				required(r, tp)
			case ml.TableSize >= 5000011:
				invalidf(r, tp, ml.TableSize, "tableSize must be less than 5000011 for maglev")
			case !isPrime(ml.TableSize):
				invalidf(r, tp, ml.TableSize, "tableSize must be a prime number for maglev")
			}
		}
	}
	checkLocalityLB(r, p.Field("localityLbSetting"), lb.LocalityLbSetting, outlier)
	checkDuration(r, p.Field("warmupDurationSecs"), lb.WarmupDurationSecs)
	if w := lb.Warmup; w != nil {
		wp := p.Field("warmup")
		if w.Duration == nil {
			required(r, wp.Field("duration"))
		} else {
			checkDuration(r, wp.Field("duration"), w.Duration)
		}
		if w.MinimumPercent != nil {
			if v := w.MinimumPercent.GetValue(); v < 0 || v > 100 {
				invalidf(r, wp.Field("minimumPercent"), v, "%s in body should be between 0 and 100", wp.Field("minimumPercent"))
			}
		}
		if w.Aggression != nil {
			if v := w.Aggression.GetValue(); v < 0 {
				invalidf(r, wp.Field("aggression"), v, "%s in body should be greater than or equal to 0", wp.Field("aggression"))
			}
		}
	}
}

// isPrime mirrors Envoy's check for Maglev table sizes.
func isPrime(x uint64) bool {
	if x != 0 && x < 4 {
		return true
	}
	if x&1 == 0 {
		return false
	}
	limit := uint64(math.Sqrt(float64(x)))
	for f := uint64(3); f <= limit; f += 2 {
		if x%f == 0 {
			return false
		}
	}
	return true
}

// Topology labels that conflict with failover regions.
var topologyLabels = []string{"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"}

func checkLocalityLB(r *Result, p Path, l *networking.LocalityLoadBalancerSetting, outlier *networking.OutlierDetection) {
	if l == nil {
		return
	}
	if len(l.Distribute) > 0 && len(l.Failover) > 0 {
		r.Errorf(p, "can not simultaneously specify 'distribute' and 'failover'")
		return
	}
	if len(l.Failover) > 0 {
		for i, pl := range l.FailoverPriority {
			for _, t := range topologyLabels {
				if pl == t {
					invalidf(r, p.Field("failoverPriority").Index(i), pl, "can not simultaneously set 'failover' and topology label in 'failoverPriority'")
				}
			}
		}
	}
	var from []string
	for i, d := range l.Distribute {
		dp := p.Field("distribute").Index(i)
		if d == nil {
			continue
		}
		from = append(from, d.From)
		var total uint64
		to := sortedStringKeys(d.To)
		for _, loc := range to {
			w := d.To[loc]
			if w == 0 || w > 100 {
				invalidf(r, dp.Field("to").Key(loc), w, "locality weight must be in range [1, 100]")
			}
			total += uint64(w)
		}
		if total != 100 {
			invalidf(r, dp.Field("to"), total, "total locality weight must be 100")
		}
		r.err(dp.Field("to"), checkLocalities(to))
	}
	r.err(p.Field("distribute"), checkLocalities(from))
	if (len(l.Failover) > 0 || len(l.FailoverPriority) > 0) && outlier == nil {
		r.Warnf(p, "outlier detection policy must be provided for failover")
	}
	for i, f := range l.Failover {
		fp := p.Field("failover").Index(i)
		if f == nil {
			continue
		}
		if f.From == f.To {
			r.Errorf(fp, "locality lb failover settings must specify different regions")
		}
		if strings.Contains(f.From, "/") || strings.Contains(f.To, "/") {
			r.Errorf(fp, "locality lb failover only specify region")
		}
		if strings.Contains(f.From, "*") || strings.Contains(f.To, "*") {
			r.Errorf(fp, "locality lb failover region should not contain '*' wildcard")
		}
	}
}

// checkLocalities rejects malformed or overlapping region/zone/subzone patterns.
func checkLocalities(locs []string) error {
	seen := map[string]bool{}
	for _, l := range locs {
		if n := strings.Count(l, "*"); n > 1 || (n == 1 && !strings.HasSuffix(l, "*")) {
			return errorf("locality %s wildcard '*' number can not exceed 1 and must be in the end", l)
		}
		parts := strings.SplitN(l, "/", 3)
		for _, part := range parts {
			if part == "" {
				return errorf("locality %s must not contain empty region/zone/subzone info", l)
			}
		}
		// l overlaps an earlier pattern if either is a prefix-with-wildcard of the other
		// or they are equal.
		for prev := range seen {
			if localityCovers(prev, l) || localityCovers(l, prev) {
				return errorf("locality %s overlap with previous specified ones", l)
			}
		}
		seen[l] = true
	}
	return nil
}

func localityCovers(a, b string) bool {
	if a == b || a == "*" {
		return true
	}
	pa, pb := strings.Split(a, "/"), strings.Split(b, "/")
	if len(pa) < len(pb) {
		for i := range pa {
			if pa[i] != pb[i] && pa[i] != "*" {
				return false
			}
		}
		return true
	}
	return false
}

func checkClientTLS(r *Result, p Path, t *networking.ClientTLSSettings) {
	if t == nil {
		return
	}
	if t.GetInsecureSkipVerify().GetValue() {
		switch t.Mode {
		case networking.ClientTLSSettings_SIMPLE:
			if t.CaCertificates != "" || t.CredentialName != "" || t.SubjectAltNames != nil {
				r.Errorf(p, "cannot specify caCertificates or credentialName or subjectAltNames when insecureSkipVerify is set true")
			}
		case networking.ClientTLSSettings_MUTUAL:
			if t.CaCertificates != "" || t.SubjectAltNames != nil {
				r.Errorf(p, "cannot specify caCertificates or subjectAltNames when insecureSkipVerify is set true")
			}
		}
	}
	if (t.Mode == networking.ClientTLSSettings_SIMPLE || t.Mode == networking.ClientTLSSettings_MUTUAL) && t.CredentialName != "" {
		if t.ClientCertificate != "" || t.CaCertificates != "" || t.PrivateKey != "" || t.CaCrl != "" {
			r.Errorf(p, "cannot specify client certificates or CA certificate or CA CRL if credentialName is set")
		}
		return
	}
	if t.Mode == networking.ClientTLSSettings_MUTUAL {
		if t.ClientCertificate == "" {
			r.Errorf(p.Field("clientCertificate"), "client certificate required for mutual tls")
		}
		if t.PrivateKey == "" {
			r.Errorf(p.Field("privateKey"), "private key required for mutual tls")
		}
	}
}
