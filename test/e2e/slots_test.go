package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// slotLease is the agents' --slot-lease-duration in the slot tests: short, so a Lease whose
// holder stopped renewing expires within the test.
const slotLease = 6 * time.Second

// heldSlot returns the slot Lease node holds, failing when it holds none.
func heldSlot(ctx context.Context, t *testing.T, kube kubernetes.Interface, node string) *coordv1.Lease {
	t.Helper()
	leases, err := kube.CoordinationV1().Leases(harness.AgentNamespace).List(ctx, metav1.ListOptions{LabelSelector: coord.LabelSlotPool})
	if err != nil {
		t.Fatal(err)
	}
	for i := range leases.Items {
		if h := leases.Items[i].Spec.HolderIdentity; h != nil && *h == node {
			return &leases.Items[i]
		}
	}
	t.Fatalf("%s holds no slot (held: %v)", node, slotHolders(ctx, t, kube))
	return nil
}

// TestSlotOfADeletedHolderIsFreedButANotReadyHolderKeepsIt: two nodes, maxUnavailable 1, agents
// with a 6s slot Lease. node-1 takes the slot and is held draining (a PDB forbids evicting its
// pod); then its agent dies and its kubelet stops (the Node goes NotReady), so its Lease
// expires. node-2, updating too, keeps waiting and names node-1 as the holder, also after the
// Lease expired: a NotReady holder keeps its slot. Once node-1 is removed from the cluster (its
// Node deleted for good), node-2 takes the slot over and reaches Done on the new digest with one
// reboot.
func TestSlotOfADeletedHolderIsFreedButANotReadyHolderKeepsIt(t *testing.T) {
	w := ownWorld(t, 2)
	a, b := w.Nodes[0], w.Nodes[1]
	kube := w.Kube.Client
	ctx := agentContext(t, 15*time.Minute)
	img := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "slots", Version: "2.8", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.8\n"},
	}}, true)

	guardPod(ctx, t, kube, a.Name) // node-1's drain waits for its 10m default: it stays in Draining
	lease := "--slot-lease-duration=" + slotLease.String()
	agentA := startAgentPod(ctx, t, w, a, lease)
	agentB := startAgentPod(ctx, t, w, b, lease)
	for _, n := range w.Nodes {
		waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
	}
	rebootsA, rebootsB := a.Reboots(), b.Reboots()

	annotate(ctx, t, kube, a.Name, img.Ref)
	waitNode(ctx, t, kube, a.Name, "Draining, holding the slot", func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateWorking && s.Phase == nodestatus.PhaseDraining
	})
	held := heldSlot(ctx, t, kube, a.Name)
	if d := held.Spec.LeaseDurationSeconds; d == nil || time.Duration(*d)*time.Second != slotLease {
		t.Fatalf("slot %s has leaseDurationSeconds %v, want the agent's --slot-lease-duration %v", held.Name, d, slotLease)
	}

	// node-1 is lost mid-update: its agent stops renewing, its kubelet stops heartbeating.
	agentA.kill(t)
	if err := a.StopKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, a.Name+" NotReady", 30*time.Second, func() bool {
		n, err := kube.CoreV1().Nodes().Get(ctx, a.Name, metav1.GetOptions{})
		return err == nil && !coord.Ready(n)
	})

	annotate(ctx, t, kube, b.Name, img.Ref)
	heldBy := "held by " + a.Name
	waitNode(ctx, t, kube, b.Name, "WaitingForSlot naming "+a.Name, func(s nodestatus.Status) bool {
		return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, heldBy)
	})

	t.Run("a_NotReady_holder_keeps_its_expired_slot_and_the_waiter_names_it", func(t *testing.T) {
		l, err := kube.CoordinationV1().Leases(harness.AgentNamespace).Get(ctx, held.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		expires := l.Spec.RenewTime.Add(slotLease)
		// node-2 asks again every SlotPoll (15s): wait until it judged the expired Lease twice,
		// so it kept waiting across a poll.
		verdict := "expired reboot slot kept by its holder"
		waitFor(t, "node-2 judged the expired slot twice and kept waiting", 90*time.Second, func() bool {
			return time.Now().After(expires) && strings.Count(agentB.logs.String(), verdict) >= 2
		})
		if l, err = kube.CoordinationV1().Leases(harness.AgentNamespace).Get(ctx, held.Name, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		if !coord.Expired(l, time.Now()) || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != a.Name {
			t.Fatalf("slot %s: holder %v, renewed %v; want %s's, expired", held.Name, l.Spec.HolderIdentity, l.Spec.RenewTime, a.Name)
		}
		for _, line := range strings.Split(agentB.logs.String(), "\n") {
			if strings.Contains(line, verdict) && !strings.Contains(line, `"holder": "`+a.Name+`"`) {
				t.Errorf("the verdict names another holder: %s", line)
			}
		}
		node, err := kube.CoreV1().Nodes().Get(ctx, b.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s := nodestatus.Read(node); s.Phase != nodestatus.PhaseWaitingForSlot || !strings.Contains(s.Message, heldBy) {
			t.Errorf("%s after the Lease expired: %s/%s %q; want WaitingForSlot naming %s", b.Name, s.State, s.Phase, s.Message, a.Name)
		}
		waitEvent(ctx, t, kube, b.Name, string(nodestatus.PhaseWaitingForSlot), 10*time.Second, func(e corev1.Event) bool {
			return strings.Contains(e.Message, heldBy)
		})
		if b.Reboots() != rebootsB {
			t.Errorf("%s rebooted while it had no slot", b.Name)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("deleting_the_holders_Node_frees_the_slot_and_the_waiter_finishes", func(t *testing.T) {
		if err := w.RemoveNode(ctx, a.Name); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		phases := waitNode(ctx, t, kube, b.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
		})
		t.Logf("%s Done %v after %s's Node was deleted; phases: %s", b.Name, time.Since(began).Round(time.Millisecond), a.Name, strings.Join(phases, " → "))
		waitReboots(t, b, rebootsB+1, 30*time.Second)
		time.Sleep(time.Second)
		if got := b.Reboots() - rebootsB; got != 1 {
			t.Errorf("%s: %d reboots, want exactly 1", b.Name, got)
		}
		if got := a.Reboots() - rebootsA; got != 0 {
			t.Errorf("%s, whose agent was gone, rebooted %d times", a.Name, got)
		}
		logs := agentB.logs.String()
		for _, want := range []string{"expired reboot slot: holder node is gone", "taking over an expired reboot slot"} {
			if !strings.Contains(logs, want) {
				t.Errorf("%s's log lacks %q", b.Name, want)
			}
		}
		if _, err := kube.CoreV1().Nodes().Get(ctx, a.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("node %s exists again (%v): the takeover was not tested against a deleted Node", a.Name, err)
		}
		if h := slotHolders(ctx, t, kube); len(h) != 0 {
			t.Errorf("slots still held after %s is Done: %v", b.Name, h)
		}
		if st := status(t, connect(t, b)); digestOf(st.Booted) != img.Digest.String() || st.Staged != nil {
			t.Errorf("%s: rpm-ostree booted %s, staged %v; want %s booted", b.Name, digestOf(st.Booted), st.Staged, img.Digest)
		}
	})
}
