package nodestatus_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"

	ns "layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/kube"
)

// The real control plane is started once, by the first test that needs it, and stopped by
// TestMain; the unit tests never start it.
var plane = &kube.Lazy{Options: kube.Options{NoControllerManager: true}}

func TestMain(m *testing.M) { plane.Main(m) }

// cluster returns the shared control plane or fails the test with why it is missing.
func cluster(t *testing.T) *kube.Cluster { return plane.Get(t) }

type realNode struct {
	client kubernetes.Interface
	name   string
	clock  *clocktesting.FakeClock
	w      *ns.Writer
}

// newRealNode creates a Ready Node named after the test and a Writer for it.
func newRealNode(t *testing.T, opts ...ns.Option) *realNode {
	t.Helper()
	c := cluster(t)
	ctx := context.Background()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	name = strings.Trim(name, "-")
	n, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
		Annotations: map[string]string{ns.AnnotationDesiredImage: "reg/os:v2", "example.com/other": "kept"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting node %s: %v", name, err)
		}
	})
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	w, err := ns.New(c.Client, name, clk, zaptest.NewLogger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &realNode{client: c.Client, name: name, clock: clk, w: w}
}

func (r *realNode) get(t *testing.T) *corev1.Node {
	t.Helper()
	n, err := r.client.CoreV1().Nodes().Get(context.Background(), r.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// layerdAnnotations returns the node's layerd.dev/ annotations.
func (r *realNode) layerdAnnotations(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range r.get(t).Annotations {
		if strings.HasPrefix(k, ns.Prefix) {
			out[k] = v
		}
	}
	return out
}

// events returns the Events about the node the way `kubectl describe node` finds them.
func (r *realNode) events(t *testing.T) []corev1.Event {
	t.Helper()
	sel := fields.Set{"involvedObject.kind": "Node", "involvedObject.name": r.name, "involvedObject.uid": string(r.get(t).UID)}
	l, err := r.client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: sel.AsSelector().String()})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestWriterOnAPIServer(t *testing.T) {
	ctx := context.Background()
	t.Run("an_update_from_start_to_done_leaves_exactly_the_expected_record", func(t *testing.T) {
		r := newRealNode(t)
		stamp := r.clock.Now().UTC().Format(time.RFC3339)
		steps := []func() error{
			func() error { return r.w.SetWorking(ctx, ns.PhaseResolving, "Resolving reg/os:v2") },
			func() error {
				return r.w.SetDesiredDigest(ctx, ns.Resolved{Image: "reg/os:v2", Digest: "sha256:m", IndexDigest: "sha256:i"})
			},
			func() error { return r.w.SetStaged(ctx, "reg/os@sha256:m", "Staged reg/os@sha256:m") },
			func() error { return r.w.SetCordonedBy(ctx) },
			func() error { return r.w.RecordRebootBootID(ctx, "boot-1") },
			func() error { return r.w.SetWorking(ctx, ns.PhaseRebooting, "Rebooting into reg/os@sha256:m") },
		}
		for i, step := range steps {
			if err := step(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		want := map[string]string{
			ns.AnnotationDesiredImage: "reg/os:v2", ns.AnnotationState: "Working", ns.AnnotationPhase: "Rebooting",
			ns.AnnotationMessage: "Rebooting into reg/os@sha256:m", ns.AnnotationLastTransition: stamp,
			ns.AnnotationDesiredDigest: "sha256:m", ns.AnnotationDesiredIndexDigest: "sha256:i", ns.AnnotationResolvedImage: "reg/os:v2",
			ns.AnnotationStagedImage: "reg/os@sha256:m", ns.AnnotationCordonedBy: "layerd", ns.AnnotationRebootBootID: "boot-1",
		}
		if got := r.layerdAnnotations(t); !reflect.DeepEqual(got, want) {
			t.Fatalf("annotations =\n%v\nwant\n%v", got, want)
		}
		r.clock.Step(time.Minute)
		if err := r.w.ClearCordonedBy(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.w.SetDone(ctx, "reg/os@sha256:m"); err != nil {
			t.Fatal(err)
		}
		want = map[string]string{
			ns.AnnotationDesiredImage: "reg/os:v2", ns.AnnotationState: "Done", ns.AnnotationMessage: "Running reg/os@sha256:m",
			ns.AnnotationLastTransition: r.clock.Now().UTC().Format(time.RFC3339), ns.AnnotationCurrentImage: "reg/os@sha256:m",
			ns.AnnotationDesiredDigest: "sha256:m", ns.AnnotationDesiredIndexDigest: "sha256:i", ns.AnnotationResolvedImage: "reg/os:v2",
		}
		node := r.get(t)
		if got := r.layerdAnnotations(t); !reflect.DeepEqual(got, want) {
			t.Fatalf("annotations after Done =\n%v\nwant\n%v", got, want)
		}
		if node.Annotations["example.com/other"] != "kept" {
			t.Fatal("another writer's annotation was lost")
		}
		if s := ns.Read(node); s.State != ns.StateDone || s.DesiredChanged() || s.StagedImage != "" {
			t.Fatalf("Read = %+v", s)
		}
		c := ns.Condition(node)
		if c == nil || c.Status != corev1.ConditionTrue || c.Reason != ns.ReasonUpToDate || !c.LastTransitionTime.Time.Equal(r.clock.Now()) {
			t.Fatalf("condition = %+v", c)
		}
		if node.Labels[ns.LabelState] != "Done" || node.Labels[ns.LabelPhase] != "" || node.Labels[ns.LabelReason] != "" {
			t.Fatalf("labels after Done = %v, want state=Done and no phase or reason", node.Labels)
		}
		var reasons []string
		for _, e := range r.events(t) {
			reasons = append(reasons, e.Type+"/"+e.Reason)
		}
		wantEvents := []string{"Normal/Resolving", "Normal/Staged", "Normal/Rebooting", "Normal/UpToDate"}
		if !sameSet(reasons, wantEvents) {
			t.Fatalf("events = %v, want %v", reasons, wantEvents)
		}
	})
	t.Run("the_condition_survives_another_writers_condition_updates", func(t *testing.T) {
		r := newRealNode(t)
		if err := r.w.SetDegraded(ctx, reason.SignatureRejected, "unsigned image"); err != nil {
			t.Fatal(err)
		}
		// The labels mirror the state, so a label selector finds degraded nodes by reason.
		sel := ns.LabelState + "=Degraded," + ns.LabelReason + "=SignatureRejected"
		l, err := r.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range l.Items {
			found = found || n.Name == r.name
		}
		if !found {
			t.Fatalf("nodes with %s: %d, none is %s", sel, len(l.Items), r.name)
		}
		// The kubelet heartbeats Ready with a strategic merge patch of nodes/status.
		hb := metav1.NewTime(time.Now().Add(time.Second).Truncate(time.Second))
		patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: hb, LastTransitionTime: hb}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.client.CoreV1().Nodes().Patch(ctx, r.name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
		if c := ns.Condition(r.get(t)); c == nil || c.Reason != "SignatureRejected" {
			t.Fatalf("our condition after the kubelet's patch: %+v", c)
		}
		if err := r.w.SetWorking(ctx, ns.PhaseResolving, "retrying"); err != nil {
			t.Fatal(err)
		}
		conds := r.get(t).Status.Conditions
		var ready *corev1.NodeCondition
		for i := range conds {
			if conds[i].Type == corev1.NodeReady {
				ready = &conds[i]
			}
		}
		if len(conds) != 2 || ready == nil || ready.Status != corev1.ConditionTrue || !ready.LastHeartbeatTime.Equal(&hb) {
			t.Fatalf("conditions after our write: %+v", conds)
		}
		if c := ns.Condition(r.get(t)); c.Status != corev1.ConditionFalse || c.Reason != "Resolving" || c.Message != "retrying" {
			t.Fatalf("our condition: %+v", c)
		}
	})
	t.Run("a_long_message_is_truncated_and_accepted_everywhere", func(t *testing.T) {
		r := newRealNode(t)
		long := strings.Repeat("Pod blocks eviction: ünsafe… ", 100)
		if err := r.w.SetDegraded(ctx, reason.DrainTimeout, long); err != nil {
			t.Fatal(err)
		}
		node := r.get(t)
		msg := node.Annotations[ns.AnnotationMessage]
		if len(msg) > ns.MaxMessageBytes || len(msg) < ns.MaxMessageBytes-4 || ns.Condition(node).Message != msg {
			t.Fatalf("message of %d bytes, condition %d bytes", len(msg), len(ns.Condition(node).Message))
		}
		evs := r.events(t)
		if len(evs) != 1 || evs[0].Message != msg || evs[0].Type != corev1.EventTypeWarning || evs[0].Reason != "DrainTimeout" {
			t.Fatalf("events = %+v", evs)
		}
	})
	t.Run("identical_events_within_the_window_are_sent_once", func(t *testing.T) {
		r := newRealNode(t, ns.WithEventDedupWindow(time.Minute))
		for i := 0; i < 3; i++ {
			if err := r.w.SetWorking(ctx, ns.PhaseWaitingForSlot, "Waiting for a reboot slot held by n2"); err != nil {
				t.Fatal(err)
			}
			if err := r.w.Warn(ctx, reason.EtcConflict, "/etc/ssh/sshd_config shadows the image default"); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(r.events(t)); n != 2 {
			t.Fatalf("%d events, want 2", n)
		}
		r.clock.Step(time.Minute)
		if err := r.w.Warn(ctx, reason.EtcConflict, "/etc/ssh/sshd_config shadows the image default"); err != nil {
			t.Fatal(err)
		}
		if n := len(r.events(t)); n != 3 {
			t.Fatalf("%d events after the window, want 3", n)
		}
	})
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}
