// One CALLS shape everywhere (DESIGN.md, "The graph"): a TCP relationship
// is keyed by port and has no path, a unix one by path and has no port.
// Before, the writer merged on (transport, port, path) and so set both,
// the other one as 0 or ''. No two relationships differ only by the
// property removed here, so none merge.
MATCH ()-[r:CALLS]->() WHERE r.transport = 'unix' AND r.port IS NOT NULL REMOVE r.port;
MATCH ()-[r:CALLS]->() WHERE r.transport <> 'unix' AND r.path IS NOT NULL REMOVE r.path;
