package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// setRetry sets layerd.dev/retry on node.
func setRetry(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, nodestatus.AnnotationRetry, value)
	if _, err := kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("setting %s on %s: %v", nodestatus.AnnotationRetry, node, err)
	}
}

// checkRefusedCleanly: after a refusal nothing is staged, the node was not cordoned nor
// rebooted, and the node holds no slot Lease.
func checkRefusedCleanly(ctx context.Context, t *testing.T, w *harness.World, n *harness.Node, reboots int) {
	t.Helper()
	kube := w.Kube.Client
	node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := nodestatus.Read(node)
	if node.Spec.Unschedulable || s.CordonedBy != "" || s.StagedImage != "" {
		t.Errorf("unschedulable %v, cordoned-by %q, staged-image %q after a refusal", node.Spec.Unschedulable, s.CordonedBy, s.StagedImage)
	}
	if st := status(t, connect(t, n)); st.Staged != nil {
		t.Errorf("rpm-ostree has %s staged after a refusal", st.Staged.ID)
	}
	if n.Reboots() != reboots {
		t.Errorf("rebooted after a refusal")
	}
	leases, err := kube.CoordinationV1().Leases(harness.AgentNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == n.Name {
			t.Errorf("slot %s held by %s after a refusal", l.Name, n.Name)
		}
	}
}

// TestRefusedImagesEndDegradedAndRecoverOnceFixed: on a fresh one-node world, an image that is
// not bootable, one for another architecture and a tag that does not exist each end Degraded
// with their reason, having staged, cordoned and reserved nothing; fixing the cause (a good
// image, or pushing the tag and setting layerd.dev/retry) then updates the node.
func TestRefusedImagesEndDegradedAndRecoverOnceFixed(t *testing.T) {
	w := ownWorld(t, 1)
	n := w.Nodes[0]
	kube := w.Kube.Client
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var logs syncBuffer
	startOwnAgent(ctx, t, w, n, &logs)
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })

	good := func(tag, version string) *osimage.Image {
		return ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: tag, Version: version, Files: map[string]osimage.File{
			"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool " + version + "\n"},
		}}, true)
	}
	// refuse annotates ref, waits for Degraded with want and checks nothing was done.
	refuse := func(t *testing.T, ref string, want reason.Code) {
		t.Helper()
		reboots := n.Reboots()
		began := time.Now()
		annotate(ctx, t, kube, n.Name, ref)
		phases := waitNode(ctx, t, kube, n.Name, "Degraded "+string(want), func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDegraded
		})
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := nodestatus.Read(node)
		t.Logf("Degraded after %v: %s (%q); phases: %s", time.Since(began).Round(time.Millisecond), s.Reason, s.Message, strings.Join(phases, " → "))
		if s.Reason != want {
			t.Errorf("reason %s (%q), want %s", s.Reason, s.Message, want)
		}
		// The writer patches the annotations, then the condition: allow it a moment.
		condOK := func(node *corev1.Node) bool {
			c := nodestatus.Condition(node)
			return c != nil && c.Status == corev1.ConditionFalse && c.Reason == string(want)
		}
		for deadline := time.Now().Add(10 * time.Second); !condOK(node) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			if node, err = kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if !condOK(node) {
			t.Errorf("condition %s = %+v, want False/%s", nodestatus.ConditionOSImageUpToDate, nodestatus.Condition(node), want)
		}
		checkRefusedCleanly(ctx, t, w, n, reboots)
	}
	// succeed waits for Done on img after one reboot.
	succeed := func(t *testing.T, img *osimage.Image) {
		t.Helper()
		reboots := n.Reboots()
		began := time.Now()
		phases := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
		})
		t.Logf("Done after %v; phases: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
		waitReboots(t, n, reboots+1, 30*time.Second)
		if st := status(t, connect(t, n)); digestOf(st.Booted) != img.Digest.String() || st.Staged != nil {
			t.Errorf("rpm-ostree booted %s, staged %v; want %s booted, nothing staged", digestOf(st.Booted), st.Staged, img.Digest)
		}
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s := nodestatus.Read(node); node.Spec.Unschedulable || s.CordonedBy != "" || s.Reason != "" {
			t.Errorf("after Done: unschedulable %v, cordoned-by %q, reason %q", node.Spec.Unschedulable, s.CordonedBy, s.Reason)
		}
	}

	t.Run("a_not_bootable_image_ends_Degraded_NotBootable_and_a_good_image_then_succeeds", func(t *testing.T) {
		bad := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "not-bootable", Version: "2.6-nb", NotBootable: true, Files: map[string]osimage.File{
			"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho not bootable\n"},
		}}, true)
		refuse(t, bad.Ref, reason.NotBootable)
		fix := good("fixed-1", "2.6")
		annotate(ctx, t, kube, n.Name, fix.Ref)
		succeed(t, fix)
	})

	t.Run("an_image_for_another_arch_ends_Degraded_ArchMismatch_and_a_good_image_then_succeeds", func(t *testing.T) {
		bad := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "arm64", Version: "2.7-arm64", Arch: "arm64", Files: map[string]osimage.File{
			"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho arm64\n"},
		}}, true)
		refuse(t, bad.Ref, reason.ArchMismatch)
		fix := good("fixed-2", "2.7")
		annotate(ctx, t, kube, n.Name, fix.Ref)
		succeed(t, fix)
	})

	t.Run("an_unknown_tag_ends_Degraded_ImageNotFound_and_retry_after_pushing_it_succeeds", func(t *testing.T) {
		ref := strings.TrimSuffix(w.Base.Ref, ":"+w.Base.Tag) + ":pushed-later"
		refuse(t, ref, reason.ImageNotFound)
		img := good("pushed-later", "2.8")
		if img.Ref != ref {
			t.Fatalf("pushed %s, annotated %s", img.Ref, ref)
		}
		setRetry(ctx, t, kube, n.Name, "after-push-1")
		succeed(t, img)
	})
}
