// Package httpapi is the graph's HTTP API, the same over either store (the
// embedded one or Neo4j): GET /api/v1/graph (the whole graph, or a
// selection of it: graph.Selection), GET /api/v1/query/NAME (the named
// queries of package query), and the service map at / (package
// servicemap), which reads the other two.
//
// It owns no store: it reads the one it is given, per request.
package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/query"
	"github.com/weftobs/weft/correlator/servicemap"
)

// Answerer is a store that runs the named queries itself (Neo4j runs their
// Cypher); for a store that is not, the API answers them over its graph.
type Answerer interface {
	Answer(ctx context.Context, q *query.Query, arg any) (*query.Result, error)
}

// Mux is where the API is mounted (a stage.Host, an http.ServeMux).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// API serves a store's graph.
type API struct {
	r   graph.Reader
	now func() time.Time
}

// New returns the API over r.
func New(r graph.Reader) *API { return &API{r: r, now: time.Now} }

// Register mounts the graph, the queries and the service map on m.
func (a *API) Register(m Mux) {
	m.Handle("/api/v1/graph", http.HandlerFunc(a.serveGraph))
	m.Handle("/api/v1/query/", http.HandlerFunc(a.serveQuery))
	page := servicemap.Handler()
	m.Handle("GET /{$}", page)
	m.Handle("GET /map/", page)
}

// serveGraph answers GET /api/v1/graph[?namespace=NS][&since=5m][&node=ID&depth=N]
// with the selected graph. Its ETag is a hash of the body, so a page that
// polls with If-None-Match gets 304 and no body while nothing changed.
func (a *API) serveGraph(w http.ResponseWriter, r *http.Request) {
	sel, err := graph.ParseSelection(r.URL.Query(), a.now())
	if err != nil {
		http.Error(w, "/api/v1/graph: "+err.Error(), http.StatusBadRequest)
		return
	}
	g, err := a.r.Graph(r.Context())
	if err != nil {
		http.Error(w, "/api/v1/graph: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var body bytes.Buffer
	if err := json.NewEncoder(&body).Encode(sel.Apply(g)); err != nil {
		http.Error(w, "/api/v1/graph: "+err.Error(), http.StatusInternalServerError)
		return
	}
	sum := sha256.Sum256(body.Bytes())
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if match(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body.Bytes())
}

// match reports whether an If-None-Match header names etag.
func match(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// serveQuery answers GET /api/v1/query/NAME[?arg=ARG], a named query
// (package query), as {"columns":[…],"rows":[[…]]}.
func (a *API) serveQuery(w http.ResponseWriter, r *http.Request) {
	q := query.Find(strings.TrimPrefix(r.URL.Path, "/api/v1/query/"))
	if q == nil {
		http.Error(w, "no such query", http.StatusNotFound)
		return
	}
	var args []string
	if r.URL.Query().Has("arg") {
		args = []string{r.URL.Query().Get("arg")}
	}
	arg, err := q.Parse(args)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var res *query.Result
	if an, ok := a.r.(Answerer); ok {
		res, err = an.Answer(r.Context(), q, arg)
	} else {
		var g *graph.Graph
		if g, err = a.r.Graph(r.Context()); err == nil {
			res = q.Embedded(g, arg)
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}
