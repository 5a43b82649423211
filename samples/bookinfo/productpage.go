package bookinfo

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"unicode"
)

// The messages productpage shows when an upstream fails; Istio's fault
// injection tasks tell users to look for exactly these.
const (
	detailsUnavailable    = "Sorry, product details are currently unavailable for this book."
	reviewsUnavailable    = "Sorry, product reviews are currently unavailable for this book."
	ratingsUnavailableAPI = "Sorry, product ratings are currently unavailable for this book."
)

// userCookie holds the signed-in user name. Istio's productpage keeps it in
// a session; a plain cookie is enough for a demo whose "login" has no
// password check either.
const userCookie = "user"

type product struct {
	ID              int    `json:"id"`
	Title           string `json:"title"`
	DescriptionHTML string `json:"descriptionHtml"`
}

var products = []product{{
	ID:    0,
	Title: "The Comedy of Errors",
	DescriptionHTML: "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: " +
		"One of William Shakespeare's earliest plays, and his shortest. Two pairs of identical twins, " +
		"parted as infants, turn up in the same town on the same day, and the farce runs on slapstick, " +
		"mistaken identity, puns and wordplay.",
}}

type productPage struct {
	cfg Config
}

func newProductPage(cfg Config) *productPage { return &productPage{cfg: cfg} }

func (p *productPage) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.index)
	mux.HandleFunc("GET /health", health("Product page"))
	// Browsers ask for it on every visit; no icon, but no 404 in the log.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /productpage", p.productPage)
	mux.HandleFunc("POST /login", p.login)
	mux.HandleFunc("/logout", p.logout)
	mux.HandleFunc("GET /api/v1/products", p.apiProducts)
	mux.HandleFunc("GET /api/v1/products/{id}", apiProxy(p.fetchDetails, detailsUnavailable))
	mux.HandleFunc("GET /api/v1/products/{id}/reviews", apiProxy(p.fetchReviews, reviewsUnavailable))
	mux.HandleFunc("GET /api/v1/products/{id}/ratings", apiProxy(p.fetchRatings, ratingsUnavailableAPI))
	return mux
}

// currentUser returns the signed-in user, or "".
func currentUser(r *http.Request) string {
	c, err := r.Cookie(userCookie)
	if err != nil {
		return ""
	}
	u, err := url.QueryUnescape(c.Value)
	if err != nil || !validUser(u) {
		return ""
	}
	return u
}

// validUser keeps user names to what can travel in an HTTP header value.
func validUser(u string) bool {
	if u == "" || len(u) > 64 {
		return false
	}
	for _, r := range u {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// upstreamHeaders are the headers productpage sends upstream: the propagated
// ones, with end-user taken only from the login (as Istio's productpage
// does), never from what the client sent.
func upstreamHeaders(r *http.Request) (http.Header, string) {
	h := forwardHeaders(r.Header)
	delete(h, "End-User")
	user := currentUser(r)
	if user != "" {
		h.Set("End-User", user)
	}
	return h, user
}

func (p *productPage) login(w http.ResponseWriter, r *http.Request) {
	user := strings.TrimSpace(r.PostFormValue("username"))
	if validUser(user) {
		http.SetCookie(w, &http.Cookie{
			Name:     userCookie,
			Value:    url.QueryEscape(user),
			Path:     "/",
			HttpOnly: true,
			SameSite: http.SameSiteLaxMode,
		})
	}
	// Relative, so the redirect stays under whatever prefix a gateway uses.
	http.Redirect(w, r, "productpage", http.StatusFound)
}

func (p *productPage) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: userCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true})
	http.Redirect(w, r, "productpage", http.StatusFound)
}

// fetchDetails makes productpage's one details call.
func (p *productPage) fetchDetails(ctx context.Context, id int, h http.Header) (int, json.RawMessage, error) {
	return getJSON(ctx, p.cfg.HTTPClient, p.cfg.DetailsURL+"/details/"+strconv.Itoa(id), h, p.cfg.Timeout)
}

// fetchReviews tries the reviews call ReviewsAttempts times, each bounded by
// the per-call timeout, stopping at the first 200.
func (p *productPage) fetchReviews(ctx context.Context, id int, h http.Header) (status int, body json.RawMessage, err error) {
	u := p.cfg.ReviewsURL + "/reviews/" + strconv.Itoa(id)
	for range ReviewsAttempts {
		status, body, err = getJSON(ctx, p.cfg.HTTPClient, u, h, p.cfg.Timeout)
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	return status, body, err
}

func (p *productPage) fetchRatings(ctx context.Context, id int, h http.Header) (int, json.RawMessage, error) {
	return getJSON(ctx, p.cfg.HTTPClient, p.cfg.RatingsURL+"/ratings/"+strconv.Itoa(id), h, p.cfg.Timeout)
}

func (p *productPage) productPage(w http.ResponseWriter, r *http.Request) {
	const id = 0
	h, user := upstreamHeaders(r)
	data := pageData{User: user, Product: products[id], Description: template.HTML(products[id].DescriptionHTML)}

	// Details and reviews are independent: one failing must not hide the
	// other, and neither waits for the other.
	var wg sync.WaitGroup
	var detailsBody, reviewsBody json.RawMessage
	var detailsErr, reviewsErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, detailsBody, detailsErr = p.fetchDetails(r.Context(), id, h)
	}()
	go func() {
		defer wg.Done()
		_, reviewsBody, reviewsErr = p.fetchReviews(r.Context(), id, h)
	}()
	wg.Wait()

	if detailsErr == nil {
		detailsErr = json.Unmarshal(detailsBody, &data.Details)
	}
	if detailsErr != nil {
		data.Details = nil
		data.DetailsError = detailsUnavailable
		p.cfg.Log.Warn("bookinfo: productpage: details call failed", "error", detailsErr)
	}
	var rv reviewsResponse
	if reviewsErr == nil {
		reviewsErr = json.Unmarshal(reviewsBody, &rv)
	}
	if reviewsErr != nil {
		data.ReviewsError = reviewsUnavailable
		p.cfg.Log.Warn("bookinfo: productpage: reviews call failed", "error", reviewsErr)
	} else {
		data.Reviews = reviewViews(rv.Reviews)
		data.ServedBy = rv.PodName
		if rv.ClusterName != "" && rv.ClusterName != "null" {
			data.ServedBy += " (" + rv.ClusterName + ")"
		}
	}
	renderPage(w, data)
}

func (p *productPage) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	indexTemplate.Execute(w, nil)
}

func (p *productPage) apiProducts(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, products)
}

type fetchFunc func(ctx context.Context, id int, h http.Header) (int, json.RawMessage, error)

// apiProxy answers an /api/v1 call with the upstream's JSON, or with the
// page's error message and the upstream's status (503 when there was none).
func apiProxy(fetch fetchFunc, unavailable string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := productID(w, r)
		if !ok {
			return
		}
		h, _ := upstreamHeaders(r)
		status, body, err := fetch(r.Context(), id, h)
		if err != nil {
			if status == 0 || status == http.StatusOK {
				status = http.StatusServiceUnavailable
			}
			writeJSON(w, status, map[string]string{"error": unavailable})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}
