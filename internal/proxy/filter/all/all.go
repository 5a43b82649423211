// Package all links every HTTP filter into the proxy: each import registers its factory
// with package filter. Adding a filter is one line here.
package all

import (
	_ "github.com/weft-mesh/weft/internal/proxy/filter/cors"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/fault"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/jwtauthn"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/ratelimit"
	_ "github.com/weft-mesh/weft/internal/proxy/filter/rbac"
)
