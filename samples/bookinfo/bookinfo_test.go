package bookinfo

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	review1Text = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
	review2Text = "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."
)

func TestProductPageAnonymousV1(t *testing.T) {
	m := startMesh(t, meshOptions{reviewsVersion: "v1"})
	c := testClient(t)
	status, page := get(t, c, m.url[ProductPage]+"/productpage", nil)
	if status != http.StatusOK {
		t.Fatalf("status = %d, want 200\n%s", status, page)
	}
	for _, want := range []string{
		"The Comedy of Errors", "William Shakespeare", "paperback", "PublisherA", "English",
		"1234567890", "123-1234567890", "Reviewer1", "Reviewer2", review1Text, review2Text,
		"Reviews served by: reviews-v1", `action="login"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"star-full", "star-empty", "Welcome", detailsUnavailable, reviewsUnavailable} {
		if strings.Contains(page, bad) {
			t.Errorf("page has %q", bad)
		}
	}
	if n := len(m.rec[Ratings].requests("/ratings/0")); n != 0 {
		t.Errorf("reviews v1 called ratings %d times, want 0", n)
	}
	if n := len(m.rec[Details].requests("/details/0")); n != 1 {
		t.Errorf("details saw %d calls, want 1", n)
	}
	if got := m.rec[Reviews].requests("/reviews/0"); len(got) != 1 || got[0].header.Get("End-User") != "" {
		t.Errorf("reviews calls = %+v, want one without end-user", got)
	}
}

func TestProductPageStars(t *testing.T) {
	for _, tc := range []struct {
		version, color, other string
	}{
		{"v2", "black", "red"},
		{"v3", "red", "black"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			m := startMesh(t, meshOptions{reviewsVersion: tc.version})
			status, page := get(t, testClient(t), m.url[ProductPage]+"/productpage", nil)
			if status != http.StatusOK {
				t.Fatalf("status = %d", status)
			}
			// Reviewer1 gives 5 stars, Reviewer2 4: 9 filled, 1 empty.
			full, empty := pageStars(page, tc.color)
			if full != 9 || empty != 1 {
				t.Errorf("%s stars: full=%d empty=%d, want 9 and 1", tc.color, full, empty)
			}
			if f, e := pageStars(page, tc.other); f+e != 0 {
				t.Errorf("%d %s stars, want none", f+e, tc.other)
			}
			if strings.Count(page, "\u2605") != 9 && strings.Count(page, "&#9733;") != 9 {
				t.Errorf("want 9 star glyphs")
			}
			if !strings.Contains(page, "Reviews served by: reviews-"+tc.version) {
				t.Errorf("page does not name reviews-%s", tc.version)
			}
			if n := len(m.rec[Ratings].requests("/ratings/0")); n != 1 {
				t.Errorf("ratings saw %d calls, want 1", n)
			}
		})
	}
}

func TestLoginEndUser(t *testing.T) {
	m := startMesh(t, meshOptions{reviewsVersion: "v2"})
	c := testClient(t)
	resp, err := c.PostForm(m.url[ProductPage]+"/login", url.Values{"username": {"jason"}, "passwd": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/productpage" {
		t.Fatalf("login ended at %s with %d, want /productpage 200", resp.Request.URL, resp.StatusCode)
	}
	if !strings.Contains(string(page), "Welcome <b>jason</b>") {
		t.Errorf("page after login lacks the welcome for jason")
	}
	if strings.Contains(string(page), `action="login"`) {
		t.Errorf("page after login still offers sign in")
	}
	for _, s := range []string{Details, Reviews, Ratings} {
		path := map[string]string{Details: "/details/0", Reviews: "/reviews/0", Ratings: "/ratings/0"}[s]
		got := m.rec[s].requests(path)
		if len(got) != 1 {
			t.Fatalf("%s saw %d calls, want 1", s, len(got))
		}
		if u := got[0].header.Get("End-User"); u != "jason" {
			t.Errorf("%s saw end-user %q, want jason", s, u)
		}
	}

	// A client-sent end-user header is not trusted: only the login sets it.
	_, _ = get(t, c, m.url[ProductPage]+"/logout", http.Header{"End-User": {"mallory"}})
	_, page2 := get(t, c, m.url[ProductPage]+"/productpage", http.Header{"End-User": {"mallory"}})
	if strings.Contains(page2, "Welcome") {
		t.Errorf("still welcomed after logout")
	}
	got := m.rec[Reviews].requests("/reviews/0")
	if n := len(got); n < 2 {
		t.Fatalf("reviews saw %d calls, want >= 2", n)
	}
	if u := got[len(got)-1].header.Get("End-User"); u != "" {
		t.Errorf("after logout reviews saw end-user %q, want none", u)
	}
}

func TestLoginRejectsBadNames(t *testing.T) {
	m := startMesh(t, meshOptions{})
	c := testClient(t)
	for _, name := range []string{"", "   ", "bad\nname", strings.Repeat("x", 65)} {
		resp, err := c.PostForm(m.url[ProductPage]+"/login", url.Values{"username": {name}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "Welcome") {
			t.Errorf("username %q: logged in", name)
		}
	}
}

func TestDetailsDown(t *testing.T) {
	m := startMesh(t, meshOptions{reviewsVersion: "v1", detailsDown: true})
	status, page := get(t, testClient(t), m.url[ProductPage]+"/productpage", nil)
	if status != http.StatusOK {
		t.Fatalf("status = %d", status)
	}
	if !strings.Contains(page, detailsUnavailable) {
		t.Errorf("page lacks %q", detailsUnavailable)
	}
	if strings.Contains(page, "PublisherA") {
		t.Errorf("page shows details although details is down")
	}
	for _, want := range []string{"Reviewer1", "Reviewer2", review1Text} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q: details failure hid reviews", want)
		}
	}
}

func TestReviewsSlow(t *testing.T) {
	var attempts atomic.Int32
	slow := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			attempts.Add(1)
			select {
			case <-r.Context().Done(): // the caller gave up
			case <-time.After(10 * time.Second):
			}
		})
	}
	m := startMesh(t, meshOptions{reviewsVersion: "v2", timeout: 200 * time.Millisecond, wrapReviews: slow})
	status, page := get(t, testClient(t), m.url[ProductPage]+"/productpage", nil)
	if status != http.StatusOK {
		t.Fatalf("status = %d", status)
	}
	if !strings.Contains(page, reviewsUnavailable) {
		t.Errorf("page lacks %q", reviewsUnavailable)
	}
	if !strings.Contains(page, "PublisherA") {
		t.Errorf("page lacks details: reviews failure hid them")
	}
	if n := attempts.Load(); n != ReviewsAttempts {
		t.Errorf("reviews saw %d attempts, want %d", n, ReviewsAttempts)
	}
}

func TestReviewsDownRetried(t *testing.T) {
	var attempts atomic.Int32
	failing := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if attempts.Add(1) == 1 {
				http.Error(w, "boom", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	m := startMesh(t, meshOptions{reviewsVersion: "v1", wrapReviews: failing})
	_, page := get(t, testClient(t), m.url[ProductPage]+"/productpage", nil)
	if !strings.Contains(page, review1Text) || strings.Contains(page, reviewsUnavailable) {
		t.Errorf("a single 503 from reviews was not retried")
	}
	if n := attempts.Load(); n != 2 {
		t.Errorf("reviews saw %d attempts, want 2", n)
	}
}

func TestRatingsDown(t *testing.T) {
	for _, v := range []string{"v2", "v3"} {
		t.Run(v, func(t *testing.T) {
			m := startMesh(t, meshOptions{reviewsVersion: v, ratingsDown: true})
			c := testClient(t)
			_, page := get(t, c, m.url[ProductPage]+"/productpage", nil)
			if n := strings.Count(page, ratingsUnavailable); n != 2 {
				t.Errorf("page shows %q %d times, want 2 (one per review)", ratingsUnavailable, n)
			}
			if strings.Contains(page, "star-full") || strings.Contains(page, reviewsUnavailable) {
				t.Errorf("page shows stars or the reviews error")
			}
			status, body := get(t, c, m.url[Reviews]+"/reviews/0", nil)
			var rv reviewsResponse
			if err := json.Unmarshal([]byte(body), &rv); err != nil || status != 200 {
				t.Fatalf("reviews: %d %v", status, err)
			}
			for _, r := range rv.Reviews {
				if r.Rating == nil || r.Rating.Error != ratingsUnavailable || r.Rating.Stars != 0 {
					t.Errorf("%s rating = %+v, want the error only", r.Reviewer, r.Rating)
				}
			}
		})
	}
}

func TestRatingsTimeout(t *testing.T) {
	// Istio's "ratings delay" fault: a slow ratings makes reviews give up
	// after its own timeout and report ratings unavailable.
	slowRatings := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	slowRatings.Listener.Close()
	slowRatings.Listener = loopbackListener(t)
	slowRatings.Start()
	defer slowRatings.Close()
	h, err := Handler(Reviews, Config{Version: "v3", RatingsURL: slowRatings.URL, RatingsTimeout: 100 * time.Millisecond, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, httptest.NewRequest("GET", "/reviews/0", nil))
	if !strings.Contains(rw.Body.String(), ratingsUnavailable) {
		t.Errorf("body = %s, want the ratings error", rw.Body)
	}
}

func TestTracePropagation(t *testing.T) {
	m := startMesh(t, meshOptions{reviewsVersion: "v2"})
	in := http.Header{
		"X-Request-Id":       {"d3b07384-d9a0-4c8e-9f0a-1234567890ab"},
		"Traceparent":        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate":         {"weft=t61rcWkgMzE"},
		"X-B3-Traceid":       {"80f198ee56343ba864fe8b2a57d3eff7"},
		"X-B3-Spanid":        {"e457b5a2e4d86bd1"},
		"X-B3-Sampled":       {"1"},
		"B3":                 {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
		"X-Datadog-Trace-Id": {"1234"},
		"X-Datadog-Origin":   {"synthetics"},
		"Sw8":                {"1-abc"},
		"User-Agent":         {"bookinfo-test/1"},
		"X-Not-Propagated":   {"secret"},
	}
	_, page := get(t, testClient(t), m.url[ProductPage]+"/productpage", in)
	if !strings.Contains(page, "star-full") {
		t.Fatalf("page has no stars: ratings not reached")
	}
	for svc, path := range map[string]string{Details: "/details/0", Reviews: "/reviews/0", Ratings: "/ratings/0"} {
		got := m.rec[svc].requests(path)
		if len(got) != 1 {
			t.Fatalf("%s saw %d calls, want 1", svc, len(got))
		}
		for k, v := range in {
			want := v[0]
			if k == "X-Not-Propagated" {
				want = ""
			}
			if g := got[0].header.Get(k); g != want {
				t.Errorf("%s saw %s=%q, want %q", svc, k, g, want)
			}
		}
	}
}

func TestServiceJSON(t *testing.T) {
	for _, tc := range []struct {
		service, version, path, want string
	}{
		{Details, "", "/details/0", `{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{Details, "", "/details/7", `{"id":7,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{Ratings, "", "/ratings/0", `{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`},
		{Reviews, "v1", "/reviews/0", `{"id":"0","podname":"reviews-v1","clustername":"null","version":"v1","reviews":[{"reviewer":"Reviewer1","text":"` + review1Text + `"},{"reviewer":"Reviewer2","text":"` + review2Text + `"}]}`},
		{Details, "", "/health", `{"status":"Details is healthy"}`},
		{Ratings, "", "/health", `{"status":"Ratings is healthy"}`},
		{Reviews, "v3", "/health", `{"status":"Reviews is healthy"}`},
		{ProductPage, "", "/health", `{"status":"Product page is healthy"}`},
		{ProductPage, "", "/api/v1/products", `[{"id":0,"title":"The Comedy of Errors","descriptionHtml":"` + jsonString(products[0].DescriptionHTML) + `"}]`},
	} {
		t.Run(tc.service+tc.path, func(t *testing.T) {
			t.Setenv("HOSTNAME", "")
			t.Setenv("CLUSTER_NAME", "")
			h, err := Handler(tc.service, Config{Version: tc.version, Log: discardLog()})
			if err != nil {
				t.Fatal(err)
			}
			rw := httptest.NewRecorder()
			h.ServeHTTP(rw, httptest.NewRequest("GET", tc.path, nil))
			if rw.Code != 200 || rw.Body.String() != tc.want {
				t.Errorf("GET %s = %d %s\nwant 200 %s", tc.path, rw.Code, rw.Body, tc.want)
			}
			if ct := rw.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

func TestBadRequests(t *testing.T) {
	for _, tc := range []struct {
		service, method, path string
		want                  int
	}{
		{Details, "GET", "/details/abc", 400},
		{Ratings, "GET", "/ratings/-1", 400},
		{Reviews, "GET", "/reviews/x", 400},
		{Details, "POST", "/details/0", 405},
		{Details, "GET", "/nope", 404},
		{ProductPage, "GET", "/api/v1/products/abc", 400},
		{ProductPage, "GET", "/login", 405},
	} {
		h, err := Handler(tc.service, Config{Log: discardLog()})
		if err != nil {
			t.Fatal(err)
		}
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(tc.method, tc.path, nil))
		if rw.Code != tc.want {
			t.Errorf("%s %s %s = %d, want %d", tc.service, tc.method, tc.path, rw.Code, tc.want)
		}
	}
}

func TestRatingsPost(t *testing.T) {
	m := startMesh(t, meshOptions{reviewsVersion: "v3"})
	c := testClient(t)
	resp, err := c.Post(m.url[Ratings]+"/ratings/0", "application/json", strings.NewReader(`{"Reviewer1":2,"Reviewer2":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST status %d", resp.StatusCode)
	}
	_, page := get(t, c, m.url[ProductPage]+"/productpage", nil)
	if full, empty := pageStars(page, "red"); full != 3 || empty != 7 {
		t.Errorf("after POST: full=%d empty=%d, want 3 and 7", full, empty)
	}
	resp, err = c.Post(m.url[Ratings]+"/ratings/0", "application/json", strings.NewReader(`{"Reviewer1":9}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("out-of-range rating: status %d, want 400", resp.StatusCode)
	}
}

func TestProductPageAPI(t *testing.T) {
	m := startMesh(t, meshOptions{reviewsVersion: "v2"})
	c := testClient(t)
	for _, tc := range []struct{ path, want string }{
		{"/api/v1/products/0", `"publisher":"PublisherA"`},
		{"/api/v1/products/0/reviews", `"color":"black"`},
		{"/api/v1/products/0/ratings", `{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`},
	} {
		status, body := get(t, c, m.url[ProductPage]+tc.path, nil)
		if status != 200 || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s = %d %s, want 200 with %s", tc.path, status, body, tc.want)
		}
	}
	status, body := get(t, c, m.url[ProductPage]+"/", nil)
	if status != 200 || !strings.Contains(body, "productpage?u=normal") || !strings.Contains(body, "productpage?u=test") {
		t.Errorf("index = %d %s", status, body)
	}

	down := startMesh(t, meshOptions{detailsDown: true, reviewsDown: true, ratingsDown: true})
	for _, tc := range []struct{ path, want string }{
		{"/api/v1/products/0", detailsUnavailable},
		{"/api/v1/products/0/reviews", reviewsUnavailable},
		{"/api/v1/products/0/ratings", ratingsUnavailableAPI},
	} {
		status, body := get(t, c, down.url[ProductPage]+tc.path, nil)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s with upstreams down = %d %s, want 503 with %q", tc.path, status, body, tc.want)
		}
	}
}

func TestAccessLog(t *testing.T) {
	m := startMesh(t, meshOptions{reviewsVersion: "v1"})
	get(t, testClient(t), m.url[ProductPage]+"/productpage", http.Header{"X-Request-Id": {"req-42"}})
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(m.log.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if e["msg"] == "request" {
			lines = append(lines, e)
		}
	}
	seen := map[string]bool{}
	for _, e := range lines {
		if e["method"] != "GET" || e["status"] != float64(200) || e["request_id"] != "req-42" {
			t.Errorf("log line %v", e)
		}
		if _, ok := e["duration"]; !ok {
			t.Errorf("log line lacks duration: %v", e)
		}
		seen[e["service"].(string)+" "+e["path"].(string)] = true
	}
	for _, want := range []string{"productpage /productpage", "details /details/0", "reviews /reviews/0"} {
		if !seen[want] {
			t.Errorf("no access log line for %s; got %v", want, seen)
		}
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		service                string
		cfg                    Config
		env                    map[string]string
		details, reviews, rate string
		err                    string
	}{
		{name: "defaults", service: ProductPage,
			details: "http://details:9080", reviews: "http://reviews:9080", rate: "http://ratings:9080"},
		{name: "istio env", service: ProductPage,
			env:     map[string]string{"DETAILS_HOSTNAME": "d.local", "REVIEWS_HOSTNAME": "rv", "SERVICES_DOMAIN": "ns.svc.cluster.local", "RATINGS_SERVICE_PORT": "8080"},
			details: "http://d.local.ns.svc.cluster.local:9080", reviews: "http://rv.ns.svc.cluster.local:9080", rate: "http://ratings.ns.svc.cluster.local:8080"},
		{name: "fields win over env", service: Reviews, cfg: Config{Version: "v2", RatingsURL: "http://127.0.0.1:1234/"},
			env:     map[string]string{"RATINGS_HOSTNAME": "x"},
			details: "http://details:9080", reviews: "http://reviews:9080", rate: "http://127.0.0.1:1234"},
		{name: "unknown service", service: "frontend", err: `service "frontend"`},
		{name: "bad reviews version", service: Reviews, cfg: Config{Version: "v4"}, err: `reviews: version "v4"`},
		{name: "bad details version", service: Details, cfg: Config{Version: "v2"}, err: `details: version "v2"`},
		{name: "bad url", service: ProductPage, cfg: Config{DetailsURL: "details:9080"}, err: `details URL "details:9080"`},
		{name: "version from env", service: Reviews, env: map[string]string{"SERVICE_VERSION": "v9"}, err: `version "v9"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"DETAILS_HOSTNAME", "REVIEWS_HOSTNAME", "RATINGS_HOSTNAME", "SERVICES_DOMAIN",
				"DETAILS_SERVICE_PORT", "REVIEWS_SERVICE_PORT", "RATINGS_SERVICE_PORT", "SERVICE_VERSION"} {
				t.Setenv(k, tc.env[k])
			}
			c, err := resolve(tc.service, tc.cfg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.DetailsURL != tc.details || c.ReviewsURL != tc.reviews || c.RatingsURL != tc.rate {
				t.Errorf("urls = %s %s %s, want %s %s %s", c.DetailsURL, c.ReviewsURL, c.RatingsURL, tc.details, tc.reviews, tc.rate)
			}
		})
	}
	for _, tc := range []struct {
		version string
		want    time.Duration
	}{{"v2", RatingsTimeoutV2}, {"v3", RatingsTimeoutV3}} {
		c, err := resolve(Reviews, Config{Version: tc.version})
		if err != nil || c.RatingsTimeout != tc.want || c.Timeout != DefaultTimeout {
			t.Errorf("%s: timeouts %v %v (%v), want %v %v", tc.version, c.RatingsTimeout, c.Timeout, err, tc.want, DefaultTimeout)
		}
	}
}

// TestDefaultClientUsesProxy: with HTTPClient nil, calls to upstream host
// names go through the proxy in HTTP_PROXY, which is how a sidecar carries
// them when there is no transparent capture.
func TestDefaultClientUsesProxy(t *testing.T) {
	var seen atomic.Int32
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A forward proxy gets the absolute URI.
		seen.Add(1)
		switch r.URL.String() {
		case "http://details:9080/details/0":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"id":0,"publisher":"ViaProxy"}`))
		case "http://reviews:9080/reviews/0":
			if r.Header.Get("End-User") != "" {
				t.Errorf("unexpected end-user")
			}
			w.Write([]byte(`{"id":"0","podname":"proxied-reviews","reviews":[{"reviewer":"Reviewer1","text":"t","rating":{"stars":2,"color":"red"}}]}`))
		default:
			t.Errorf("proxy got %s", r.URL)
			http.NotFound(w, r)
		}
	}))
	proxy.Listener.Close()
	proxy.Listener = loopbackListener(t)
	proxy.Start()
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	for _, k := range []string{"DETAILS_HOSTNAME", "REVIEWS_HOSTNAME", "SERVICES_DOMAIN", "DETAILS_SERVICE_PORT", "REVIEWS_SERVICE_PORT"} {
		t.Setenv(k, "")
	}
	h, err := Handler(ProductPage, Config{Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, httptest.NewRequest("GET", "/productpage", nil))
	page := rw.Body.String()
	if !strings.Contains(page, "ViaProxy") || !strings.Contains(page, "proxied-reviews") {
		t.Errorf("page did not come through the proxy:\n%s", page)
	}
	if full, empty := pageStars(page, "red"); full != 2 || empty != 3 {
		t.Errorf("stars full=%d empty=%d, want 2 and 3", full, empty)
	}
	if n := seen.Load(); n != 2 {
		t.Errorf("proxy saw %d requests, want 2", n)
	}
}

func TestServeAndRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ln := loopbackListener(t)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, Ratings, Config{Log: discardLog()}) }()
	status, body := get(t, testClient(t), "http://"+ln.Addr().String()+"/ratings/0", nil)
	if status != 200 || !strings.Contains(body, `"Reviewer1":5`) {
		t.Errorf("GET /ratings/0 = %d %s", status, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- Run(ctx2, Details, Config{Addr: "127.0.0.1:0", Log: discardLog()}) }()
	time.Sleep(50 * time.Millisecond)
	cancel2()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}

	if err := Run(context.Background(), "nope", Config{}); err == nil {
		t.Error("Run of an unknown service succeeded")
	}
	if err := Serve(context.Background(), loopbackListener(t), Reviews, Config{Version: "v7"}); err == nil {
		t.Error("Serve of reviews v7 succeeded")
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		service string
		check   func(Config) bool
		err     bool
	}{
		{args: []string{"reviews", "--version", "v2", "--addr", "127.0.0.1:9999"}, service: Reviews,
			check: func(c Config) bool { return c.Version == "v2" && c.Addr == "127.0.0.1:9999" }},
		{args: []string{"--addr=:1", "productpage", "--timeout", "250ms", "--details-url", "http://d:1"}, service: ProductPage,
			check: func(c Config) bool {
				return c.Addr == ":1" && c.Timeout == 250*time.Millisecond && c.DetailsURL == "http://d:1"
			}},
		{args: []string{"ratings"}, service: Ratings, check: func(c Config) bool { return c.Addr == DefaultAddr && c.Timeout == DefaultTimeout }},
		{args: []string{}, err: true},
		{args: []string{"details", "extra"}, err: true},
		{args: []string{"details", "--bogus"}, err: true},
	} {
		svc, cfg, err := ParseArgs(tc.args, io.Discard)
		if tc.err {
			if err == nil {
				t.Errorf("%q: no error", tc.args)
			}
			continue
		}
		if err != nil || svc != tc.service || !tc.check(cfg) {
			t.Errorf("%q: %s %+v %v", tc.args, svc, cfg, err)
		}
	}
	if _, _, err := ParseArgs([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}
