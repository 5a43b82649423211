package engine

import (
	"path"
	"strings"
)

// NormalizePath is the request path RBAC matches url_path (and :path) against: the
// percent-decoded path (net/url's URL.Path) with dot segments resolved and repeated
// slashes merged. Matching the normalized form is what makes a path policy hold when the
// upstream normalizes: "/public/../admin", "//admin" and "/%61dmin" all reach the upstream's
// "/admin", so a DENY on "/admin" must see "/admin" (Istio's default path normalization,
// HCM normalize_path + merge_slashes, gives Envoy the same view). It does not allocate
// for a path that is already clean.
func NormalizePath(p string) string {
	if p == "" {
		return "/"
	}
	if p == "*" { // OPTIONS *
		return p
	}
	if p[0] == '/' && !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p
	}
	trailing := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
	c := path.Clean("/" + p)
	if trailing && c != "/" {
		c += "/"
	}
	return c
}
