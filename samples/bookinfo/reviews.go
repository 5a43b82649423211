package bookinfo

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ratingsUnavailable is what reviews puts in place of a rating when the
// ratings call fails; productpage shows it as is.
const ratingsUnavailable = "Ratings service is currently unavailable"

type reviewsResponse struct {
	ID          string   `json:"id"`
	PodName     string   `json:"podname"`
	ClusterName string   `json:"clustername"`
	Version     string   `json:"version"`
	Reviews     []review `json:"reviews"`
}

type review struct {
	Reviewer string  `json:"reviewer"`
	Text     string  `json:"text"`
	Rating   *rating `json:"rating,omitempty"`
}

type rating struct {
	Stars int    `json:"stars,omitempty"`
	Color string `json:"color,omitempty"`
	Error string `json:"error,omitempty"`
}

var reviewTexts = [...]review{
	{Reviewer: "Reviewer1", Text: "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},
	{Reviewer: "Reviewer2", Text: "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."},
}

// reviewsService: v1 has no ratings; v2 asks ratings and shows black stars;
// v3 asks ratings and shows red stars, with a shorter timeout.
type reviewsService struct {
	cfg   Config
	color string // "" for v1: no ratings call
}

func newReviews(cfg Config) *reviewsService {
	s := &reviewsService{cfg: cfg}
	switch cfg.Version {
	case "v2":
		s.color = "black"
	case "v3":
		s.color = "red"
	}
	return s
}

func (s *reviewsService) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", health("Reviews"))
	mux.HandleFunc("GET /reviews/{id}", s.get)
	return mux
}

func (s *reviewsService) get(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	resp := reviewsResponse{
		ID:          strconv.Itoa(id),
		PodName:     s.cfg.PodName,
		ClusterName: s.cfg.ClusterName,
		Version:     s.cfg.Version,
		Reviews:     append([]review(nil), reviewTexts[:]...),
	}
	if s.color != "" {
		stars, err := s.fetchRatings(r, id)
		for i := range resp.Reviews {
			switch n, found := stars[resp.Reviews[i].Reviewer]; {
			case err != nil:
				resp.Reviews[i].Rating = &rating{Error: ratingsUnavailable}
			case found:
				resp.Reviews[i].Rating = &rating{Stars: n, Color: s.color}
			}
		}
		if err != nil {
			s.cfg.Log.Warn("bookinfo: reviews: ratings call failed", "error", err)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *reviewsService) fetchRatings(r *http.Request, id int) (map[string]int, error) {
	url := s.cfg.RatingsURL + "/ratings/" + strconv.Itoa(id)
	_, body, err := getJSON(r.Context(), s.cfg.HTTPClient, url, forwardHeaders(r.Header), s.cfg.RatingsTimeout)
	if err != nil {
		return nil, err
	}
	var rr ratingsResponse
	if err := json.Unmarshal(body, &rr); err != nil {
		return nil, err
	}
	return rr.Ratings, nil
}
