package jwtauthn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
	"weak"

	jose "github.com/go-jose/go-jose/v4"
)

// keySet is a parsed JWKS: the public (or symmetric) keys usable for signatures.
type keySet struct {
	keys []jose.JSONWebKey
}

// maxJWKSSize bounds a fetched or configured JWKS document.
const maxJWKSSize = 1 << 20

// parseJWKS reads a JWKS document. As RFC 7517 section 5 asks, keys of unknown types or
// with bad members are skipped rather than failing the set, and so are encryption keys;
// a set left with no usable key is an error.
func parseJWKS(b []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	ks := &keySet{}
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || k.Key == nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if _, sym := k.Key.([]byte); !sym && !k.IsPublic() {
			// A private key published by mistake: verify with its public half only.
			k = k.Public()
			if k.Key == nil {
				continue
			}
		}
		ks.keys = append(ks.keys, k)
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("jwks: no usable signature key")
	}
	return ks, nil
}

// keySource yields a provider's keys; ok false means they cannot be had now, and a token
// of that provider then fails (fail closed: no keys, no verified token).
type keySource interface {
	get(ctx context.Context) (ks *keySet, ok bool)
}

type localJWKS struct{ ks *keySet }

func (l localJWKS) get(context.Context) (*keySet, bool) { return l.ks, true }

// remoteJWKS fetches a JWKS over HTTP(S) and caches it for cache_duration (Envoy's
// RemoteJwks). The fetch uses a plain HTTP client to http_uri.uri; http_uri.cluster is
// not consulted (the proxy's clusters are not needed for this). Every fetch is one
// goroutine bounded by http_uri.timeout, so nothing outlives a config that is dropped.
//
// On demand (no async_fetch), a request that finds no fresh keys waits for a fetch, as
// Envoy's first requests do. With async_fetch, the fetch starts when the config is built
// and a stale set keeps serving while a refresh runs. After a failed fetch, requests fail
// without a new fetch for failed_refetch_duration (default 1 s), so a dead JWKS server is
// not hammered by every request.
type remoteJWKS struct {
	uri        string
	timeout    time.Duration
	cacheFor   time.Duration
	retryAfter time.Duration
	async      bool
	st         *Stats

	mu       sync.Mutex
	set      *keySet
	fetched  time.Time
	failedAt time.Time
	inflight chan struct{} // closed when the running fetch ends; nil when none runs
}

// The JWKS client ignores proxy environment variables: the sidecar's own environment may
// point HTTP_PROXY at itself.
var jwksTransport = &http.Transport{
	Proxy:                 nil,
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   10 * time.Second,
	MaxIdleConnsPerHost:   2,
	IdleConnTimeout:       30 * time.Second,
	ResponseHeaderTimeout: 30 * time.Second,
}

// Remote sources are shared by every config that names the same URI and settings, so a
// listener update does not refetch every JWKS. Entries are weak: a source lives as long
// as some compiled filter uses it.
var (
	remoteMu sync.Mutex
	remotes  = map[remoteKey]weak.Pointer[remoteJWKS]{}
)

type remoteKey struct {
	uri                           string
	timeout, cacheFor, retryAfter time.Duration
	async                         bool
}

func sharedRemote(k remoteKey, st *Stats) *remoteJWKS {
	remoteMu.Lock()
	defer remoteMu.Unlock()
	if wp, ok := remotes[k]; ok {
		if r := wp.Value(); r != nil {
			return r
		}
	}
	for key, wp := range remotes { // drop the sources no config holds any more
		if wp.Value() == nil {
			delete(remotes, key)
		}
	}
	r := &remoteJWKS{uri: k.uri, timeout: k.timeout, cacheFor: k.cacheFor, retryAfter: k.retryAfter, async: k.async, st: st}
	remotes[k] = weak.Make(r)
	return r
}

func (j *remoteJWKS) get(ctx context.Context) (*keySet, bool) {
	now := time.Now()
	j.mu.Lock()
	if j.set != nil && now.Sub(j.fetched) < j.cacheFor {
		ks := j.set
		j.mu.Unlock()
		return ks, true
	}
	if j.set != nil && j.async {
		ks := j.set
		j.startLocked(now)
		j.mu.Unlock()
		return ks, true
	}
	ch := j.startLocked(now)
	j.mu.Unlock()
	if ch == nil {
		return nil, false // failed recently: wait for failed_refetch_duration
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.set != nil && (j.async || time.Since(j.fetched) < j.cacheFor) {
		return j.set, true
	}
	return nil, false
}

// startLocked starts a fetch unless one runs or one failed less than retryAfter ago, and
// returns the channel closed when the running fetch ends (nil when none runs).
func (j *remoteJWKS) startLocked(now time.Time) chan struct{} {
	if j.inflight != nil {
		return j.inflight
	}
	if !j.failedAt.IsZero() && now.Sub(j.failedAt) < j.retryAfter {
		return nil
	}
	ch := make(chan struct{})
	j.inflight = ch
	go j.fetch(ch)
	return ch
}

func (j *remoteJWKS) fetch(done chan struct{}) {
	ks, err := j.download()
	j.mu.Lock()
	if err != nil {
		j.failedAt = time.Now()
		j.st.JwksFetchFailed.Inc()
	} else {
		j.set, j.fetched, j.failedAt = ks, time.Now(), time.Time{}
		j.st.JwksFetchSuccess.Inc()
	}
	j.inflight = nil
	j.mu.Unlock()
	close(done)
	if err != nil {
		slog.Warn("jwt_authn: JWKS fetch failed; tokens of this provider are rejected until it succeeds", "uri", j.uri, "err", err)
	}
}

func (j *remoteJWKS) download() (*keySet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Transport: jwksTransport}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("jwks: %s answered %d", j.uri, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSSize {
		return nil, fmt.Errorf("jwks: %s: document larger than %d bytes", j.uri, maxJWKSSize)
	}
	return parseJWKS(b)
}

// prefetch starts the first fetch when the config is built (async_fetch).
func (j *remoteJWKS) prefetch() {
	j.mu.Lock()
	if j.set == nil {
		j.startLocked(time.Now())
	}
	j.mu.Unlock()
}
