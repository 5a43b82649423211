package admin

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
)

// memoryInfo is /memory: the fields of Envoy's envoy.admin.v3.Memory (uint64 as strings,
// as protojson writes them), filled from the Go runtime, plus the process's resident set
// from /proc, which is what a sidecar's memory cost is measured by.
type memoryInfo struct {
	Allocated          uint64 `json:"allocated,string"`            // heap bytes in use
	HeapSize           uint64 `json:"heap_size,string"`            // heap bytes obtained from the OS
	PageheapUnmapped   uint64 `json:"pageheap_unmapped,string"`    // heap returned to the OS
	PageheapFree       uint64 `json:"pageheap_free,string"`        // idle heap not yet returned
	TotalThreadCache   uint64 `json:"total_thread_cache,string"`   // per-P caches (mcache)
	TotalPhysicalBytes uint64 `json:"total_physical_bytes,string"` // all memory the runtime mapped
	RSS                uint64 `json:"rss,string"`                  // VmRSS
	RSSPeak            uint64 `json:"rss_peak,string"`             // VmHWM
	Goroutines         int    `json:"goroutines"`
	GCCycles           uint32 `json:"gc_cycles"`
}

func (s *Server) memory(w http.ResponseWriter, r *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, peak := procStatus()
	writeJSON(w, memoryInfo{
		Allocated:          ms.HeapAlloc,
		HeapSize:           ms.HeapSys,
		PageheapUnmapped:   ms.HeapReleased,
		PageheapFree:       ms.HeapIdle - ms.HeapReleased,
		TotalThreadCache:   ms.MCacheInuse,
		TotalPhysicalBytes: ms.Sys,
		RSS:                rss,
		RSSPeak:            peak,
		Goroutines:         runtime.NumGoroutine(),
		GCCycles:           ms.NumGC,
	})
}

// procStatus reads VmRSS and VmHWM (bytes) from /proc/self/status; zeros off Linux.
func procStatus() (rss, peak uint64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	return parseStatus(b)
}

func parseStatus(b []byte) (rss, peak uint64) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		var dst *uint64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &rss
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &peak
		default:
			continue
		}
		f := bytes.Fields(line[6:])
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && string(f[1]) == "kB" {
			n *= 1024
		}
		*dst = n
	}
	return rss, peak
}

// heapDump is /heap_dump: the Go heap profile in pprof's format (`go tool pprof` reads
// it), as Envoy's endpoint of that name returns tcmalloc's. It reflects the heap as of
// the last garbage collection, sampled every runtime.MemProfileRate bytes (512 KB
// unless GODEBUG=memprofilerate= says otherwise); ?gc=1 collects first, so the
// profile shows what is live now.
func (s *Server) heapDump(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("gc") == "1" {
		runtime.GC()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="heap.pprof"`)
	if err := pprof.Lookup("heap").WriteTo(w, 0); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
