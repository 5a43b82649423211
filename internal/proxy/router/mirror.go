package router

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

// mirror sends a copy of the request to each mirror policy's cluster, fire and forget:
// the shadow's outcome never touches the main response. At most maxMirrorsInFlight
// shadows run per router; more are dropped and counted. body is the complete request
// body (nil for none).
func (rt *Router) mirror(x *filter.Exchange, f *forward, h http.Header, authority string, u *url.URL, body []byte) {
	if rt.clusters == nil {
		return
	}
	for i := range f.mirrors {
		mp := &f.mirrors[i]
		if mp.den != 0 && rt.rand()%mp.den >= mp.num {
			continue
		}
		name := mp.cluster
		if name == "" {
			name = h.Get(mp.clusterHeader)
		}
		cl := rt.clusters.Get(name)
		if cl == nil {
			continue
		}
		select {
		case rt.mirrorSlots <- struct{}{}:
		default:
			rt.mirrorDropped.Inc()
			continue
		}
		auth := authority
		switch {
		case mp.hostLiteral != "":
			auth = mp.hostLiteral
		case !mp.noSuffix:
			auth = shadowHost(auth)
		}
		hdr := h.Clone()
		uu := *u
		method := x.R.Method
		origDst := x.Info.DownstreamLocal
		timeout := f.timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		go func() {
			defer func() { <-rt.mirrorSlots }()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			dst, dstErr := originalDst(cl, hdr, origDst)
			if dstErr != nil {
				rt.log.Debug("shadow request not sent", "cluster", cl.Name(), "err", dstErr)
				return
			}
			host, err := cl.Pick(&lb.Context{}, dst)
			if err != nil || host == nil {
				return
			}
			uu.Host = auth
			req := &http.Request{Method: method, URL: &uu, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: hdr, Host: auth}
			if len(body) > 0 {
				req.Body = passBody{bytes.NewReader(body)} // in memory: one write
				req.ContentLength = int64(len(body))
			}
			resp, err := cl.RoundTrip(req.WithContext(ctx), host)
			if err != nil {
				rt.log.Debug("shadow request failed", "cluster", cl.Name(), "err", err)
				return
			}
			cl.Stats().RecordStatus(resp.StatusCode)
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}()
	}
}

// shadowHost appends "-shadow" to the host part of an authority, before any port, as
// Envoy names shadow traffic.
func shadowHost(authority string) string {
	host, port := splitHostPort(authority)
	if port == "" {
		return authority + "-shadow"
	}
	return host + "-shadow:" + port
}
