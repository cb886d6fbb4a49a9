// Package cluster runs a real single-node Kubernetes cluster on this
// machine, for weft's end-to-end tests and for `task cluster`: etcd, the
// API server, controller manager and scheduler, containerd with runc,
// the kubelet, kube-proxy, CoreDNS, and a CNI bridge, every one a child
// process started here (no static pods, no systemd), its state and logs
// in one directory.
//
// Kubernetes and CoreDNS are built from their Go modules (see Build) and
// cached; etcd, containerd, runc, the CNI plugins, nftables and busybox
// come from Debian. Images never come from a registry: the sandbox and
// workload images are made here from Debian's static busybox, weft's own
// image from an OCI layout (`task image`), and all are imported into
// containerd; pods use imagePullPolicy: Never.
//
// Every packet stays inside the machine: pods live on a bridge made here,
// the node's address is the bridge's, CoreDNS answers only the
// cluster's names (it forwards nothing), and an nftables table drops
// anything forwarded to or from the uplink and any packet the host sends
// to a pod or Service address through the uplink.
//
// Down tears it all down from the directory's state file: processes by
// the PIDs recorded (and the container shims and pod processes found by
// their socket and cgroups), mounts under the directory, the cgroups the
// kubelet made, the interfaces, the nftables tables, and the sysctls the
// components changed. Start runs Down first, so a crashed run is cleaned
// by the next one. Only tests and tools under testenv import it.
package cluster
