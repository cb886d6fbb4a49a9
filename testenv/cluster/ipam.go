package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// cniNetwork is the name of the pods' CNI network (the conflist's
// "name"): host-local keeps its state under <dataDir>/<name>.
const cniNetwork = "weft"

// IPAMDir is where the bridge's host-local IPAM keeps its state: a file
// per address in use (named by the address), and last_reserved_ip.0, the
// address it handed out last.
func (c *Cluster) IPAMDir() string { return filepath.Join(c.Dir, "cni-ipam", cniNetwork) }

// NextPodIP makes ip the address the next pod sandbox created on the node
// gets: host-local hands out the first free address after the one its
// last_reserved_ip.0 names, so this writes the address before ip there
// (under host-local's own lock). It is how a test makes a new pod reuse a
// deleted pod's IP, which host-local would otherwise not do until it has
// gone round the whole range. It also forgets the node's neighbour
// (ARP) entry for ip on the bridge: the bridge plugin's gratuitous ARP
// for the new sandbox does not always replace it (the kernel ignores one
// within locktime of the last update), and the node, which routes every
// call through a Service VIP, would send the new pod's packets to the
// old sandbox's MAC until the entry went stale.
//
// It fails, saying why, when ip is not in the pod CIDR or is the first
// address of it, when the IPAM directory or its last_reserved_ip.0 is not
// where host-local keeps them (no pod created yet, or the layout of
// another version of the plugin), or when ip is still held by a sandbox
// (its file exists: the old pod's network is not torn down yet; poll).
func (c *Cluster) NextPodIP(ip netip.Addr) error {
	cidr := netip.MustParsePrefix(PodCIDR)
	prev := ip.Prev()
	if !cidr.Contains(ip) || !prev.IsValid() || !cidr.Contains(prev) {
		return fmt.Errorf("testenv/cluster: NextPodIP %s: not an address after the first of the pod CIDR %s", ip, PodCIDR)
	}
	dir := c.IPAMDir()
	last := filepath.Join(dir, "last_reserved_ip.0")
	if _, err := os.Stat(last); err != nil {
		return fmt.Errorf("testenv/cluster: NextPodIP %s: host-local's state is not where expected (no pod created yet, or another layout of the plugin): %w", ip, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("testenv/cluster: NextPodIP %s: %w", ip, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("testenv/cluster: NextPodIP %s: lock %s: %w", ip, lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closed right after
	held := filepath.Join(dir, ip.String())
	if b, err := os.ReadFile(held); err == nil {
		owner, _, _ := strings.Cut(string(b), "\n")
		return fmt.Errorf("testenv/cluster: NextPodIP %s: still held by sandbox %s (%s)", ip, owner, held)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testenv/cluster: NextPodIP %s: %w", ip, err)
	}
	if err := os.WriteFile(last, []byte(prev.String()), 0o644); err != nil {
		return fmt.Errorf("testenv/cluster: NextPodIP %s: %w", ip, err)
	}
	if out, err := exec.Command("ip", "neigh", "flush", "to", ip.String(), "dev", Bridge).CombinedOutput(); err != nil {
		return fmt.Errorf("testenv/cluster: NextPodIP %s: ip neigh flush: %w: %s", ip, err, strings.TrimSpace(string(out)))
	}
	return nil
}
