package bookinfo

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder remembers the requests a service saw, for asserting what reached
// it (headers, attempts).
type recorder struct {
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	path   string
	header http.Header
}

func (rc *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.seen = append(rc.seen, seenRequest{path: r.URL.Path, header: r.Header.Clone()})
		rc.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// requests returns the recorded requests to path.
func (rc *recorder) requests(path string) []seenRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []seenRequest
	for _, s := range rc.seen {
		if s.path == path {
			out = append(out, s)
		}
	}
	return out
}

// lockedBuffer is an io.Writer several slog handlers may share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type meshOptions struct {
	reviewsVersion string
	timeout        time.Duration // productpage per-call timeout; 0 = default
	ratingsTimeout time.Duration
	detailsDown    bool
	reviewsDown    bool
	ratingsDown    bool
	// wrapReviews, when set, wraps the reviews handler (inside the recorder).
	wrapReviews func(http.Handler) http.Handler
}

// mesh is the four Bookinfo services on loopback, wired to each other.
type mesh struct {
	url map[string]string    // service -> base URL
	rec map[string]*recorder // service -> what it saw
	log *lockedBuffer
}

var services = []string{ProductPage, Details, Reviews, Ratings}

func loopbackListener(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// startMesh starts all four services on 127.0.0.1 port 0; a service marked
// down gets an address whose listener is closed, so calls to it are refused.
func startMesh(t testing.TB, o meshOptions) *mesh {
	t.Helper()
	m := &mesh{url: map[string]string{}, rec: map[string]*recorder{}, log: &lockedBuffer{}}
	lns := map[string]net.Listener{}
	down := map[string]bool{Details: o.detailsDown, Reviews: o.reviewsDown, Ratings: o.ratingsDown}
	for _, s := range services {
		ln := loopbackListener(t)
		m.url[s] = "http://" + ln.Addr().String()
		m.rec[s] = &recorder{}
		if down[s] {
			ln.Close()
			continue
		}
		lns[s] = ln
	}
	log := slog.New(slog.NewJSONHandler(m.log, nil))
	for _, s := range services {
		ln, ok := lns[s]
		if !ok {
			continue
		}
		cfg := Config{
			DetailsURL:     m.url[Details],
			ReviewsURL:     m.url[Reviews],
			RatingsURL:     m.url[Ratings],
			Timeout:        o.timeout,
			RatingsTimeout: o.ratingsTimeout,
			Log:            log,
		}
		if s == Reviews {
			cfg.Version = o.reviewsVersion
		}
		h, err := Handler(s, cfg)
		if err != nil {
			t.Fatalf("Handler(%s): %v", s, err)
		}
		if s == Reviews && o.wrapReviews != nil {
			h = o.wrapReviews(h)
		}
		srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: m.rec[s].wrap(h)}}
		srv.Start()
		t.Cleanup(srv.Close)
	}
	return m
}

// testClient never uses an environment proxy (loopback would bypass it
// anyway) and keeps cookies, like a browser.
func testClient(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{}, Jar: jar, Timeout: 30 * time.Second}
}

func get(t testing.TB, c *http.Client, url string, hdr http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// pageStars counts the filled and empty stars of one colour on a page.
func pageStars(page, color string) (full, empty int) {
	return strings.Count(page, "star star-full star-"+color), strings.Count(page, "star star-empty star-"+color)
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
