package coord_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/test/kube"
)

// The real control plane is started once, by the first test that needs it, and stopped by
// TestMain; the unit tests never start it.
var plane = &kube.Lazy{Options: kube.Options{NoControllerManager: true}}

func TestMain(m *testing.M) { plane.Main(m) }

// cluster returns the shared control plane or fails the test with why it is missing.
func cluster(t *testing.T) *kube.Cluster { return plane.Get(t) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newNamespace creates a namespace of its own for one test.
func newNamespace(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	n, err := client.CoreV1().Namespaces().Create(testContext(t),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "coord-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Name
}

// createNode creates a Node with the given Ready status, layerd state and pool label.
func createNode(t *testing.T, client kubernetes.Interface, n *corev1.Node) {
	t.Helper()
	ctx := testContext(t)
	status := n.Status
	created, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = status
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := client.CoreV1().Nodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting node %s: %v", n.Name, err)
		}
	})
}

var nodeSeq atomic.Int64

// uniqueName returns prefix-<n>, unique within the test binary (Nodes are cluster-scoped).
func uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, nodeSeq.Add(1)) }
