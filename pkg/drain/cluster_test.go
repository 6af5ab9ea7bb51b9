package drain_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/test/kube"
	"layerd.dev/layerd/test/kubelet"
)

// The real control plane (with kube-controller-manager, whose disruption controller computes
// PDB status) is started once, by the first test that needs it, and stopped by TestMain; the
// unit tests never start it.
var plane = &kube.Lazy{Options: kube.Options{}, Bench: "drain-apiserver-start"}

func TestMain(m *testing.M) { plane.Main(m) }

// cluster returns the shared control plane or fails the test with why it is missing.
func cluster(t *testing.T) *kube.Cluster { return plane.Get(t) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// apiWorld is one namespace and one Node with a kubelet stand-in on the real API server.
type apiWorld struct {
	client kubernetes.Interface
	ns     string
	node   string
}

func newAPIWorld(t *testing.T) *apiWorld {
	t.Helper()
	c := cluster(t).Client
	ctx := testContext(t)
	ns, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "drain-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}) })
	// Pod admission needs the ServiceAccount; do not wait for the controller to make it.
	if _, err := c.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	w := &apiWorld{client: c, ns: ns.Name, node: "node-" + ns.Name}
	runKubelet(t, c, w.node)
	w.waitFor(t, 30*time.Second, "the Node to exist", func() (bool, error) {
		_, err := c.CoreV1().Nodes().Get(ctx, w.node, metav1.GetOptions{})
		return err == nil, err
	})
	t.Cleanup(func() { _ = c.CoreV1().Nodes().Delete(context.Background(), w.node, metav1.DeleteOptions{}) })
	return w
}

func runKubelet(t *testing.T, client kubernetes.Interface, node string) {
	t.Helper()
	kubelet.RunForTest(t, client, node, kubelet.Options{Heartbeat: 500 * time.Millisecond})
}

func (w *apiWorld) waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s (last: %v)", timeout, what, last)
}

func (w *apiWorld) createReplicaSet(t *testing.T, name string, labels map[string]string) *appsv1.ReplicaSet {
	t.Helper()
	rs, err := w.client.AppsV1().ReplicaSets(w.ns).Create(testContext(t), replicaSet(w.ns, name, labels), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func (w *apiWorld) createDaemonSet(t *testing.T, name string, labels map[string]string) *appsv1.DaemonSet {
	t.Helper()
	ds, err := w.client.AppsV1().DaemonSets(w.ns).Create(testContext(t), daemonSet(w.ns, name, labels), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// createPods creates the pods (UIDs are the server's) and waits until the stand-in reports
// them Running and Ready.
func (w *apiWorld) createPods(t *testing.T, pods ...*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		p.UID = ""
		if _, err := w.client.CoreV1().Pods(w.ns).Create(testContext(t), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		w.waitFor(t, 30*time.Second, "pod "+p.Name+" running and ready", func() (bool, error) {
			got, err := w.client.CoreV1().Pods(w.ns).Get(testContext(t), p.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == corev1.PodReady {
					return got.Status.Phase == corev1.PodRunning && c.Status == corev1.ConditionTrue, nil
				}
			}
			return false, nil
		})
	}
}

// podNames returns the names of the pods in the namespace, with " (terminating)" marks.
func (w *apiWorld) podNames(t *testing.T) []string {
	t.Helper()
	list, err := w.client.CoreV1().Pods(w.ns).List(testContext(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range list.Items {
		name := p.Name
		if p.DeletionTimestamp != nil {
			name += " (terminating)"
		}
		out = append(out, name)
	}
	return out
}

func (w *apiWorld) unschedulable(t *testing.T) bool {
	t.Helper()
	n, err := w.client.CoreV1().Nodes().Get(testContext(t), w.node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Spec.Unschedulable
}

func (w *apiWorld) ref(name string) string { return w.ns + "/" + name }

func bench(name string, d time.Duration) {
	fmt.Printf("BENCH drain-%s: %.2fs\n", strings.ReplaceAll(name, "_", "-"), d.Seconds())
}
