package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// The cluster's fixed addresses and names. Only one cluster runs on a
// machine at a time (the bridge, the ports and the kubelet's cgroups are
// the machine's).
const (
	NodeName = "weft-node"
	// Bridge is the pods' bridge; BridgeIP its address, the pods'
	// gateway, where CoreDNS answers (the kubelet's clusterDNS).
	Bridge   = "weft0"
	BridgeIP = "10.244.0.1"
	// NodeIP is the node's address (the API server's advertised one, the
	// kubelet's and kube-proxy's): the bridge's, so nothing of the
	// cluster is on the uplink.
	NodeIP  = BridgeIP
	PodCIDR = "10.244.0.0/24"
	// ServiceCIDR holds the Services' cluster IPs; the first is the API
	// server's (kubernetes.default).
	ServiceCIDR  = "10.96.0.0/16"
	APIServerVIP = "10.96.0.1"
	APIPort      = 6443
	etcdPort     = 23790
	etcdPeerPort = 23800
	// ClusterDomain is the DNS domain of Services and pods.
	ClusterDomain = "cluster.local"
	nftTable      = "weft_cluster"
)

// DefaultDir is where the cluster keeps its state and logs unless told.
const DefaultDir = "/var/lib/weft-cluster"

// Options say how to start a cluster. The zero value is a cluster in
// DefaultDir.
type Options struct {
	// Dir holds everything the cluster writes (certificates, etcd's
	// data, containerd's root, the kubelet's root, logs/); it is emptied
	// at Start except for nothing: logs of a previous run are removed too.
	Dir string
	// Images are OCI image layouts to import, directory -> reference
	// (for weft's: bin/image -> the chart's image reference).
	Images map[string]string
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...any)
}

// Cluster is a running cluster.
type Cluster struct {
	Dir string
	// Kubeconfig is an admin kubeconfig (group system:masters).
	Kubeconfig string
	// Config and Client talk to the API server as that admin.
	Config *rest.Config
	Client kubernetes.Interface
	// Bin is where kubectl and the other binaries are.
	Bin Binaries
	// Timings of the start, for figures: build (0 when cached), and
	// start to a Ready node with images loaded.
	BuildTime, StartTime time.Duration

	st  *state
	log func(format string, args ...any)
}

// LogDir is where each component's log is (NAME.log).
func (c *Cluster) LogDir() string { return filepath.Join(c.Dir, "logs") }

func (c *Cluster) containerdSock() string {
	return filepath.Join(c.Dir, "containerd", "containerd.sock")
}

// Start builds (or finds cached) the binaries, tears down whatever a
// previous cluster in the same Dir left, and starts a new one. It returns
// once the node is Ready, DNS and kube-proxy answer, the images are
// loaded and the default service account exists; or tears down what it
// started and returns an error naming the logs.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("testenv/cluster: a cluster needs root (it runs containerd and the kubelet)")
	}
	if err := preflight(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	o.Log("building Kubernetes %s and CoreDNS %s (cached after the first time)", KubernetesVersion, CoreDNSVersion)
	bin, err := Build(ctx)
	if err != nil {
		return nil, err
	}
	buildTime := time.Since(t0)
	if err := Down(o.Dir); err != nil {
		return nil, fmt.Errorf("clean up the previous cluster in %s: %w", o.Dir, err)
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"logs", "pki", "cni", "kubelet"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	t1 := time.Now()
	c := &Cluster{Dir: o.Dir, Bin: bin, BuildTime: buildTime, log: o.Log, st: &state{Dir: o.Dir}}
	if err := c.start(ctx, o); err != nil {
		err = fmt.Errorf("%w (logs in %s)", err, c.LogDir())
		if derr := Down(o.Dir); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down: %w", derr))
		}
		return nil, err
	}
	c.StartTime = time.Since(t1)
	return c, nil
}

// Stop tears the cluster down (see Down); it keeps Dir's logs.
func (c *Cluster) Stop() error { return Down(c.Dir) }

func preflight() error {
	var missing []string
	for _, b := range []string{"etcd", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "nft", "ip", "busybox"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			missing = append(missing, cniBinDir+"/"+p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("testenv/cluster needs %s (Debian: etcd-server containerd runc containernetworking-plugins nftables iproute2 busybox-static)", strings.Join(missing, ", "))
	}
	return nil
}

const cniBinDir = "/usr/lib/cni"

func (c *Cluster) start(ctx context.Context, o Options) error {
	st := c.st
	if err := st.save(); err != nil {
		return err
	}
	if err := c.hostSetup(ctx); err != nil {
		return err
	}
	if err := c.certificates(); err != nil {
		return err
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	if err := c.startAPIServer(ctx); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	pki := filepath.Join(c.Dir, "pki")
	for _, name := range []string{"controller-manager", "scheduler"} {
		kc := filepath.Join(c.Dir, name+".kubeconfig")
		args := []string{"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--leader-elect=false", "--bind-address=127.0.0.1"}
		if name == "controller-manager" {
			args = append(args, "--service-account-private-key-file="+filepath.Join(pki, "sa.key"),
				"--root-ca-file="+filepath.Join(pki, "ca.crt"), "--use-service-account-credentials=true",
				"--cluster-signing-cert-file="+filepath.Join(pki, "ca.crt"), "--cluster-signing-key-file="+filepath.Join(pki, "ca.key"),
				"--service-cluster-ip-range="+ServiceCIDR)
		}
		if err := c.run("kube-"+name, c.Bin.Path("kube-"+name), args...); err != nil {
			return err
		}
	}
	if err := c.startContainerd(ctx); err != nil {
		return err
	}
	if err := c.loadImages(ctx, o.Images); err != nil {
		return err
	}
	if err := c.startKubelet(ctx); err != nil {
		return err
	}
	if err := c.startProxyAndDNS(ctx); err != nil {
		return err
	}
	c.log("waiting for the node to be Ready and the default service account")
	// missing says what was still missing at the last look, for the
	// error if it never comes.
	missing := "the node"
	err = poll(ctx, 3*time.Minute, "the node to be Ready and the default service account to exist", func() (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			missing = fmt.Sprintf("the node (%v)", err)
			return false, nil
		}
		ready := false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			missing = fmt.Sprintf("the node's Ready condition (%v)", n.Status.Conditions)
			return false, nil
		}
		if _, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			missing = fmt.Sprintf("namespace default (%v)", err)
			return false, nil
		}
		_, err = c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			missing = "ServiceAccount default/default (the node is Ready, namespace default exists)"
			if l, err := c.Client.CoreV1().ServiceAccounts("").List(ctx, metav1.ListOptions{}); err == nil {
				missing += fmt.Sprintf("; %d ServiceAccounts in the cluster", len(l.Items))
			}
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("%w; missing: %s", err, missing)
	}
	return nil
}

// hostSetup makes the node's interfaces, the firewall that keeps every
// packet inside the machine, bpffs and tracefs, and the sysctls the
// cluster needs; each is recorded so Down undoes it.
func (c *Cluster) hostSetup(ctx context.Context) error {
	st := c.st
	st.Sysctls = map[string]string{}
	for _, k := range changedSysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			st.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	tables, err := nftTables(ctx)
	if err != nil {
		return err
	}
	st.NftTablesBefore = tables
	st.NetnsBefore = listDir("/run/netns")
	for _, p := range outsidePaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			st.Made = append(st.Made, p)
		}
	}
	uplink, err := uplink()
	if err != nil {
		return err
	}
	st.Uplink = uplink
	if err := st.save(); err != nil {
		return err
	}
	// The firewall first, before anything can send.
	rules := fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority -200; policy accept;
		iifname "%[2]s" drop
		oifname "%[2]s" drop
	}
	chain postrouting {
		type filter hook postrouting priority 100; policy accept;
		oifname "%[2]s" ip daddr { %[3]s, %[4]s } drop
	}
}
`, nftTable, uplink, "10.244.0.0/16", ServiceCIDR)
	if err := runIn(ctx, rules, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	for _, args := range [][]string{
		{"link", "add", Bridge, "type", "bridge"},
		{"addr", "add", BridgeIP + "/24", "dev", Bridge},
		{"link", "set", Bridge, "up"},
	} {
		if err := runIn(ctx, "", "ip", args...); err != nil {
			return err
		}
	}
	for k, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1", "net/bridge/bridge-nf-call-ip6tables": "1"} {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	for _, m := range []struct{ fs, target string }{{"bpf", "/sys/fs/bpf"}, {"tracefs", "/sys/kernel/tracing"}} {
		if mounted(m.target) {
			continue
		}
		if err := syscall.Mount(m.fs, m.target, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.target, err)
		}
		st.Mounted = append(st.Mounted, m.target)
		if err := st.save(); err != nil {
			return err
		}
	}
	return nil
}

// outsidePaths are where containerd (its shims' sockets, runc's state),
// the CNI plugins (their cache) and the kubelet (links to container logs)
// write outside Dir, whatever they are told.
var outsidePaths = []string{"/run/containerd", "/var/lib/cni", "/var/log/containers", "/var/lib/kubelet", "/etc/kubernetes"}

// changedSysctls are the sysctls saved at Start and restored by Down:
// those this package, the kubelet and kube-proxy set.
var changedSysctls = []string{
	"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_tcp_timeout_established", "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
}

func (c *Cluster) certificates() error {
	dir := filepath.Join(c.Dir, "pki")
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", NodeIP, APIPort)
	certs := []struct {
		name, cn string
		orgs     []string
		hosts    []string
		ips      []net.IP
	}{
		{"apiserver", "kube-apiserver", nil,
			[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + ClusterDomain},
			[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP(APIServerVIP)}},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil},
		{"admin", "weft-admin", []string{"system:masters"}, nil, nil},
		{"controller-manager", "system:kube-controller-manager", nil, nil, nil},
		{"scheduler", "system:kube-scheduler", nil, nil, nil},
		{"kube-proxy", "system:kube-proxy", nil, nil, nil},
		{"kubelet", "system:node:" + NodeName, []string{"system:nodes"}, []string{NodeName, "localhost"}, []net.IP{net.ParseIP(NodeIP), net.ParseIP("127.0.0.1")}},
	}
	for _, ct := range certs {
		if err := p.issue(ct.name, ct.cn, ct.orgs, ct.hosts, ct.ips); err != nil {
			return err
		}
	}
	for _, name := range []string{"admin", "controller-manager", "scheduler", "kube-proxy", "kubelet"} {
		if err := p.kubeconfig(filepath.Join(c.Dir, name+".kubeconfig"), name, server); err != nil {
			return err
		}
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	err := c.run("etcd", "etcd",
		"--name=weft", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", etcdPort),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", etcdPort),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", etcdPeerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", etcdPeerPort),
		fmt.Sprintf("--initial-cluster=weft=http://127.0.0.1:%d", etcdPeerPort),
		"--listen-metrics-urls=", "--log-level=warn")
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, "etcd", fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort), nil)
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	pki := filepath.Join(c.Dir, "pki")
	f := func(n string) string { return filepath.Join(pki, n) }
	err := c.run("kube-apiserver", c.Bin.Path("kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", APIPort), "--advertise-address="+NodeIP,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--client-ca-file="+f("ca.crt"), "--tls-cert-file="+f("apiserver.crt"), "--tls-private-key-file="+f("apiserver.key"),
		"--kubelet-client-certificate="+f("apiserver-kubelet-client.crt"), "--kubelet-client-key="+f("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+f("ca.crt"), "--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc."+ClusterDomain,
		"--service-account-key-file="+f("sa.pub"), "--service-account-signing-key-file="+f("sa.key"),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false")
	if err != nil {
		return err
	}
	tc, err := c.adminTLS()
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, "kube-apiserver", fmt.Sprintf("https://127.0.0.1:%d/readyz", APIPort), tc)
}

func (c *Cluster) adminTLS() (*tls.Config, error) {
	pki := filepath.Join(c.Dir, "pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}, nil
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	d := filepath.Join(c.Dir, "containerd")
	if err := os.MkdirAll(d, 0o711); err != nil {
		return err
	}
	// restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so
	// containerd must not try to lower a container's oom_score_adj.
	conf := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), c.containerdSock(), c.containerdSock()+".ttrpc",
		filepath.Join(d, "opt"), PauseImage, cniBinDir, filepath.Join(c.Dir, "cni"))
	confPath := filepath.Join(d, "config.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "weft",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
`, Bridge, filepath.Join(c.Dir, "cni-ipam"), PodCIDR, BridgeIP)
	if err := os.WriteFile(filepath.Join(c.Dir, "cni", "10-weft.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	if err := c.run("containerd", "containerd", "--config", confPath); err != nil {
		return err
	}
	return poll(ctx, time.Minute, "containerd to answer", func() (bool, error) {
		err := exec.CommandContext(ctx, "ctr", "--address", c.containerdSock(), "version").Run()
		return err == nil, c.exited("containerd")
	})
}

func (c *Cluster) loadImages(ctx context.Context, layouts map[string]string) error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	if p, err := filepath.EvalSymlinks(busybox); err == nil {
		busybox = p
	}
	for ref, entry := range map[string][]string{BusyboxImage: {"/bin/sh"}, PauseImage: {"/bin/sleep", "2147483647"}} {
		img, err := busyboxImage(busybox, entry)
		if err != nil {
			return err
		}
		if err := c.importImage(ctx, ref, img); err != nil {
			return err
		}
	}
	for dir, ref := range layouts {
		c.log("importing %s as %s", dir, ref)
		if err := c.ImportLayout(ctx, dir, ref); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	pki := filepath.Join(c.Dir, "pki")
	resolv := filepath.Join(c.Dir, "resolv.conf")
	// Pods with dnsPolicy Default get this, not the host's resolver: no
	// query leaves the machine.
	if err := os.WriteFile(resolv, []byte("nameserver "+BridgeIP+"\n"), 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
tlsCertFile: %q
tlsPrivateKeyFile: %q
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [%s]
clusterDomain: %s
resolvConf: %q
podLogsDir: %q
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
protectKernelDefaults: false
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 60
`, filepath.Join(pki, "ca.crt"), filepath.Join(pki, "kubelet.crt"), filepath.Join(pki, "kubelet.key"), NodeIP,
		BridgeIP, ClusterDomain, resolv, filepath.Join(c.Dir, "pod-logs"), c.containerdSock(), c.containerdSock())
	confPath := filepath.Join(c.Dir, "kubelet.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	err := c.run("kubelet", c.Bin.Path("kubelet"),
		"--config="+confPath, "--kubeconfig="+filepath.Join(c.Dir, "kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(c.Dir, "kubelet"), "--hostname-override="+NodeName, "--node-ip="+NodeIP)
	if err != nil {
		return err
	}
	return c.waitHTTP(ctx, "kubelet", "http://127.0.0.1:10248/healthz", nil)
}

func (c *Cluster) startProxyAndDNS(ctx context.Context) error {
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
mode: nftables
clusterCIDR: 10.244.0.0/16
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [%s/32]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, filepath.Join(c.Dir, "kube-proxy.kubeconfig"), NodeName, NodeIP, NodeIP)
	confPath := filepath.Join(c.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	if err := c.run("kube-proxy", c.Bin.Path("kube-proxy"), "--config="+confPath); err != nil {
		return err
	}
	// CoreDNS on the bridge's address: the cluster's names from the API
	// server, nothing forwarded anywhere.
	corefile := fmt.Sprintf(`.:53 {
    bind %s
    errors
    ready 127.0.0.1:18181
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s weft
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
`, BridgeIP, ClusterDomain, c.Kubeconfig)
	cf := filepath.Join(c.Dir, "Corefile")
	if err := os.WriteFile(cf, []byte(corefile), 0o600); err != nil {
		return err
	}
	if err := c.run("coredns", c.Bin.Path("coredns"), "-conf", cf); err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "kube-proxy", "http://127.0.0.1:10256/healthz", nil); err != nil {
		return err
	}
	return c.waitHTTP(ctx, "coredns", "http://127.0.0.1:18181/ready", nil)
}

// run starts one component in its own process group, its output in
// logs/NAME.log, and records its PID before anything else can fail.
func (c *Cluster) run(name, path string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(c.LogDir(), name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s: %s %s\n", time.Now().Format(time.RFC3339), path, strings.Join(args, " "))
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c.st.Procs = append(c.st.Procs, proc{Name: name, PID: cmd.Process.Pid, Start: procStart(cmd.Process.Pid)})
	// Reap it when it exits, so exited() can tell.
	go func() { _ = cmd.Wait() }()
	c.log("started %s (pid %d)", name, cmd.Process.Pid)
	return c.st.save()
}

// exited says whether a component has exited, as an error naming its log.
func (c *Cluster) exited(name string) error {
	for _, p := range c.st.Procs {
		if p.Name == name && !p.alive() {
			return fmt.Errorf("%s exited (see %s)", name, filepath.Join(c.LogDir(), name+".log"))
		}
	}
	return nil
}

func (c *Cluster) waitHTTP(ctx context.Context, name, url string, tc *tls.Config) error {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return poll(ctx, 2*time.Minute, name+" to answer "+url, func() (bool, error) {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, nil
			}
		}
		return false, c.exited(name)
	})
}

// poll calls f every 250 ms until it says done, returns an error, or
// limit or ctx ends.
func poll(ctx context.Context, limit time.Duration, what string, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		done, err := f()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func runIn(ctx context.Context, stdin, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// uplink is the interface of the default route: what nothing of the
// cluster may send through.
func uplink() (string, error) {
	out, err := exec.Command("ip", "-j", "route", "show", "default").Output()
	if err != nil {
		return "", fmt.Errorf("find the default route: %w", err)
	}
	var routes []struct {
		Dev string `json:"dev"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return "", fmt.Errorf("find the default route: %w", err)
	}
	if len(routes) == 0 || routes[0].Dev == "" {
		return "", errors.New("no default route: cannot tell the uplink to keep the cluster's packets off")
	}
	return routes[0].Dev, nil
}

func nftTables(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "nft", "list", "tables").Output()
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w", err)
	}
	var t []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "table" {
			t = append(t, f[1]+" "+f[2])
		}
	}
	return t, nil
}

func mounted(target string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && unescapeMount(f[4]) == target {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func listDir(dir string) []string {
	es, _ := os.ReadDir(dir)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
