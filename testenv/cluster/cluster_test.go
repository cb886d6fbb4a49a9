package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/weftobs/weft/testenv/cluster"
	"github.com/weftobs/weft/testenv/natstest"
)

// TestClusterServesPods brings a cluster up, runs a Deployment behind a
// Service and a Job that calls it by its DNS name through the Service VIP
// (CoreDNS, kube-proxy, the CNI bridge), checks every call was answered
// by a pod of the Deployment, and then that Stop leaves nothing behind.
func TestClusterServesPods(t *testing.T) {
	c := cluster.ForTest(t, cluster.Options{Dir: filepath.Join(os.TempDir(), "weft-cluster-test")})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const calls = 20
	ns := "default"
	if err := serveEcho(ctx, c.Client, ns, "web", 2); err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, c.Client, ns, "web", 2)
	script := fmt.Sprintf(`for i in $(seq 1 %d); do echo "call $i $(nc -w 5 web 8080 </dev/null)"; done`, calls)
	logs := runJob(t, c.Client, ns, "caller", script)
	served := map[string]int{}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		f := strings.Fields(l)
		if len(f) == 4 && f[0] == "call" && f[2] == "served-by" && strings.HasPrefix(f[3], "web-") {
			served[f[3]]++
			n++
		}
	}
	if n != calls {
		t.Fatalf("%d of %d calls answered by a web pod; the caller logged:\n%s", n, calls, logs)
	}
	t.Logf("%d calls through the Service, answered by %v", n, served)

	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, l := range []string{cluster.Bridge} {
		if _, err := os.Stat(filepath.Join("/sys/class/net", l)); err == nil {
			t.Errorf("interface %s is left after Stop", l)
		}
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "kube-proxy") || strings.Contains(string(out), "weft_cluster") {
		t.Errorf("nftables tables left after Stop:\n%s", out)
	}
	for _, root := range []string{"/sys/fs/cgroup/memory/kubepods", "/sys/fs/cgroup/unified/kubepods", "/sys/fs/cgroup/kubepods"} {
		if _, err := os.Stat(root); err == nil {
			t.Errorf("cgroup %s left after Stop", root)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "state.json")); err == nil {
		t.Error("state.json left after a clean Stop")
	}
}

// serveEcho runs a Deployment whose pods answer each connection on 8080
// with "served-by POD", behind a Service of the same name.
func serveEcho(ctx context.Context, cs kubernetes.Interface, ns, name string, replicas int32) error {
	labels := map[string]string{"app": name}
	handler := `printf '#!/bin/sh\necho served-by $(hostname)\n' > /tmp/h && chmod +x /tmp/h && exec nc -ll -p 8080 -e /tmp/h`
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo", Image: cluster.BusyboxImage, ImagePullPolicy: corev1.PullNever,
					Command: []string{"/bin/sh", "-c", handler},
					Ports:   []corev1.ContainerPort{{ContainerPort: 8080}},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	}
	_, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	return err
}

func waitAvailable(t *testing.T, cs kubernetes.Interface, ns, name string, n int32) {
	t.Helper()
	natstest.CheckFor(t, 3*time.Minute, 500*time.Millisecond, func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas != n {
			return fmt.Errorf("deployment %s/%s: %d of %d available", ns, name, d.Status.AvailableReplicas, n)
		}
		return nil
	})
}

// runJob runs script in a busybox Job to completion and returns its log.
func runJob(t *testing.T, cs kubernetes.Interface, ns, name, script string) string {
	t.Helper()
	ctx := context.Background()
	backoff := int32(0)
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoff,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"job": name}},
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{
						Name: name, Image: cluster.BusyboxImage, ImagePullPolicy: corev1.PullNever,
						Command: []string{"/bin/sh", "-c", script},
					}},
				},
			},
		},
	}
	if _, err := cs.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, 3*time.Minute, 500*time.Millisecond, func() error {
		j, err := cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if j.Status.Succeeded == 1 {
			return nil
		}
		if j.Status.Failed > 0 {
			t.Fatalf("job %s/%s failed: %s", ns, name, podLogs(cs, ns, "job="+name))
		}
		return fmt.Errorf("job %s/%s not done", ns, name)
	})
	return podLogs(cs, ns, "job="+name)
}

func podLogs(cs kubernetes.Interface, ns, selector string) string {
	ctx := context.Background()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		for _, ct := range p.Spec.Containers {
			out, err := cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: ct.Name}).DoRaw(ctx)
			if err != nil {
				fmt.Fprintf(&b, "(logs of %s/%s: %v)\n", p.Name, ct.Name, err)
				continue
			}
			b.Write(out)
		}
	}
	return b.String()
}
