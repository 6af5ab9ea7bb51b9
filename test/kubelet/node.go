package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// KubeletVersion is what the stand-in reports as status.nodeInfo.kubeletVersion.
const KubeletVersion = "v1.37.2-standin"

// ensureNode creates the Node with labels and nodeInfo, or adds the labels to an existing one.
// It also remembers the current Ready condition so its lastTransitionTime is kept.
func (k *Kubelet) ensureNode(ctx context.Context) error {
	labels := map[string]string{
		"kubernetes.io/hostname": k.nodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
	}
	for key, v := range k.opts.Labels {
		labels[key] = v
	}
	node, err := k.registerNode(ctx, labels)
	if err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready := c.Status == corev1.ConditionTrue
			k.mu.Lock()
			k.lastReady, k.lastTransition = &ready, c.LastTransitionTime.Time
			k.mu.Unlock()
		}
	}
	return nil
}

// registerNode gets or creates the Node, retrying when it is deleted or created concurrently.
func (k *Kubelet) registerNode(ctx context.Context, labels map[string]string) (*corev1.Node, error) {
	nodes := k.client.CoreV1().Nodes()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return nil, fmt.Errorf("encoding label patch: %w", err)
	}
	var lastErr error
	for range 5 {
		node, err := nodes.Get(ctx, k.nodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			node, err = nodes.Create(ctx, k.newNode(labels), metav1.CreateOptions{})
			if err == nil {
				return node, nil
			}
			if !apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("creating node: %w", err)
			}
			lastErr = err
		case err != nil:
			return nil, fmt.Errorf("getting node: %w", err)
		default:
			node, err = nodes.Patch(ctx, k.nodeName, types.MergePatchType, patch, metav1.PatchOptions{})
			if err == nil {
				return node, nil
			}
			if !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("labelling existing node: %w", err)
			}
			lastErr = err
		}
	}
	return nil, fmt.Errorf("registering node raced with other writers: %w", lastErr)
}

func (k *Kubelet) newNode(labels map[string]string) *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("4Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.nodeName, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: corev1.NodeHostName, Address: k.nodeName},
			},
			NodeInfo: corev1.NodeSystemInfo{
				Architecture:    runtime.GOARCH,
				OperatingSystem: "linux",
				BootID:          k.BootID(),
				KubeletVersion:  KubeletVersion,
			},
		},
	}
}

// heartbeat patches the Ready condition and status.nodeInfo.bootID (and nothing else) with a
// strategic-merge patch: conditions merge by type, so other owners' conditions stay.
func (k *Kubelet) heartbeat(ctx context.Context) error {
	now := k.clock.Now()
	ready := !k.notReady.Load()
	k.mu.Lock()
	if k.lastReady == nil || *k.lastReady != ready {
		k.lastTransition = now
	}
	transition, bootID := k.lastTransition, k.bootID
	k.mu.Unlock()

	cond := map[string]any{
		"type":               string(corev1.NodeReady),
		"status":             string(corev1.ConditionTrue),
		"reason":             "KubeletReady",
		"message":            "kubelet stand-in is posting ready status",
		"lastHeartbeatTime":  rfc3339(now),
		"lastTransitionTime": rfc3339(transition),
	}
	if !ready {
		cond["status"] = string(corev1.ConditionFalse)
		cond["reason"] = "KubeletNotReady"
		cond["message"] = "kubelet stand-in was set not ready"
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{
		"conditions": []any{cond},
		"nodeInfo":   map[string]any{"bootID": bootID},
	}})
	if err != nil {
		return fmt.Errorf("encoding heartbeat: %w", err)
	}
	_, err = k.client.CoreV1().Nodes().Patch(ctx, k.nodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		// Someone deleted the Node: register again, as a kubelet would.
		if err := k.ensureNode(ctx); err != nil {
			return fmt.Errorf("re-registering deleted node: %w", err)
		}
		_, err = k.client.CoreV1().Nodes().Patch(ctx, k.nodeName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	}
	if err != nil {
		return fmt.Errorf("patching node status: %w", err)
	}
	k.mu.Lock()
	k.lastReady = &ready
	k.mu.Unlock()
	k.heartbeats.Add(1)
	return nil
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
