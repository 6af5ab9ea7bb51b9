package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// guarded is a workload on one node whose PodDisruptionBudget forbids evicting its only pod.
type guarded struct {
	ns, pod, pdb string
}

func (g guarded) podRef() string { return g.ns + "/" + g.pod }
func (g guarded) pdbRef() string { return g.ns + "/" + g.pdb }

// guardPod runs one ReplicaSet pod on node with a PDB (minAvailable 1) over it, and waits until
// the real disruption controller reports that no disruption is allowed. The ReplicaSet exists
// so the pod is managed (no ReplicaSet controller runs in the box: the pod is created here).
func guardPod(ctx context.Context, t *testing.T, kube kubernetes.Interface, node string) guarded {
	t.Helper()
	ns, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := guarded{ns: ns.Name, pod: "web-1", pdb: "web-pdb"}
	// Pod admission needs the ServiceAccount; do not wait for its controller.
	if _, err := kube.CoreV1().ServiceAccounts(g.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "web"}
	one := int32(1)
	rs, err := kube.AppsV1().ReplicaSets(g.ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.ReplicaSetSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/web:1"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	grace, no := int64(1), false
	if _, err := kube.CoreV1().Pods(g.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: g.pod, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: &grace, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/web:1"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	minAvailable := intstr.FromInt32(1)
	if _, err := kube.PolicyV1().PodDisruptionBudgets(g.ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: g.pdb},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &minAvailable, Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the disruption controller counts the pod healthy and allows no disruption", time.Minute, func() bool {
		p, err := kube.PolicyV1().PodDisruptionBudgets(g.ns).Get(ctx, g.pdb, metav1.GetOptions{})
		return err == nil && p.Status.ObservedGeneration == p.Generation && p.Status.CurrentHealthy == 1 &&
			p.Status.DesiredHealthy == 1 && p.Status.DisruptionsAllowed == 0
	})
	return g
}

// slotHolders returns slot Lease name → holder for every held slot.
func slotHolders(ctx context.Context, t *testing.T, kube kubernetes.Interface) map[string]string {
	t.Helper()
	leases, err := kube.CoordinationV1().Leases(harness.AgentNamespace).List(ctx, metav1.ListOptions{LabelSelector: coord.LabelSlotPool})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range leases.Items {
		if h := l.Spec.HolderIdentity; h != nil && *h != "" {
			out[l.Name] = *h
		}
	}
	return out
}

// holds reports whether node holds any slot.
func holds(ctx context.Context, t *testing.T, kube kubernetes.Interface, node string) bool {
	for _, h := range slotHolders(ctx, t, kube) {
		if h == node {
			return true
		}
	}
	return false
}

// nodeEvents returns the layerd Events about node with reason, oldest first.
func nodeEvents(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, reason string) []corev1.Event {
	t.Helper()
	evs, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(fields.OneTermEqualSelector("involvedObject.name", node),
			fields.OneTermEqualSelector("reason", reason)).String()})
	if err != nil {
		t.Fatalf("listing the Events of %s: %v", node, err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.ReportingController == nodestatus.ReportingController {
			out = append(out, e)
		}
	}
	return out
}

// TestDrainBlockedByAPDBEndsDrainTimeoutAndRecoversOnRetry: a PodDisruptionBudget (status from
// the real disruption controller) forbids evicting the one pod it guards on the node. With the
// pool's drainTimeout of 8s from layerd-config, the update ends Degraded DrainTimeout after 8s
// (not the agent's 10m default: the per-pool setting is applied), the message and the Event
// name the pod and the PDB, the node is uncordoned, the slot released and the staged deployment
// kept. Deleting the PDB and setting layerd.dev/retry then finishes the update with one reboot.
func TestDrainBlockedByAPDBEndsDrainTimeoutAndRecoversOnRetry(t *testing.T) {
	w := ownWorld(t, 1)
	n := w.Nodes[0]
	kube := w.Kube.Client
	ctx := agentContext(t, 15*time.Minute)
	img := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "drain", Version: "2.7", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.7\n"},
	}}, true)

	setPools(ctx, t, kube, "default:\n  maxUnavailable: 1\n  drainTimeout: 8s\n")
	g := guardPod(ctx, t, kube, n.Name)
	startAgentUp(ctx, t, w, n)
	reboots := n.Reboots()
	s, phases := annotateUntilDegraded(ctx, t, kube, n.Name, img.Ref, reason.DrainTimeout)
	if !containsPhase(phases, string(nodestatus.PhaseDraining)) {
		t.Errorf("Draining never observed: %v", phases)
	}
	for _, want := range []string{"timed out after 8s", "pod " + g.podRef(), "PDB " + g.pdbRef()} {
		if !strings.Contains(s.Message, want) {
			t.Errorf("message %q lacks %q", s.Message, want)
		}
	}

	t.Run("the_event_names_the_pod_and_the_pdb", func(t *testing.T) {
		waitEvent(ctx, t, kube, n.Name, string(reason.DrainTimeout), 10*time.Second, func(e corev1.Event) bool {
			return e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "pod "+g.podRef()) &&
				strings.Contains(e.Message, "PDB "+g.pdbRef())
		})
	})

	t.Run("the_node_is_uncordoned_the_slot_released_and_the_staged_deployment_kept", func(t *testing.T) {
		waitFor(t, "the node uncordoned and its slot released", 30*time.Second, func() bool {
			node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			return err == nil && !node.Spec.Unschedulable && nodestatus.Read(node).CordonedBy == "" && !holds(ctx, t, kube, n.Name)
		})
		if st := status(t, connect(t, n)); st.Staged == nil || digestOf(st.Staged) != img.Digest.String() {
			t.Errorf("rpm-ostree staged %s, want %s kept", digestOf(st.Staged), img.Digest)
		}
		if got := n.Reboots(); got != reboots {
			t.Errorf("%d reboots after a drain timeout", got-reboots)
		}
		if _, err := kube.CoreV1().Pods(g.ns).Get(ctx, g.pod, metav1.GetOptions{}); err != nil {
			t.Errorf("the guarded pod: %v (a PDB that allows no disruption must keep it)", err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("deleting_the_pdb_and_a_retry_finish_the_update_with_one_reboot", func(t *testing.T) {
		if err := kube.PolicyV1().PodDisruptionBudgets(g.ns).Delete(ctx, g.pdb, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		retryUntilDoneOnce(ctx, t, kube, n, img, "after-pdb-removed", reboots)
		if _, err := kube.CoreV1().Pods(g.ns).Get(ctx, g.pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the pod the PDB guarded is still there (%v): it should have been evicted", err)
		}
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s := nodestatus.Read(node); node.Spec.Unschedulable || s.CordonedBy != "" || s.Reason != "" {
			t.Errorf("after Done: unschedulable %v, cordoned-by %q, reason %q", node.Spec.Unschedulable, s.CordonedBy, s.Reason)
		}
		if holds(ctx, t, kube, n.Name) {
			t.Errorf("%s still holds a slot after Done", n.Name)
		}
	})
}

// waitEvent polls until a layerd Event about node with reason satisfies match.
func waitEvent(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, reason string, timeout time.Duration, match func(corev1.Event) bool) corev1.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := nodeEvents(ctx, t, kube, node, reason)
		for _, e := range evs {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching %s Event about %s after %v; the %s Events:%s", reason, node, timeout, reason, describeEvents(evs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// describeEvents is one line per Event, for failure messages.
func describeEvents(evs []corev1.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %s %s: %s", e.Type, e.Reason, e.Message)
	}
	return b.String()
}
