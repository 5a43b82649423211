package bookinfo

import (
	"net/http"
	"strconv"
)

// bookDetails is the details service's answer; field names follow Istio's
// details service, which clients (and Istio's docs) read by these keys.
type bookDetails struct {
	ID        int    `json:"id"`
	Author    string `json:"author"`
	Year      int    `json:"year"`
	Type      string `json:"type"`
	Pages     int    `json:"pages"`
	Publisher string `json:"publisher"`
	Language  string `json:"language"`
	ISBN10    string `json:"ISBN-10"`
	ISBN13    string `json:"ISBN-13"`
}

func detailsRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", health("Details"))
	mux.HandleFunc("GET /details/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := productID(w, r)
		if !ok {
			return
		}
		writeJSON(w, http.StatusOK, bookDetails{
			ID:        id,
			Author:    "William Shakespeare",
			Year:      1595,
			Type:      "paperback",
			Pages:     200,
			Publisher: "PublisherA",
			Language:  "English",
			ISBN10:    "1234567890",
			ISBN13:    "123-1234567890",
		})
	})
	return mux
}

// productID parses the {id} path segment; on failure it answers 400.
func productID(w http.ResponseWriter, r *http.Request) (int, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "please provide numeric product ID"})
		return 0, false
	}
	return id, true
}

func health(name string) http.HandlerFunc {
	body := map[string]string{"status": name + " is healthy"}
	return func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, body) }
}
