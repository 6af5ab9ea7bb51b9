package kube_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/test/kube"
	"layerd.dev/layerd/test/kubelet"
)

// One cluster per test package; tests isolate themselves by namespace and object name.
var (
	shared    *kube.Cluster
	sharedErr error
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	shared, sharedErr = kube.Start(ctx, kube.Options{})
	cancel()
	if sharedErr == nil {
		fmt.Printf("BENCH apiserver-start: %.2fs\n", shared.StartDuration.Seconds())
	}
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// cluster returns the package's shared cluster or fails the test with why it is missing.
func cluster(t *testing.T) *kube.Cluster {
	t.Helper()
	if sharedErr != nil {
		t.Fatalf("the shared test cluster did not start: %v", sharedErr)
	}
	return shared
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it returns true, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
}

// namespace creates a fresh namespace holding the default ServiceAccount.
func namespace(t *testing.T, client kubernetes.Interface, prefix string) string {
	t.Helper()
	ctx := testContext(t)
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	serviceAccount(t, client, ns.Name, "default")
	return ns.Name
}

func serviceAccount(t *testing.T, client kubernetes.Interface, ns, name string) {
	t.Helper()
	_, err := client.CoreV1().ServiceAccounts(ns).Create(testContext(t), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating service account %s/%s: %v", ns, name, err)
	}
}

func pod(ns, name, node, sa string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}
}

// runKubelet runs a kubelet stand-in until the test ends.
func runKubelet(t *testing.T, client kubernetes.Interface, node string) *kubelet.Kubelet {
	t.Helper()
	t.Cleanup(func() { // registered first, so it runs after the stand-in has stopped
		_ = client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
	})
	return kubelet.RunForTest(t, client, node, kubelet.Options{Heartbeat: 500 * time.Millisecond})
}

func podRunningReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
