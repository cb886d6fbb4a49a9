package graph

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/weftobs/weft/streams/schema"
)

// BrokerRule marks a call's server endpoint as a broker of Kind when any of
// its criteria matches: all of Selector's labels on the pod, a container
// name in Containers, a server port in Ports, a socket path matching one of
// Paths (path.Match patterns).
type BrokerRule struct {
	Kind       string            `yaml:"kind" json:"kind"`
	Selector   map[string]string `yaml:"selector,omitempty" json:"selector,omitempty"`
	Containers []string          `yaml:"containers,omitempty" json:"containers,omitempty"`
	Ports      []uint32          `yaml:"ports,omitempty" json:"ports,omitempty"`
	Paths      []string          `yaml:"paths,omitempty" json:"paths,omitempty"`
}

// Validate reports every problem in r.
func (r BrokerRule) Validate() error {
	var errs []error
	if r.Kind == "" {
		errs = append(errs, errors.New("broker rule without kind"))
	}
	if len(r.Selector) == 0 && len(r.Containers) == 0 && len(r.Ports) == 0 && len(r.Paths) == 0 {
		errs = append(errs, fmt.Errorf("broker rule %q matches nothing: give a selector, containers, ports or paths", r.Kind))
	}
	for _, p := range r.Paths {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("broker rule %q: path %q: %w", r.Kind, p, err))
		}
	}
	return errors.Join(errs...)
}

// DefaultBrokers is the built-in list: NATS, Kafka, RabbitMQ, Redis,
// PostgreSQL and a crypto broker reached over a unix socket.
var DefaultBrokers = []BrokerRule{
	{Kind: "nats", Selector: map[string]string{"app.kubernetes.io/name": "nats"}, Containers: []string{"nats"}, Ports: []uint32{4222}},
	{Kind: "kafka", Selector: map[string]string{"app.kubernetes.io/name": "kafka"}, Containers: []string{"kafka"}, Ports: []uint32{9092}},
	{Kind: "rabbitmq", Selector: map[string]string{"app.kubernetes.io/name": "rabbitmq"}, Containers: []string{"rabbitmq"}, Ports: []uint32{5672}},
	{Kind: "redis", Selector: map[string]string{"app.kubernetes.io/name": "redis"}, Containers: []string{"redis"}, Ports: []uint32{6379}},
	{Kind: "postgresql", Selector: map[string]string{"app.kubernetes.io/name": "postgresql"}, Containers: []string{"postgres", "postgresql"}, Ports: []uint32{5432}},
	{Kind: "crypto-broker", Containers: []string{"crypto-broker"}, Paths: []string{"/var/run/crypto-broker.sock", "/var/run/crypto-broker/*.sock", "/run/crypto-broker/*.sock"}},
}

// Brokers matches server endpoints against rules, first match wins.
type Brokers []BrokerRule

// Match returns the broker kind of c's server, or "".
func (bs Brokers) Match(c *schema.Call) string {
	srv := c.GetServer()
	if k := srv.GetBrokerKind(); k != "" {
		return k
	}
	for _, r := range bs {
		if r.matches(c, srv) {
			return r.Kind
		}
	}
	return ""
}

func (r BrokerRule) matches(c *schema.Call, srv *schema.Endpoint) bool {
	if len(r.Selector) > 0 && srv.GetPod() != nil {
		labels := srv.GetPod().GetLabels()
		all := true
		for k, v := range r.Selector {
			if labels[k] != v {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	if name := srv.GetContainer().GetName(); name != "" {
		for _, n := range r.Containers {
			if n == name {
				return true
			}
		}
	}
	if c.GetTransport() == schema.Transport_TRANSPORT_TCP && !srv.GetExternal() {
		for _, p := range r.Ports {
			if p == c.GetPort() {
				return true
			}
		}
	}
	if p := c.GetPath(); p != "" {
		for _, pat := range r.Paths {
			if ok, _ := path.Match(pat, p); ok || strings.EqualFold(pat, p) {
				return true
			}
		}
	}
	return false
}
