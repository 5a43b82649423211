package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/weft-mesh/weft/internal/proxy/filter"
	"github.com/weft-mesh/weft/internal/proxy/stream"
	"github.com/weft-mesh/weft/internal/proxy/upstream"
	"github.com/weft-mesh/weft/internal/proxy/upstream/lb"
)

// serveUpgrade proxies an HTTP/1.1 WebSocket upgrade: it dials a host, sends the request,
// and on 101 hijacks the downstream connection and splices the two until both sides
// close. The route timeout covers only the handshake, as in Envoy.
func (rt *Router) serveUpgrade(ctx context.Context, x *filter.Exchange, route *Route, cl *upstream.Cluster, lbctx *lb.Context, origDst netip.AddrPort, u *url.URL, authority string, wc *weightedCluster) error {
	info := x.Info
	cst := cl.Stats()
	rst := rt.clusterStats(cl.Name())
	host, err := cl.Pick(lbctx, origDst)
	if err != nil || host == nil {
		rt.failureReply(x, &outcome{fail: failNoHost, err: err}, cst, rst)
		return nil
	}
	info.UpstreamHost = host.Addr()
	info.Attempts = 1
	conn, err := cl.Dial(ctx, host)
	if err != nil {
		out := outcome{err: err, fail: failConnect}
		switch {
		case x.R.Context().Err() != nil:
			out.fail = failDownstream
		case errors.Is(context.Cause(ctx), errGlobalTimeout):
			out.fail = failGlobal
		case errors.Is(err, upstream.ErrOverflow):
			out.fail = failOverflow
		}
		rt.observe(host, &out, cst, rst)
		rt.failureReply(x, &out, cst, rst)
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })

	u.Host = authority
	req := &http.Request{Method: x.R.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: x.R.Header, Host: authority}
	bw := bufio.NewWriter(conn)
	fmt.Fprintf(bw, "%s %s HTTP/1.1\r\nHost: %s\r\n", req.Method, u.RequestURI(), authority)
	_ = x.R.Header.Write(bw)
	_, _ = bw.WriteString("\r\n")
	werr := bw.Flush()
	br := bufio.NewReader(conn)
	var resp *http.Response
	if werr == nil {
		resp, err = http.ReadResponse(br, req)
	} else {
		err = werr
	}
	stopped := stop()
	if err != nil || !stopped {
		conn.Close()
		out := outcome{err: err, fail: failReset}
		if err == nil {
			out.err = context.Cause(ctx)
		}
		switch {
		case x.R.Context().Err() != nil:
			out.fail = failDownstream
		case errors.Is(context.Cause(ctx), errGlobalTimeout):
			out.fail = failGlobal
		}
		rt.observe(host, &out, cst, rst)
		rt.failureReply(x, &out, cst, rst)
		return nil
	}
	_ = conn.SetDeadline(time.Time{})
	rt.observe(host, &outcome{resp: resp}, cst, rst)

	if resp.StatusCode != http.StatusSwitchingProtocols {
		// No upgrade: an ordinary response.
		rt.writeResponse(ctx, x, route, wc, resp, cst, "", false)
		conn.Close()
		return nil
	}
	dconn, dbrw, err := http.NewResponseController(x.W).Hijack()
	if err != nil {
		conn.Close()
		return fmt.Errorf("router: websocket upgrade: %w", err)
	}
	info.ResponseCode = http.StatusSwitchingProtocols
	info.ResponseDetails = "via_upstream"
	if len(route.respOps) > 0 {
		fc := fmtCtx{r: x.R, reqH: x.R.Header, respH: resp.Header, info: info, status: resp.StatusCode}
		route.respOps.apply(resp.Header, &fc)
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resp.Header.Write(&head)
	head.WriteString("\r\n")
	if _, err := dconn.Write(head.Bytes()); err != nil {
		dconn.Close()
		conn.Close()
		info.SetFlag(stream.DownstreamConnectionTermination)
		return nil
	}
	down, up := splice(dconn, dbrw.Reader, conn, br)
	info.BytesReceived += down
	info.BytesSent += up
	return nil
}

// splice copies both ways until each side has finished, half-closing the other
// direction on EOF. dr and ur hold bytes already buffered from each connection.
func splice(dconn net.Conn, dr io.Reader, uconn net.Conn, ur io.Reader) (downToUp, upToDown int64) {
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			dconn.Close()
			uconn.Close()
		})
	}
	pipe := func(dst net.Conn, src io.Reader, n *int64) {
		defer wg.Done()
		c, err := io.Copy(dst, src)
		*n = c
		if err != nil {
			closeBoth()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			closeBoth()
		}
	}
	wg.Add(2)
	go pipe(uconn, dr, &downToUp)
	go pipe(dconn, ur, &upToDown)
	wg.Wait()
	closeBoth()
	return downToUp, upToDown
}
