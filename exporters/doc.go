// Package exporters holds the stage kinds that take data out of weft's
// streams: OTLP exporters and the counting sink. They consume streams
// through streams/consume and never import collectors/ or correlator/.
package exporters
