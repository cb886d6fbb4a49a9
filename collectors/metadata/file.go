package metadata

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftobs/weft/streams/schema"
)

// File is the document a metadata file holds (YAML or JSON):
//
//	node: node-a
//	pods:
//	  - uid: 6f1c…
//	    name: app-7d4f9
//	    namespace: shop
//	    ips: [10.88.0.2]
//	    hostNetwork: false
//	    labels: {app: shop}
//	    owners: [{kind: ReplicaSet, name: app-7d4f, uid: …, controller: true}]
//	    workload: {kind: Deployment, name: app, uid: …}
//	    containers: [{id: <64 hex>, name: app, image: shop:1.2}]
type File struct {
	Node string    `yaml:"node" json:"node"`
	Pods []FilePod `yaml:"pods" json:"pods"`
}

// FilePod is one pod of a metadata file.
type FilePod struct {
	UID         string            `yaml:"uid" json:"uid"`
	Name        string            `yaml:"name" json:"name"`
	Namespace   string            `yaml:"namespace" json:"namespace"`
	IPs         []string          `yaml:"ips" json:"ips"`
	HostNetwork bool              `yaml:"hostNetwork" json:"hostNetwork"`
	Labels      map[string]string `yaml:"labels" json:"labels"`
	Owners      []FileOwner       `yaml:"owners" json:"owners"`
	// Workload is the top controller, as the Kubernetes provider resolves
	// it (a ReplicaSet's Deployment); left out, it is the controller
	// owner.
	Workload   *FileOwner      `yaml:"workload" json:"workload"`
	Containers []FileContainer `yaml:"containers" json:"containers"`
}

// FileOwner is an owner reference in a metadata file.
type FileOwner struct {
	Kind       string `yaml:"kind" json:"kind"`
	Name       string `yaml:"name" json:"name"`
	UID        string `yaml:"uid" json:"uid"`
	Controller bool   `yaml:"controller" json:"controller"`
}

// FileContainer is a container in a metadata file.
type FileContainer struct {
	ID    string `yaml:"id" json:"id"`
	Name  string `yaml:"name" json:"name"`
	Image string `yaml:"image" json:"image"`
}

// ParseFile decodes a metadata document strictly (unknown keys are errors)
// and checks that every pod has a uid, once.
func ParseFile(data []byte) (*File, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	f := &File{}
	if err := dec.Decode(f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode metadata: %w", err)
	}
	seen := map[string]bool{}
	var errs []error
	for i, p := range f.Pods {
		switch {
		case p.UID == "":
			errs = append(errs, fmt.Errorf("pods[%d] (%s/%s): no uid", i, p.Namespace, p.Name))
		case seen[p.UID]:
			errs = append(errs, fmt.Errorf("pods[%d]: uid %s appears twice", i, p.UID))
		}
		seen[p.UID] = true
	}
	return f, errors.Join(errs...)
}

// Pod converts a file pod to the schema's Pod on node.
func (p FilePod) Pod(node string) *schema.Pod {
	sp := &schema.Pod{
		Uid: p.UID, Name: p.Name, Namespace: p.Namespace, Node: node,
		Ips: p.IPs, HostNetwork: p.HostNetwork, Labels: p.Labels,
	}
	for _, o := range p.Owners {
		sp.Owners = append(sp.Owners, &schema.OwnerRef{Kind: o.Kind, Name: o.Name, Uid: o.UID, Controller: o.Controller})
		if o.Controller {
			sp.Workload = &schema.OwnerRef{Kind: o.Kind, Name: o.Name, Uid: o.UID, Controller: true}
		}
	}
	if w := p.Workload; w != nil {
		sp.Workload = &schema.OwnerRef{Kind: w.Kind, Name: w.Name, Uid: w.UID, Controller: true}
	}
	for _, c := range p.Containers {
		sp.Containers = append(sp.Containers, &schema.Container{Id: c.ID, Name: c.Name, Image: c.Image})
	}
	return sp
}

// FileProvider serves pods from a metadata file, re-read when it changes
// (checked every Poll by Run; Pod reads the last good version).
type FileProvider struct {
	Path string
	Node string
	Poll time.Duration // default 1s

	mu      sync.RWMutex
	pods    map[string]*schema.Pod
	modTime time.Time
	size    int64
}

var _ Watcher = (*FileProvider)(nil)

// NewFileProvider reads path once; it is an error if it cannot be read.
func NewFileProvider(path, node string) (*FileProvider, error) {
	p := &FileProvider{Path: path, Node: node}
	if _, _, err := p.reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Pod returns the pod with uid.
func (p *FileProvider) Pod(uid string) (*schema.Pod, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pod, ok := p.pods[uid]
	return pod, ok
}

// reload re-reads the file if it changed and returns what changed.
func (p *FileProvider) reload() (up, del []*schema.Pod, err error) {
	st, err := os.Stat(p.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("metadata file: %w", err)
	}
	p.mu.RLock()
	same := p.pods != nil && st.ModTime().Equal(p.modTime) && st.Size() == p.size
	p.mu.RUnlock()
	if same {
		return nil, nil, nil
	}
	data, err := os.ReadFile(p.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("metadata file: %w", err)
	}
	f, err := ParseFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("metadata file %s: %w", p.Path, err)
	}
	node := p.Node
	if node == "" {
		node = f.Node
	}
	next := make(map[string]*schema.Pod, len(f.Pods))
	for _, fp := range f.Pods {
		next[fp.UID] = fp.Pod(node)
	}
	p.mu.Lock()
	for uid, old := range p.pods {
		if _, ok := next[uid]; !ok {
			del = append(del, old)
		}
	}
	for uid, pod := range next {
		if old, ok := p.pods[uid]; !ok || !podEqual(old, pod) {
			up = append(up, pod)
		}
	}
	p.pods, p.modTime, p.size = next, st.ModTime(), st.Size()
	p.mu.Unlock()
	return up, del, nil
}

func podEqual(a, b *schema.Pod) bool { return proto.Equal(a, b) }

// Run re-reads the file every Poll and reports changes until ctx ends. A
// file that cannot be read or parsed keeps the last good version.
func (p *FileProvider) Run(ctx context.Context, fn func(Op, *schema.Pod)) error {
	poll := p.Poll
	if poll <= 0 {
		poll = time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			up, del, err := p.reload()
			if err != nil {
				continue
			}
			for _, pod := range up {
				fn(Upsert, pod)
			}
			for _, pod := range del {
				fn(Delete, pod)
			}
		}
	}
}
