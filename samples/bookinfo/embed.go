package bookinfo

import "embed"

// MeshFile is Bookinfo's weft mesh file (mesh.yaml): the services, their workloads and
// how `weft up` starts them.
//
//go:embed mesh.yaml
var MeshFile []byte

// Rules holds Bookinfo's starting traffic rules (config/*.yaml): the ingress gateway and
// the destination rules that name the versions as subsets. `weft demo` seeds its config
// directory with them.
//
//go:embed config/*.yaml
var Rules embed.FS
