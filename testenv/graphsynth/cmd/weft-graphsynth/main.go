// Command weft-graphsynth serves a synthetic graph (package graphsynth)
// from the embedded store through weft's HTTP API and service map, as a
// graph stage would: the big graph the service map's browser test
// measures. It prints "listening on http://ADDR" and serves until killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/weftobs/weft/correlator/graph/httpapi"
	"github.com/weftobs/weft/correlator/graph/memstore"
	"github.com/weftobs/weft/testenv/graphsynth"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTP address")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	st := memstore.New()
	if err := st.Apply(context.Background(), graphsynth.Batch(graphsynth.Big, *seed, time.Now().UnixNano())); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.New(st).Register(mux)
	fmt.Printf("listening on http://%s\n", ln.Addr())
	log.Fatal((&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}).Serve(ln))
}
