// Package streams is weft's system of record: JetStream streams and
// consumers, the batched publisher, replay, the embedded server, the event
// schema, and the topology of stages connected by streams with its runner.
//
// Nothing under streams/ knows a stage kind: kinds (collectors/,
// correlator/, exporters/) import streams/ and register themselves with a
// stage.Registry that cmd/weft builds.
package streams
