// Uniqueness for every node key of the weft graph (DESIGN.md, "The graph"),
// created before the first write so MERGE never duplicates a node.
CREATE CONSTRAINT weft_node_name IF NOT EXISTS FOR (n:Node) REQUIRE n.name IS UNIQUE;
CREATE CONSTRAINT weft_pod_uid IF NOT EXISTS FOR (n:Pod) REQUIRE n.uid IS UNIQUE;
CREATE CONSTRAINT weft_container_id IF NOT EXISTS FOR (n:Container) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT weft_workload_key IF NOT EXISTS FOR (n:Workload) REQUIRE (n.kind, n.namespace, n.name) IS UNIQUE;
CREATE CONSTRAINT weft_process_key IF NOT EXISTS FOR (n:Process) REQUIRE (n.node, n.exe) IS UNIQUE;
CREATE CONSTRAINT weft_external_address IF NOT EXISTS FOR (n:External) REQUIRE n.address IS UNIQUE;
CREATE CONSTRAINT weft_stream_name IF NOT EXISTS FOR (n:WeftStream) REQUIRE n.name IS UNIQUE;
CREATE CONSTRAINT weft_migration_version IF NOT EXISTS FOR (n:WeftMigration) REQUIRE n.version IS UNIQUE;
