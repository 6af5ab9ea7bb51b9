package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// rolloutPhases is the order of the update's phases.
var rolloutPhases = []nodestatus.Phase{
	nodestatus.PhaseResolving, nodestatus.PhaseVerifying, nodestatus.PhaseStaging, nodestatus.PhaseStaged,
	nodestatus.PhaseWaitingForSlot, nodestatus.PhaseDraining, nodestatus.PhaseRebooting, nodestatus.PhaseConfirming,
}

// ownWorld starts a private node-in-a-box with n nodes (closed when the test ends), so the
// package's shared world is not disturbed.
func ownWorld(t *testing.T, nodes int) *harness.World {
	t.Helper()
	began := time.Now()
	w := harness.Start(t, harness.Options{Nodes: nodes})
	t.Logf("own world with %d nodes up in %v", nodes, time.Since(began).Round(time.Millisecond))
	return w
}

// ownImage builds a layered image on w's base (w's own registry) and signs it unless unsigned.
func ownImage(t *testing.T, w *harness.World, spec osimage.Spec, signed bool) *osimage.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := w.Images.Layered(ctx, w.Base, spec)
	if err != nil {
		t.Fatalf("building image %s: %v", spec.Tag, err)
	}
	if signed {
		if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
			t.Fatalf("signing %s: %v", img.Pinned, err)
		}
	}
	return img
}

// startOwnAgent runs `layerd agent` on n as a DaemonSet pod; World.Close stops it.
func startOwnAgent(ctx context.Context, t *testing.T, w *harness.World, n *harness.Node, logs *syncBuffer) {
	t.Helper()
	kubeconfig, err := n.AgentKubeconfig(ctx)
	if err != nil {
		t.Fatalf("agent kubeconfig of %s: %v", n.Name, err)
	}
	_, stop, err := n.RunPod(w.AgentPod(n, layerdBinary(t), kubeconfig, logs))
	if err != nil {
		t.Fatalf("starting the agent pod on %s: %v", n.Name, err)
	}
	t.Cleanup(func() { _ = stop() })
}

func describeStatuses(ss []nodestatus.Status) string {
	var parts []string
	for _, s := range ss {
		v := string(s.State) + "/" + string(s.Phase)
		if s.Reason != "" {
			v += "(" + string(s.Reason) + ")"
		}
		parts = append(parts, v)
	}
	return strings.Join(parts, " → ")
}

// waitAllNodes polls the world's Nodes until cond holds for each.
func waitAllNodes(ctx context.Context, t *testing.T, kube kubernetes.Interface, timeout time.Duration, what string, cond func(nodestatus.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []string
	for {
		list, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			ok := len(list.Items) > 0
			last = last[:0]
			for i := range list.Items {
				s := nodestatus.Read(&list.Items[i])
				last = append(last, fmt.Sprintf("%s %s/%s %s %s", list.Items[i].Name, s.State, s.Phase, s.Reason, s.Message))
				ok = ok && cond(s)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting until %s: timed out after %v; last seen:\n%s", what, timeout, strings.Join(last, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// nodeEventReasons are the reasons of the layerd Events about node (namespace default).
func nodeEventReasons(ctx context.Context, t *testing.T, kube kubernetes.Interface, node string) map[string]int {
	t.Helper()
	evs, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", node).String()})
	if err != nil {
		t.Fatalf("listing the Events of %s: %v", node, err)
	}
	out := map[string]int{}
	for _, e := range evs.Items {
		if e.Source.Component == "layerd" || e.ReportingController == "layerd.dev/agent" {
			out[e.Reason]++
		}
	}
	return out
}

// TestRolloutOfThreeNodesOneAtATime: three nodes with maxUnavailable 1 (the default), an agent
// on each, all annotated with one signed layered image at once: each node goes through the
// phases in order to Done on the new digest, rebooted exactly once, and no two nodes were ever
// draining or rebooting at the same time.
func TestRolloutOfThreeNodesOneAtATime(t *testing.T) {
	w := ownWorld(t, 3)
	kube := w.Kube.Client
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "rollout", Version: "2.5", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.5\n"},
		"etc/motd":       {Content: "Welcome to layerd test OS 2.5 (rollout)\n"},
	}}, true)

	logs := map[string]*syncBuffer{}
	for _, n := range w.Nodes {
		logs[n.Name] = &syncBuffer{}
		startOwnAgent(ctx, t, w, n, logs[n.Name])
	}
	defer func() {
		if t.Failed() {
			for _, n := range w.Nodes {
				t.Logf("agent log of %s:\n%s", n.Name, logs[n.Name].String())
			}
		}
	}()
	waitAllNodes(ctx, t, kube, 2*time.Minute, "every agent reports Done on the base", func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone
	})
	reboots := map[string]int{}
	for _, n := range w.Nodes {
		reboots[n.Name] = n.Reboots()
	}

	tr, err := w.WatchTransitions(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	began := time.Now()
	for _, n := range w.Nodes {
		annotate(ctx, t, kube, n.Name, img.Ref)
	}
	waitAllNodes(ctx, t, kube, 10*time.Minute, "every node is Done on "+img.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
	})
	t.Logf("rollout of 3 nodes done in %v", time.Since(began).Round(time.Millisecond))
	// The last reboot's harness bookkeeping may trail the Done by a moment.
	time.Sleep(500 * time.Millisecond)
	tr.Stop()

	if ov := tr.Overlaps(); len(ov) > 0 {
		t.Errorf("two nodes disruptive at once: %v", ov)
	}
	for _, n := range w.Nodes {
		seen := tr.Statuses(n.Name)
		t.Logf("%s: %s", n.Name, describeStatuses(seen))
		if got := n.Reboots() - reboots[n.Name]; got != 1 {
			t.Errorf("%s: %d reboots counted by the harness, want 1", n.Name, got)
		}
		// The Working phases the watch saw are in order (repeats allowed, no going back).
		last, idx := -1, map[nodestatus.Phase]int{}
		for i, p := range rolloutPhases {
			idx[p] = i
		}
		observed := map[nodestatus.Phase]bool{}
		for _, s := range seen {
			if s.State == nodestatus.StateDegraded {
				t.Errorf("%s went Degraded %s: %s", n.Name, s.Reason, s.Message)
			}
			if s.State != nodestatus.StateWorking {
				continue
			}
			i, ok := idx[s.Phase]
			if !ok {
				t.Errorf("%s: unexpected phase %q", n.Name, s.Phase)
				continue
			}
			if i < last {
				t.Errorf("%s: phase %s after %s (out of order): %s", n.Name, s.Phase, rolloutPhases[last], describeStatuses(seen))
			}
			last = max(last, i)
			observed[s.Phase] = true
		}
		var missed []string
		for _, p := range rolloutPhases {
			if !observed[p] {
				missed = append(missed, string(p))
			}
		}
		if len(missed) > 0 {
			t.Logf("%s: phases passed too quickly for the watch: %v", n.Name, missed)
		}
		if len(seen) == 0 || seen[len(seen)-1].State != nodestatus.StateDone {
			t.Errorf("%s: the watch did not end on Done: %s", n.Name, describeStatuses(seen))
		}
		for _, p := range []nodestatus.Phase{nodestatus.PhaseDraining, nodestatus.PhaseRebooting} {
			if !observed[p] {
				t.Errorf("%s: disruptive phase %s never observed by the watch", n.Name, p)
			}
		}

		// An Event per transition: every phase the agent went through, and UpToDate.
		reasons := nodeEventReasons(ctx, t, kube, n.Name)
		t.Logf("%s: layerd Events by reason: %v", n.Name, reasons)
		for _, p := range rolloutPhases {
			if reasons[string(p)] == 0 {
				t.Errorf("%s: no Event with reason %s", n.Name, p)
			}
		}
		if reasons[nodestatus.ReasonUpToDate] == 0 {
			t.Errorf("%s: no Event with reason %s", n.Name, nodestatus.ReasonUpToDate)
		}

		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := nodestatus.Condition(node)
		if c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("%s: condition %s = %+v, want True", n.Name, nodestatus.ConditionOSImageUpToDate, c)
		}
		s := nodestatus.Read(node)
		if node.Spec.Unschedulable || s.CordonedBy != "" || s.DesiredDigest != img.Digest.String() {
			t.Errorf("%s after Done: unschedulable %v, cordoned-by %q, desired-digest %q", n.Name, node.Spec.Unschedulable, s.CordonedBy, s.DesiredDigest)
		}
		if st := status(t, connect(t, n)); digestOf(st.Booted) != img.Digest.String() || st.Staged != nil {
			t.Errorf("%s: rpm-ostree booted %s, staged %v; want %s booted, nothing staged", n.Name, digestOf(st.Booted), st.Staged, img.Digest)
		}
	}
	leases, err := kube.CoordinationV1().Leases(harness.AgentNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			t.Errorf("slot %s still held by %s after the rollout", l.Name, *l.Spec.HolderIdentity)
		}
	}
}
