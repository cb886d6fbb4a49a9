// Indexes for the questions asked of the graph: pods by name, brokers by
// kind, recent calls.
CREATE INDEX weft_pod_name IF NOT EXISTS FOR (n:Pod) ON (n.namespace, n.name);
CREATE INDEX weft_broker_kind IF NOT EXISTS FOR (n:Broker) ON (n.kind);
CREATE INDEX weft_workload_name IF NOT EXISTS FOR (n:Workload) ON (n.name);
CREATE INDEX weft_calls_last_seen IF NOT EXISTS FOR ()-[r:CALLS]-() ON (r.last_seen);
