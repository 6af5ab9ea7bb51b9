package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// kubeletRun is one run of a node's kubelet stand-in (kubelet.Run in a goroutine).
type kubeletRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
}

// runKubelet starts the node's kubelet stand-in: it registers the Node (again) and heartbeats.
func (n *Node) runKubelet() {
	ctx, cancel := context.WithCancel(context.Background())
	r := &kubeletRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = n.Kubelet.Run(ctx)
	}()
	n.kmu.Lock()
	n.krun = r
	n.kmu.Unlock()
}

// stopKubeletRun stops the kubelet stand-in and waits for it; it reports whether one ran.
func (n *Node) stopKubeletRun() bool {
	n.kmu.Lock()
	r := n.krun
	n.krun = nil
	n.kmu.Unlock()
	if r == nil {
		return false
	}
	r.cancel()
	<-r.done
	return true
}

// kubeletDone is closed when the current run of the kubelet stand-in ended (nil when none runs).
func (n *Node) kubeletDone() (<-chan struct{}, func() error) {
	n.kmu.Lock()
	defer n.kmu.Unlock()
	if n.krun == nil {
		return nil, nil
	}
	r := n.krun
	return r.done, func() error { return r.err }
}

// NodeLostReason and NodeLostMessage are what StopKubelet writes into the Node's Ready
// condition: the words kube-controller-manager's node lifecycle controller uses when a kubelet
// stopped posting node status.
const (
	NodeLostReason  = "NodeStatusUnknown"
	NodeLostMessage = "Kubelet stopped posting node status."
)

// StopKubelet stops the node's kubelet stand-in, as if the machine lost power or its network:
// heartbeats stop, pods bound to the Node are no longer tended, and a deleted Node is not
// registered again. The Node then goes NotReady the way the node lifecycle controller would
// mark it after its grace period (which the test world does not run): StopKubelet writes Ready
// = Unknown with reason NodeLostReason at once. The node's own processes (its bus, the
// rpm-ostreed stand-in, pods started with RunPod) keep running; stop or Kill them first for a
// node that is down. StartKubelet undoes it.
func (n *Node) StopKubelet(ctx context.Context) error {
	if !n.stopKubeletRun() {
		return fmt.Errorf("node %s: its kubelet stand-in is not running", n.Name)
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []any{map[string]any{
		"type": string(corev1.NodeReady), "status": string(corev1.ConditionUnknown),
		"reason": NodeLostReason, "message": NodeLostMessage,
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
	}}}})
	if err != nil {
		return fmt.Errorf("node %s: encoding the Ready condition: %w", n.Name, err)
	}
	_, err = n.w.Kube.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s: marking the Node NotReady after its kubelet stopped: %w", n.Name, err)
	}
	n.w.logf("%s: kubelet stand-in stopped, Node marked Ready=Unknown", n.Name)
	return nil
}

// StartKubelet starts the node's kubelet stand-in again after StopKubelet: it registers the
// Node when it is gone, and its next heartbeat reports Ready (or NotReady while the node is
// rebooting) with the current boot ID. It fails for a node removed with World.RemoveNode.
func (n *Node) StartKubelet(ctx context.Context) error {
	n.kmu.Lock()
	running, removed := n.krun != nil, n.removed
	n.kmu.Unlock()
	switch {
	case removed:
		return fmt.Errorf("node %s was removed from the cluster", n.Name)
	case running:
		return fmt.Errorf("node %s: its kubelet stand-in is running already", n.Name)
	}
	before := n.Kubelet.Heartbeats()
	n.runKubelet()
	if err := n.waitHeartbeat(ctx, before); err != nil {
		return err
	}
	n.w.logf("%s: kubelet stand-in started again", n.Name)
	return nil
}

// RemoveNode takes a node out of the cluster for good, as when a machine is decommissioned: its
// kubelet stand-in stops (so nothing registers the Node again) and its Node object is deleted;
// RemoveNode returns once the API server no longer has it. The node's other processes keep
// running until Close (stop its pods first for a machine that is gone); it stays in Nodes.
func (w *World) RemoveNode(ctx context.Context, name string) error {
	n := w.Node(name)
	if n == nil {
		return fmt.Errorf("removing node %s: no such node in the world", name)
	}
	n.kmu.Lock()
	n.removed = true
	n.kmu.Unlock()
	n.stopKubeletRun()
	nodes := w.Kube.Client.CoreV1().Nodes()
	if err := nodes.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing node %s: %w", name, err)
	}
	for {
		_, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			w.logf("%s: removed from the cluster", name)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("removing node %s: waiting for the Node to be gone: %w (last: %v)", name, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitHeartbeat waits until the kubelet stand-in has posted a heartbeat after the first `after`.
func (n *Node) waitHeartbeat(ctx context.Context, after int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done, runErr := n.kubeletDone()
	for n.Kubelet.Heartbeats() <= after {
		select {
		case <-done:
			return fmt.Errorf("node %s: kubelet stand-in stopped: %v", n.Name, runErr())
		case <-ctx.Done():
			return fmt.Errorf("waiting for node %s to be Ready: %w", n.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
