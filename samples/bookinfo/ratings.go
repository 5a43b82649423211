package bookinfo

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
)

// ratingsService answers GET /ratings/{id} with each reviewer's stars. As
// Istio's ratings v1, POST /ratings/{id} replaces the ratings of one product
// (in memory); products never posted get the built-in ratings.
type ratingsService struct {
	mu   sync.Mutex
	byID map[int]map[string]int
	dflt map[string]int
}

type ratingsResponse struct {
	ID      int            `json:"id"`
	Ratings map[string]int `json:"ratings"`
}

func newRatings() *ratingsService {
	return &ratingsService{
		byID: make(map[int]map[string]int),
		dflt: map[string]int{"Reviewer1": 5, "Reviewer2": 4},
	}
}

func (s *ratingsService) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", health("Ratings"))
	mux.HandleFunc("GET /ratings/{id}", s.get)
	mux.HandleFunc("POST /ratings/{id}", s.post)
	return mux
}

func (s *ratingsService) get(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	rt, found := s.byID[id]
	s.mu.Unlock()
	if !found {
		rt = s.dflt
	}
	writeJSON(w, http.StatusOK, ratingsResponse{ID: id, Ratings: rt})
}

func (s *ratingsService) post(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	var in map[string]int
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "please provide valid ratings JSON"})
		return
	}
	for _, v := range in {
		if v < 1 || v > 5 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "ratings must be 1 to 5"})
			return
		}
	}
	s.mu.Lock()
	s.byID[id] = in
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, ratingsResponse{ID: id, Ratings: in})
}
