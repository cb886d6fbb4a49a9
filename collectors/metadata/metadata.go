// Package metadata provides what a node collector knows of its pods: name,
// namespace, labels, owners, IPs and containers, by pod uid. Providers: a
// metadata file (plain hosts, tests, testenv's simulated node), the
// Kubernetes API (an informer scoped to this node's pods), or none.
//
// It must not import eBPF or streams publishing; pods are described with the
// schema's Pod message so the collector can publish them as they are.
package metadata

import (
	"context"

	"github.com/weftobs/weft/streams/schema"
)

// Provider looks pods up by uid. Implementations are safe for concurrent
// use; the returned Pod must not be modified.
type Provider interface {
	Pod(uid string) (*schema.Pod, bool)
}

// Op is what happened to a pod.
type Op int

// The ops a Watcher reports.
const (
	Upsert Op = iota + 1
	Delete
)

// Watcher is a Provider that can report changes: a pod added or changed
// (Upsert) or gone (Delete). Run blocks until ctx ends, calling fn from one
// goroutine.
type Watcher interface {
	Provider
	Run(ctx context.Context, fn func(Op, *schema.Pod)) error
}

// None knows no pod: every endpoint is a process (node + executable).
type None struct{}

var _ Provider = None{}

// Pod reports that no pod is known.
func (None) Pod(string) (*schema.Pod, bool) { return nil, false }
