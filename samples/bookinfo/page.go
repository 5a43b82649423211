package bookinfo

import (
	"bytes"
	"html/template"
	"net/http"
)

// maxStars is the rating scale; the page draws filled stars for the rating
// and empty ones for the rest.
const maxStars = 5

type pageData struct {
	User         string
	Product      product
	Description  template.HTML // products' own constant text, trusted
	Details      *bookDetails
	DetailsError string
	Reviews      []reviewView
	ReviewsError string
	ServedBy     string
}

// reviewView is one review as the template draws it.
type reviewView struct {
	Reviewer    string
	Text        string
	Full, Empty []struct{} // one element per star to draw
	Color       string     // CSS class suffix: black or red
	RatingError string
}

func reviewViews(in []review) []reviewView {
	out := make([]reviewView, 0, len(in))
	for _, r := range in {
		v := reviewView{Reviewer: r.Reviewer, Text: r.Text}
		if rt := r.Rating; rt != nil {
			switch {
			case rt.Error != "":
				v.RatingError = rt.Error
			case rt.Stars > 0:
				n := min(rt.Stars, maxStars)
				v.Full = make([]struct{}, n)
				v.Empty = make([]struct{}, maxStars-n)
				// Only colours the stylesheet knows; anything else reads as black.
				v.Color = "black"
				if rt.Color == "red" {
					v.Color = "red"
				}
			}
		}
		out = append(out, v)
	}
	return out
}

// renderPage renders into a buffer first so a template error becomes a 500
// rather than half a page.
func renderPage(w http.ResponseWriter, data pageData) {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, data); err != nil {
		http.Error(w, "bookinfo: productpage: rendering: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// The stylesheet is inline so the page renders with no network beyond the
// productpage itself (no CDN, no fonts, no images); stars are Unicode glyphs.
const styles = `
*{box-sizing:border-box}
body{margin:0;font-family:"Helvetica Neue",Helvetica,Arial,sans-serif;font-size:14px;line-height:1.43;color:#333;background:#fff}
a{color:#337ab7;text-decoration:none}a:hover{text-decoration:underline}
.navbar{background:#222;border-bottom:1px solid #080808;min-height:50px;display:flex;align-items:center;justify-content:space-between;padding:0 15px}
.navbar .brand{color:#9d9d9d;font-size:18px;line-height:20px;padding:15px 0}
.navbar .brand:hover{color:#fff;text-decoration:none}
.navbar form{display:flex;gap:6px;margin:0}
.navbar input{height:30px;padding:4px 8px;border:1px solid #ccc;border-radius:4px;font-size:13px}
.btn{display:inline-block;height:30px;padding:4px 12px;font-size:13px;border-radius:4px;border:1px solid #ccc;background:#fff;color:#333;cursor:pointer}
.btn-primary{background:#337ab7;border-color:#2e6da4;color:#fff}
.navbar .user{color:#9d9d9d}.navbar .user b{color:#fff}
.navbar .user a{color:#9d9d9d;margin-left:12px}
.container{max-width:1170px;margin:0 auto;padding:0 15px}
h3.title{text-align:center;color:#337ab7;font-size:24px;font-weight:500;margin:20px 0 10px}
.summary{font-size:14px;margin:0 0 20px}
.row{display:flex;flex-wrap:wrap;margin:0 -15px}
.col{flex:1 1 50%;min-width:300px;padding:0 15px}
h4{font-size:18px;font-weight:500;margin:10px 0}
dl{margin:0 0 20px}dt{font-weight:bold}dd{margin:0 0 8px 0}
blockquote{margin:0 0 20px;padding:10px 20px;border-left:5px solid #eee;font-size:17.5px}
blockquote p{margin:0 0 10px}
blockquote small{display:block;font-size:80%;color:#777}
blockquote small:before{content:"\2014 \00A0"}
.stars{font-size:20px;letter-spacing:2px}
.star-black{color:#000}.star-red{color:#f00}
.rating-error{color:#a94442;font-style:italic;font-size:14px;margin:4px 0 0}
.error{color:#a94442;background:#f2dede;border:1px solid #ebccd1;border-radius:4px;padding:10px 15px}
.served{color:#777;font-size:12px}
`

var pageTemplate = template.Must(template.New("productpage").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Simple Bookstore App</title>
<style>` + styles + `</style>
</head>
<body>
<nav class="navbar">
  <a class="brand" href="productpage">BookInfo Sample</a>
  {{- if .User}}
  <span class="user" id="user">Welcome <b>{{.User}}</b><a href="logout">sign out</a></span>
  {{- else}}
  <form method="post" action="login" id="login">
    <input type="text" name="username" placeholder="User Name" aria-label="User Name">
    <input type="password" name="passwd" placeholder="Password" aria-label="Password">
    <button type="submit" class="btn btn-primary">Sign in</button>
  </form>
  {{- end}}
</nav>
<div class="container">
  <h3 class="title" id="title">{{.Product.Title}}</h3>
  <p class="summary">{{.Description}}</p>
  <div class="row">
    <div class="col" id="details">
      <h4>Book Details</h4>
      {{- with .Details}}
      <dl>
        <dt>Author:</dt><dd>{{.Author}}</dd>
        <dt>Year:</dt><dd>{{.Year}}</dd>
        <dt>Type:</dt><dd>{{.Type}}</dd>
        <dt>Pages:</dt><dd>{{.Pages}}</dd>
        <dt>Publisher:</dt><dd>{{.Publisher}}</dd>
        <dt>Language:</dt><dd>{{.Language}}</dd>
        <dt>ISBN-10:</dt><dd>{{.ISBN10}}</dd>
        <dt>ISBN-13:</dt><dd>{{.ISBN13}}</dd>
      </dl>
      {{- else}}
      <p class="error">{{.DetailsError}}</p>
      {{- end}}
    </div>
    <div class="col" id="reviews">
      <h4>Book Reviews</h4>
      {{- if .ReviewsError}}
      <p class="error">{{.ReviewsError}}</p>
      {{- else}}
      {{- range .Reviews}}
      <blockquote class="review">
        <p>{{.Text}}</p>
        <small class="reviewer">{{.Reviewer}}</small>
        {{- if .RatingError}}
        <p class="rating-error">{{.RatingError}}</p>
        {{- else if .Full}}
        <span class="stars" aria-label="{{len .Full}} of 5 stars">
          {{- $c := .Color}}{{range .Full}}<span class="star star-full star-{{$c}}">&#9733;</span>{{end -}}
          {{- range .Empty}}<span class="star star-empty star-{{$c}}">&#9734;</span>{{end -}}
        </span>
        {{- end}}
      </blockquote>
      {{- end}}
      <p class="served">Reviews served by: {{.ServedBy}}</p>
      {{- end}}
    </div>
  </div>
</div>
</body>
</html>
`))

var indexTemplate = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Simple Bookstore App</title>
<style>` + styles + `</style>
</head>
<body>
<nav class="navbar"><a class="brand" href="productpage">BookInfo Sample</a></nav>
<div class="container">
  <h3 class="title">Hello! This is a simple bookstore application.</h3>
  <p>It is made of four services: productpage (this page), details, reviews (in three versions) and ratings.
  Open the product page as a normal user or as a test user:</p>
  <p><a class="btn" href="productpage?u=normal">Normal user</a>
     <a class="btn" href="productpage?u=test">Test user</a></p>
</div>
</body>
</html>
`))
