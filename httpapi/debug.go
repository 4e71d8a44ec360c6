package httpapi

import (
	"net/http"
	"net/http/pprof"
	"strings"
)

// pprofIndex serves Go's profiles (/debug/pprof/profile?seconds=N for CPU,
// /debug/pprof/heap, ...), for operators diagnosing a server.
func pprofIndex(w http.ResponseWriter, r *http.Request) {
	switch name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/"); name {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	default:
		pprof.Index(w, r)
	}
}
