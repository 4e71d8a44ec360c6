// Package ui is the operator console: a few static files (HTML, CSS and
// JavaScript, no framework and no build step) built into the binary with
// go:embed and served by every server under /ui/ (docs/operations.md,
// "Operator console").
//
// It is a package of its own, not a file of httpapi, so that the files it
// embeds and the headers that fence them in are one unit with one job:
// httpapi mounts Handler and knows nothing else of it. The files hold no
// data and are served without a token; everything the console shows it
// reads from the same JSON API with the token its login page keeps in the
// browser's sessionStorage, so the console can do exactly what that token
// can, never more. The Content-Security-Policy below allows only these
// files (no inline script or style, no eval, no other origin, no framing)
// so that a tenant id or an approval summary that looks like markup can
// never run as code, and works offline.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every file of the console: scripts,
// styles, images and API calls from this origin only, no plugins, no
// base-URI or form target elsewhere, never framed (clickjacking).
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the console's files under Prefix, each with the security
// headers. The route table admits only GET and HEAD.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("ui: the embedded files are missing: " + err.Error())
	}
	files := http.StripPrefix(Prefix, http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
