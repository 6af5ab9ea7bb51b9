package kubelet_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	testingclock "k8s.io/utils/clock/testing"

	"layerd.dev/layerd/test/kube"
	"layerd.dev/layerd/test/kubelet"
)

var (
	shared    *kube.Cluster
	sharedErr error
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	// No controller manager: the stand-in alone must be enough for Nodes and Pods.
	shared, sharedErr = kube.Start(ctx, kube.Options{NoControllerManager: true})
	cancel()
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	if sharedErr != nil {
		t.Fatalf("the test cluster did not start: %v", sharedErr)
	}
	return shared.Client
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// start runs a stand-in until the test ends and checks that Run returns on cancellation.
func start(t *testing.T, c kubernetes.Interface, node string, opts kubelet.Options) *kubelet.Kubelet {
	t.Helper()
	t.Cleanup(func() { // registered first, so it runs after Run has stopped
		_ = c.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
	})
	return kubelet.RunForTest(t, c, node, opts)
}

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
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s (last: %v)", timeout, what, lastErr)
}

// waitNode waits until the node satisfies cond and returns it.
func waitNode(t *testing.T, c kubernetes.Interface, name string, timeout time.Duration, what string, cond func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	var node *corev1.Node
	waitFor(t, timeout, what, func() (bool, error) {
		n, err := c.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		node = n
		return cond(n), fmt.Errorf("conditions %+v, nodeInfo.bootID %q", n.Status.Conditions, n.Status.NodeInfo.BootID)
	})
	return node
}

func condition(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func readyIs(status corev1.ConditionStatus) func(*corev1.Node) bool {
	return func(n *corev1.Node) bool {
		c := condition(n, corev1.NodeReady)
		return c != nil && c.Status == status
	}
}

// reportsBoot matches a Ready node that carries the stand-in's current boot ID (a node left by
// an earlier run is Ready with another boot ID).
func reportsBoot(k *kubelet.Kubelet) func(*corev1.Node) bool {
	return func(n *corev1.Node) bool {
		return readyIs(corev1.ConditionTrue)(n) && n.Status.NodeInfo.BootID == k.BootID()
	}
}

func TestHeartbeats(t *testing.T) {
	c := client(t)
	const node = "heartbeat-node"
	k := start(t, c, node, kubelet.Options{Heartbeat: 200 * time.Millisecond, Labels: map[string]string{"layerd.dev/pool": "test"}})

	t.Run("creates the node Ready with labels and nodeInfo", func(t *testing.T) {
		n := waitNode(t, c, node, 10*time.Second, "Ready=True with the stand-in's boot ID", reportsBoot(k))
		info := n.Status.NodeInfo
		if info.Architecture != runtime.GOARCH || info.OperatingSystem != "linux" || info.BootID != k.BootID() {
			t.Errorf("nodeInfo %+v, want %s/linux with boot ID %s", info, runtime.GOARCH, k.BootID())
		}
		if n.Labels["layerd.dev/pool"] != "test" || n.Labels["kubernetes.io/hostname"] != node {
			t.Errorf("labels %v", n.Labels)
		}
	})

	t.Run("reports NotReady while SetNotReady(true)", func(t *testing.T) {
		k.SetNotReady(true)
		n := waitNode(t, c, node, 5*time.Second, "Ready=False", readyIs(corev1.ConditionFalse))
		if r := condition(n, corev1.NodeReady).Reason; r != "KubeletNotReady" {
			t.Errorf("reason %q, want KubeletNotReady", r)
		}
		k.SetNotReady(false)
		waitNode(t, c, node, 5*time.Second, "Ready=True again", readyIs(corev1.ConditionTrue))
	})

	t.Run("NewBoot changes status.nodeInfo.bootID", func(t *testing.T) {
		old := k.BootID()
		id := k.NewBoot()
		if id == old || id != k.BootID() {
			t.Fatalf("NewBoot returned %q (old %q, BootID %q)", id, old, k.BootID())
		}
		waitNode(t, c, node, 5*time.Second, "the new boot ID", func(n *corev1.Node) bool { return n.Status.NodeInfo.BootID == id })
	})

	t.Run("a foreign OSImageUpToDate condition survives three heartbeats", func(t *testing.T) {
		ctx := testContext(t)
		patch := []byte(`{"status":{"conditions":[{"type":"OSImageUpToDate","status":"False","reason":"Staged","message":"test"}]}}`)
		if _, err := c.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			t.Fatalf("adding foreign condition: %v", err)
		}
		after := k.Heartbeats() + 3
		waitFor(t, 10*time.Second, "three heartbeats", func() (bool, error) { return k.Heartbeats() >= after, nil })
		n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fc := condition(n, "OSImageUpToDate")
		if fc == nil || fc.Status != corev1.ConditionFalse || fc.Reason != "Staged" {
			t.Fatalf("foreign condition after heartbeats: %+v (all: %+v)", fc, n.Status.Conditions)
		}
		if !readyIs(corev1.ConditionTrue)(n) {
			t.Errorf("Ready lost: %+v", n.Status.Conditions)
		}
	})
}

func TestReregistration(t *testing.T) {
	t.Run("a deleted node is registered again on the next heartbeat", func(t *testing.T) {
		c := client(t)
		const node = "deleted-node"
		k := start(t, c, node, kubelet.Options{Heartbeat: 200 * time.Millisecond})
		first := waitNode(t, c, node, 10*time.Second, "Ready=True with the stand-in's boot ID", reportsBoot(k))
		if err := c.CoreV1().Nodes().Delete(testContext(t), node, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting node: %v", err)
		}
		waitNode(t, c, node, 10*time.Second, "a new Ready node", func(n *corev1.Node) bool {
			return n.UID != first.UID && reportsBoot(k)(n)
		})
	})
}

func TestImmediateReports(t *testing.T) {
	c := client(t)
	const node = "slow-heartbeat-node"
	k := start(t, c, node, kubelet.Options{Heartbeat: time.Hour})
	waitFor(t, 10*time.Second, "the first heartbeat", func() (bool, error) { return k.Heartbeats() >= 1, nil })

	t.Run("NewBoot is reported without waiting for the heartbeat interval", func(t *testing.T) {
		id := k.NewBoot()
		waitNode(t, c, node, 5*time.Second, "the new boot ID", func(n *corev1.Node) bool { return n.Status.NodeInfo.BootID == id })
	})

	t.Run("SetBootID is reported without waiting for the heartbeat interval", func(t *testing.T) {
		const id = "0f8c2b0e-6d3a-4b5e-9a41-2f7d0c9e1a55"
		k.SetBootID(id)
		if k.BootID() != id {
			t.Fatalf("BootID() = %q after SetBootID(%q)", k.BootID(), id)
		}
		waitNode(t, c, node, 5*time.Second, "the given boot ID", func(n *corev1.Node) bool { return n.Status.NodeInfo.BootID == id })
	})

	t.Run("SetNotReady is reported without waiting for the heartbeat interval", func(t *testing.T) {
		k.SetNotReady(true)
		waitNode(t, c, node, 5*time.Second, "Ready=False", readyIs(corev1.ConditionFalse))
	})
}

func TestClock(t *testing.T) {
	t.Run("heartbeats follow the injected clock", func(t *testing.T) {
		c := client(t)
		const node = "fake-clock-node"
		base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		clk := testingclock.NewFakeClock(base)
		k := start(t, c, node, kubelet.Options{Heartbeat: time.Minute, Clock: clk})
		waitFor(t, 10*time.Second, "the first heartbeat", func() (bool, error) { return k.Heartbeats() >= 1, nil })
		waitFor(t, 10*time.Second, "a heartbeat after stepping the clock", func() (bool, error) {
			if k.Heartbeats() >= 2 {
				return true, nil
			}
			clk.Step(time.Minute) // fires the heartbeat timer once it is armed
			return false, nil
		})
		n := waitNode(t, c, node, 5*time.Second, "a heartbeat time from the fake clock", func(n *corev1.Node) bool {
			r := condition(n, corev1.NodeReady)
			return r != nil && r.LastHeartbeatTime.Time.After(base)
		})
		if hb := condition(n, corev1.NodeReady).LastHeartbeatTime.Time; hb.After(clk.Now()) {
			t.Errorf("heartbeat time %v is later than the fake clock %v", hb, clk.Now())
		}
	})
}

func TestPods(t *testing.T) {
	c := client(t)
	ctx := testContext(t)
	const node = "pod-node"
	start(t, c, node, kubelet.Options{})
	created, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "kubelet-pods-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	ns := created.Name
	if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating default service account: %v", err)
	}
	pods := c.CoreV1().Pods(ns)
	newPod := func(name, nodeName string) {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating pod %s: %v", name, err)
		}
	}
	newPod("mine", node)
	newPod("other", "some-other-node")

	t.Run("marks a pod bound to its node Running and Ready", func(t *testing.T) {
		waitFor(t, 10*time.Second, "pod Running and Ready", func() (bool, error) {
			p, err := pods.Get(ctx, "mine", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return p.Status.Phase == corev1.PodRunning, nil
				}
			}
			return false, fmt.Errorf("status %+v", p.Status)
		})
	})

	t.Run("leaves pods of other nodes alone", func(t *testing.T) {
		time.Sleep(500 * time.Millisecond)
		p, err := pods.Get(ctx, "other", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase != corev1.PodPending {
			t.Errorf("pod on another node is %s, want Pending", p.Status.Phase)
		}
	})

	t.Run("completes the deletion of a terminating pod", func(t *testing.T) {
		began := time.Now()
		if err := pods.Delete(ctx, "mine", metav1.DeleteOptions{}); err != nil { // default 30s grace
			t.Fatalf("deleting pod: %v", err)
		}
		waitFor(t, 5*time.Second, "the pod to be gone", func() (bool, error) {
			_, err := pods.Get(ctx, "mine", metav1.GetOptions{})
			return apierrors.IsNotFound(err), err
		})
		t.Logf("pod gone %v after a graceful delete", time.Since(began))
	})
}
