package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/osimage"
)

// TestPoolPolicyHoldsNodesBeforeTheSlot: with rebootPolicy Manual the node stages, then waits in
// WaitingForSlot for layerd.dev/approve-reboot=<digest> (an approval of another digest does
// nothing); with paused: true it stages and waits until the pool is resumed. Neither takes a
// slot, cordons or reboots while held back.
func TestPoolPolicyHoldsNodesBeforeTheSlot(t *testing.T) {
	w := ownWorld(t, 1)
	n := w.Nodes[0]
	kube := w.Kube.Client
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	img1 := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "manual", Version: "3.1", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 3.1\n"}}}, true)
	img2 := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "paused", Version: "3.2", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 3.2\n"}}}, true)
	startAgentUp(ctx, t, w, n)

	heldBack := func(t *testing.T, staged string) {
		t.Helper()
		time.Sleep(3 * time.Second) // the agent would have taken a free slot by now
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := nodestatus.Read(node)
		if s.Phase != nodestatus.PhaseWaitingForSlot || s.StagedImage != staged {
			t.Fatalf("phase %s staged-image %q, want WaitingForSlot with %s staged", s.Phase, s.StagedImage, staged)
		}
		if holds(ctx, t, kube, n.Name) || node.Spec.Unschedulable {
			t.Fatalf("held back, yet holding a slot (%v) or cordoned (%v)", holds(ctx, t, kube, n.Name), node.Spec.Unschedulable)
		}
	}

	t.Run("rebootPolicy_Manual_waits_for_the_approval_of_the_digest_and_settleTime_holds_Done", func(t *testing.T) {
		setPools(ctx, t, kube, "default:\n  rebootPolicy: Manual\n  settleTime: 15s\n")
		reboots := n.Reboots()
		annotate(ctx, t, kube, n.Name, img1.Ref)
		want := nodestatus.AnnotationApproveReboot + "=" + img1.Digest.String()
		waitNode(ctx, t, kube, n.Name, "waiting for the approval", func(s nodestatus.Status) bool {
			return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, want)
		})
		approve(ctx, t, kube, n.Name, img2.Digest.String()) // not this update's digest
		heldBack(t, img1.Pinned)
		approve(ctx, t, kube, n.Name, img1.Digest.String())
		waitNode(ctx, t, kube, n.Name, "Done once approved", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == img1.Pinned
		})
		if got := n.Reboots() - reboots; got != 1 {
			t.Errorf("%d reboots, want 1", got)
		}
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ready time.Time
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = c.LastTransitionTime.Time
			}
		}
		// Both stamps have whole seconds.
		if settled := nodestatus.Read(node).LastTransition.Sub(ready); settled < 14*time.Second {
			t.Errorf("Done %v after the node became Ready again, want the pool's settleTime of 15s", settled)
		}
	})

	t.Run("a_paused_pool_stages_and_reboots_only_once_resumed", func(t *testing.T) {
		setPools(ctx, t, kube, "default:\n  paused: true\n")
		reboots := n.Reboots()
		annotate(ctx, t, kube, n.Name, img2.Ref)
		waitNode(ctx, t, kube, n.Name, "waiting, paused", func(s nodestatus.Status) bool {
			return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, "paused")
		})
		heldBack(t, img2.Pinned)
		if got := n.Reboots() - reboots; got != 0 {
			t.Fatalf("%d reboots in a paused pool", got)
		}
		setPools(ctx, t, kube, "default:\n  paused: false\n")
		waitNode(ctx, t, kube, n.Name, "Done once resumed", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == img2.Pinned
		})
		if got := n.Reboots() - reboots; got != 1 {
			t.Errorf("%d reboots, want 1", got)
		}
	})
}

// approve sets layerd.dev/approve-reboot on node, as an admin would.
func approve(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, digest string) {
	t.Helper()
	patch := `{"metadata":{"annotations":{"` + nodestatus.AnnotationApproveReboot + `":"` + digest + `"}}}`
	if _, err := kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("approving the reboot of %s into %s: %v", node, digest, err)
	}
}
