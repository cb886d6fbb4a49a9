// Package servicemap is weft's service map: the page served at / by every
// process that serves /api/v1/graph (package httpapi mounts it). It is a
// TypeScript app (src/) on Cytoscape.js, bundled with esbuild into dist/,
// which is committed and embedded, so building weft needs no Node.js;
// `task ui` rebuilds dist/ from src/ (docs/servicemap.md says why these
// libraries, and how it is tested).
//
// The page reads only weft's HTTP API, by relative, same-origin URLs, so it
// works wherever the API is reachable (a port-forward, a proxy with a path
// prefix, a bearer token in front).
package servicemap

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed dist
var dist embed.FS

// Assets is the built page: index.html and what it loads.
func Assets() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // dist is embedded: it is there
	}
	return sub
}

// Handler serves the page: GET / is index.html, GET /map/NAME the assets
// it loads (app.js, app.css). Anything else is left to the mux it is
// mounted on.
func Handler() http.Handler {
	mux := http.NewServeMux()
	assets := Assets()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, assets, "index.html")
	})
	mux.Handle("GET /map/", http.StripPrefix("/map/", noCache(http.FileServerFS(assets))))
	return mux
}

// noCache keeps a browser from using the assets of an older weft after an
// upgrade (embedded files have no modification time to revalidate by).
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
