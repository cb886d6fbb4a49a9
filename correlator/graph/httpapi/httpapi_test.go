package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/weftobs/weft/correlator/graph"
	"github.com/weftobs/weft/correlator/graph/httpapi"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/testenv/graphsynth"
)

var small = graphsynth.Size{Machines: 2, Namespaces: 3, Workloads: 6, Pods: 20, SidecarPods: 2, Calls: 40}

func serve(t *testing.T) (*memstore.Store, *http.ServeMux) {
	t.Helper()
	st := memstore.New()
	if err := st.Apply(context.Background(), graphsynth.Batch(small, 1, time.Now().UnixNano())); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.New(st).Register(mux)
	return st, mux
}

func get(mux http.Handler, path string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec
}

func TestGraph(t *testing.T) {
	st, mux := serve(t)
	whole, err := st.Graph(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		code int
		sel  graph.Selection
	}{
		{path: "/api/v1/graph", code: 200},
		{path: "/api/v1/graph?namespace=team-01", code: 200, sel: graph.Selection{Namespaces: []string{"team-01"}}},
		{path: "/api/v1/graph?node=Pod:pod-uid-00003&depth=2", code: 200, sel: graph.Selection{Node: "Pod:pod-uid-00003", Depth: 2}},
		{path: "/api/v1/graph?since=soon", code: 400},
		{path: "/api/v1/graph?depth=9&node=Pod:x", code: 400},
	} {
		t.Run(tt.path, func(t *testing.T) {
			rec := get(mux, tt.path)
			if rec.Code != tt.code {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tt.code)
			}
			if tt.code != 200 {
				if !strings.HasPrefix(rec.Body.String(), "/api/v1/graph: ") {
					t.Errorf("error %q does not say where", rec.Body)
				}
				return
			}
			var got graph.Graph
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			want := tt.sel.Apply(whole)
			if len(got.Nodes) != len(want.Nodes) || len(got.Edges) != len(want.Edges) {
				t.Errorf("%d nodes and %d edges, want %d and %d", len(got.Nodes), len(got.Edges), len(want.Nodes), len(want.Edges))
			}
			if !tt.sel.Whole() && len(got.Nodes) >= len(whole.Nodes) {
				t.Errorf("the selection kept all %d nodes", len(got.Nodes))
			}
			if len(got.Nodes) == 0 {
				t.Error("the selection kept nothing")
			}
		})
	}
}

// TestETag: a poll with the last ETag gets 304 and no body until the graph
// changes.
func TestETag(t *testing.T) {
	st, mux := serve(t)
	first := get(mux, "/api/v1/graph")
	etag := first.Header().Get("ETag")
	if first.Code != 200 || etag == "" {
		t.Fatalf("%d, ETag %q", first.Code, etag)
	}
	if rec := get(mux, "/api/v1/graph", "If-None-Match", etag); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Errorf("unchanged graph: %d with %d bytes, want 304 and none", rec.Code, rec.Body.Len())
	}
	if rec := get(mux, "/api/v1/graph?namespace=team-00", "If-None-Match", etag); rec.Code != 200 {
		t.Errorf("another selection with the whole graph's ETag: %d, want 200", rec.Code)
	}
	b := graphsynth.Batch(small, 1, time.Now().UnixNano())
	b.Seq, b.Entities, b.Links, b.Edges = 2, nil, nil, b.Edges[:1]
	if err := st.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	rec := get(mux, "/api/v1/graph", "If-None-Match", etag)
	if rec.Code != 200 || rec.Header().Get("ETag") == etag {
		t.Errorf("changed graph: %d, ETag %q (was %q), want 200 and a new one", rec.Code, rec.Header().Get("ETag"), etag)
	}
}

func TestQueryAndPage(t *testing.T) {
	_, mux := serve(t)
	for _, tt := range []struct {
		path, has string
		code      int
	}{
		{"/api/v1/query/brokers", `"columns":["broker","kind","clients"]`, 200},
		{"/api/v1/query/nope", "no such query", 404},
		{"/", `<script src="map/app.js">`, 200},
		{"/map/app.js", "cytoscape", 200},
		{"/map/app.css", "#map", 200},
		{"/elsewhere", "404", 404},
	} {
		rec := get(mux, tt.path)
		if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.has) {
			t.Errorf("GET %s: %d %.200q, want %d with %q", tt.path, rec.Code, rec.Body, tt.code, tt.has)
		}
	}
}
