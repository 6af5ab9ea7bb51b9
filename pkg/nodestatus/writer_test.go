package nodestatus_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	ns "layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

var t0 = time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)

type world struct {
	cs    *fake.Clientset
	clock *clocktesting.FakeClock
	w     *ns.Writer
}

func newWorld(t *testing.T, opts ...ns.Option) *world {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-n1"},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}}}
	cs := fake.NewClientset(node)
	clk := clocktesting.NewFakeClock(t0)
	w, err := ns.New(cs, "n1", clk, zaptest.NewLogger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &world{cs: cs, clock: clk, w: w}
}

func (wd *world) node(t *testing.T) *corev1.Node {
	t.Helper()
	n, err := wd.cs.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writes returns the mutating actions since the last call, as "verb resource[/sub]" with the
// patch bodies decoded.
type write struct {
	what  string
	ptype types.PatchType
	body  map[string]any
	event *corev1.Event
}

func (wd *world) writes(t *testing.T) []write {
	t.Helper()
	var out []write
	for _, a := range wd.cs.Actions() {
		switch a := a.(type) {
		case k8stesting.PatchAction:
			var body map[string]any
			if err := json.Unmarshal(a.GetPatch(), &body); err != nil {
				t.Fatal(err)
			}
			what := "patch " + a.GetResource().Resource
			if a.GetSubresource() != "" {
				what += "/" + a.GetSubresource()
			}
			out = append(out, write{what: what, ptype: a.GetPatchType(), body: body})
		case k8stesting.CreateAction:
			ev, _ := a.GetObject().(*corev1.Event)
			out = append(out, write{what: "create " + a.GetResource().Resource, event: ev})
		case k8stesting.UpdateAction, k8stesting.DeleteAction:
			out = append(out, write{what: a.GetVerb() + " " + a.GetResource().Resource})
		}
	}
	wd.cs.ClearActions()
	return out
}

func whats(ws []write) []string {
	var s []string
	for _, w := range ws {
		s = append(s, w.what)
	}
	return s
}

func annotationsOf(t *testing.T, w write) map[string]any {
	t.Helper()
	if w.ptype != types.MergePatchType {
		t.Fatalf("annotation patch type %s, want merge", w.ptype)
	}
	md, _ := w.body["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	_, hasLabels := md["labels"]
	extra := 0
	if hasLabels {
		extra = 1
	}
	if len(w.body) != 1 || len(md) != 1+extra || a == nil {
		t.Fatalf("patch touches more than annotations and labels: %v", w.body)
	}
	return a
}

// labelsOf returns the labels a merge patch sets (nil when it sets none).
func labelsOf(t *testing.T, w write) map[string]any {
	t.Helper()
	md, _ := w.body["metadata"].(map[string]any)
	l, _ := md["labels"].(map[string]any)
	return l
}

func TestNew(t *testing.T) {
	t.Run("rejects_nil_dependencies", func(t *testing.T) {
		cs, clk, log := fake.NewClientset(), clocktesting.NewFakeClock(t0), zap.NewNop()
		for name, f := range map[string]func() (*ns.Writer, error){
			"client": func() (*ns.Writer, error) { return ns.New(nil, "n1", clk, log) },
			"node":   func() (*ns.Writer, error) { return ns.New(cs, "", clk, log) },
			"clock":  func() (*ns.Writer, error) { return ns.New(cs, "n1", nil, log) },
			"logger": func() (*ns.Writer, error) { return ns.New(cs, "n1", clk, nil) },
			"events": func() (*ns.Writer, error) { return ns.New(cs, "n1", clk, log, ns.WithEventNamespace("")) },
		} {
			if w, err := f(); err == nil || w != nil {
				t.Errorf("%s: New succeeded", name)
			}
		}
	})
}

func TestSetters(t *testing.T) {
	ctx := context.Background()
	stamp := t0.Format(time.RFC3339)

	t.Run("set_working_writes_its_keys_the_condition_and_an_event", func(t *testing.T) {
		wd := newWorld(t)
		if err := wd.w.SetWorking(ctx, ns.PhaseStaging, "Staging reg/os@sha256:a"); err != nil {
			t.Fatal(err)
		}
		ws := wd.writes(t)
		if got := whats(ws); !reflect.DeepEqual(got, []string{"patch nodes", "patch nodes/status", "create events"}) {
			t.Fatalf("writes = %v", got)
		}
		want := map[string]any{ns.AnnotationState: "Working", ns.AnnotationPhase: "Staging", ns.AnnotationReason: nil,
			ns.AnnotationMessage: "Staging reg/os@sha256:a", ns.AnnotationLastTransition: stamp}
		if got := annotationsOf(t, ws[0]); !reflect.DeepEqual(got, want) {
			t.Fatalf("annotations patch = %v, want %v", got, want)
		}
		wantLabels := map[string]any{ns.LabelState: "Working", ns.LabelPhase: "Staging", ns.LabelReason: nil}
		if got := labelsOf(t, ws[0]); !reflect.DeepEqual(got, wantLabels) {
			t.Fatalf("labels in the same patch = %v, want %v", got, wantLabels)
		}
		if ws[1].ptype != types.StrategicMergePatchType {
			t.Fatalf("condition patch type %s", ws[1].ptype)
		}
		ev := ws[2].event
		if ev.Namespace != "default" || ev.Type != corev1.EventTypeNormal || ev.Reason != "Staging" ||
			ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "n1" || ev.InvolvedObject.UID != "uid-n1" {
			t.Fatalf("event = %+v", ev)
		}
		c := ns.Condition(wd.node(t))
		if c == nil || c.Status != corev1.ConditionFalse || c.Reason != "Staging" || c.Message != "Staging reg/os@sha256:a" || !c.LastTransitionTime.Time.Equal(t0) {
			t.Fatalf("condition = %+v", c)
		}
		conds := wd.node(t).Status.Conditions
		if len(conds) != 2 || conds[0].Type == conds[1].Type {
			t.Fatalf("conditions = %+v", conds)
		}
		for _, c := range conds {
			if c.Type == corev1.NodeReady && (c.Status != corev1.ConditionTrue || c.Reason != "KubeletReady") {
				t.Fatalf("Ready condition clobbered: %+v", conds)
			}
		}
	})

	t.Run("a_new_message_in_the_same_phase_keeps_the_transition_time", func(t *testing.T) {
		wd := newWorld(t)
		if err := wd.w.SetWorking(ctx, ns.PhaseWaitingForSlot, "slot held by n2"); err != nil {
			t.Fatal(err)
		}
		wd.writes(t)
		wd.clock.Step(time.Minute)
		if err := wd.w.SetWorking(ctx, ns.PhaseWaitingForSlot, "slot held by n3"); err != nil {
			t.Fatal(err)
		}
		ws := wd.writes(t)
		if _, ok := annotationsOf(t, ws[0])[ns.AnnotationLastTransition]; ok {
			t.Fatal("last-transition rewritten without a state or phase change")
		}
		c := ns.Condition(wd.node(t))
		if c.Message != "slot held by n3" || !c.LastTransitionTime.Time.Equal(t0) || !c.LastHeartbeatTime.Time.Equal(t0.Add(time.Minute)) {
			t.Fatalf("condition = %+v", c)
		}
	})

	t.Run("an_unchanged_condition_is_not_rewritten", func(t *testing.T) {
		wd := newWorld(t)
		for i := 0; i < 2; i++ {
			if err := wd.w.SetWorking(ctx, ns.PhaseDraining, "draining"); err != nil {
				t.Fatal(err)
			}
		}
		if got := whats(wd.writes(t)); !reflect.DeepEqual(got, []string{"patch nodes", "patch nodes/status", "create events", "patch nodes"}) {
			t.Fatalf("writes = %v", got)
		}
	})

	t.Run("set_staged_records_the_staged_image", func(t *testing.T) {
		wd := newWorld(t)
		if err := wd.w.SetStaged(ctx, "reg/os@sha256:a", "staged"); err != nil {
			t.Fatal(err)
		}
		a := annotationsOf(t, wd.writes(t)[0])
		if a[ns.AnnotationPhase] != "Staged" || a[ns.AnnotationStagedImage] != "reg/os@sha256:a" {
			t.Fatalf("annotations = %v", a)
		}
		if err := wd.w.SetWorking(ctx, ns.PhaseStaged, "x"); err == nil {
			t.Fatal("SetWorking(Staged) accepted")
		}
		if err := wd.w.SetWorking(ctx, ns.Phase("Napping"), "x"); err == nil {
			t.Fatal("unknown phase accepted")
		}
	})

	t.Run("set_done_clears_the_update_and_sets_the_condition_true", func(t *testing.T) {
		wd := newWorld(t)
		if err := wd.w.SetDone(ctx, "reg/os@sha256:a"); err != nil {
			t.Fatal(err)
		}
		ws := wd.writes(t)
		want := map[string]any{ns.AnnotationState: "Done", ns.AnnotationPhase: nil, ns.AnnotationReason: nil,
			ns.AnnotationMessage: "Running reg/os@sha256:a", ns.AnnotationLastTransition: stamp,
			ns.AnnotationCurrentImage: "reg/os@sha256:a", ns.AnnotationStagedImage: nil, ns.AnnotationRebootBootID: nil}
		if got := annotationsOf(t, ws[0]); !reflect.DeepEqual(got, want) {
			t.Fatalf("annotations = %v, want %v", got, want)
		}
		if c := ns.Condition(wd.node(t)); c.Status != corev1.ConditionTrue || c.Reason != ns.ReasonUpToDate {
			t.Fatalf("condition = %+v", c)
		}
		if ev := ws[2].event; ev.Reason != ns.ReasonUpToDate || ev.Type != corev1.EventTypeNormal {
			t.Fatalf("event = %+v", ev)
		}
	})

	t.Run("set_done_on_an_ostree_ref_names_it_and_deletes_current_image", func(t *testing.T) {
		wd := newWorld(t)
		if err := wd.w.SetDoneOnRef(ctx, "fedora:fedora/x86_64/coreos/stable (commit 0123456789ab)"); err != nil {
			t.Fatal(err)
		}
		ws := wd.writes(t)
		want := map[string]any{ns.AnnotationState: "Done", ns.AnnotationPhase: nil, ns.AnnotationReason: nil,
			ns.AnnotationMessage:        "Booted from the ostree ref fedora:fedora/x86_64/coreos/stable (commit 0123456789ab), not from a container image",
			ns.AnnotationLastTransition: stamp, ns.AnnotationCurrentImage: nil, ns.AnnotationStagedImage: nil, ns.AnnotationRebootBootID: nil}
		if got := annotationsOf(t, ws[0]); !reflect.DeepEqual(got, want) {
			t.Fatalf("annotations = %v, want %v", got, want)
		}
		if c := ns.Condition(wd.node(t)); c.Status != corev1.ConditionTrue || c.Reason != ns.ReasonUpToDate {
			t.Fatalf("condition = %+v", c)
		}
	})

	t.Run("set_degraded_writes_the_code_everywhere", func(t *testing.T) {
		wd := newWorld(t)
		if err := wd.w.SetDegraded(ctx, reason.SignatureRejected, "unsigned"); err != nil {
			t.Fatal(err)
		}
		ws := wd.writes(t)
		a := annotationsOf(t, ws[0])
		if a[ns.AnnotationState] != "Degraded" || a[ns.AnnotationReason] != "SignatureRejected" || a[ns.AnnotationPhase] != nil {
			t.Fatalf("annotations = %v", a)
		}
		if c := ns.Condition(wd.node(t)); c.Status != corev1.ConditionFalse || c.Reason != "SignatureRejected" || c.Message != "unsigned" {
			t.Fatalf("condition = %+v", c)
		}
		if ev := ws[2].event; ev.Reason != "SignatureRejected" || ev.Type != corev1.EventTypeWarning || ev.Message != "unsigned" {
			t.Fatalf("event = %+v", ev)
		}
		if err := wd.w.SetDegraded(ctx, "", "x"); err == nil {
			t.Fatal("empty code accepted")
		}
	})

	t.Run("each_plain_setter_patches_exactly_its_keys", func(t *testing.T) {
		wd := newWorld(t)
		for _, c := range []struct {
			name string
			call func() error
			want map[string]any
		}{
			{"cordon", func() error { return wd.w.SetCordonedBy(ctx) }, map[string]any{ns.AnnotationCordonedBy: "layerd"}},
			{"uncordon", func() error { return wd.w.ClearCordonedBy(ctx) }, map[string]any{ns.AnnotationCordonedBy: nil}},
			{"boot id", func() error { return wd.w.RecordRebootBootID(ctx, "b1") }, map[string]any{ns.AnnotationRebootBootID: "b1"}},
			{"unstage", func() error { return wd.w.ClearStaged(ctx) }, map[string]any{ns.AnnotationStagedImage: nil}},
			{"retry", func() error { return wd.w.AckRetry(ctx, "7") }, map[string]any{ns.AnnotationObservedRetry: "7"}},
			{"digest", func() error {
				return wd.w.SetDesiredDigest(ctx, ns.Resolved{Image: "reg/os:v2", Digest: "sha256:m"})
			}, map[string]any{ns.AnnotationDesiredDigest: "sha256:m", ns.AnnotationDesiredIndexDigest: nil, ns.AnnotationResolvedImage: "reg/os:v2"}},
			{"index digest", func() error {
				return wd.w.SetDesiredDigest(ctx, ns.Resolved{Image: "reg/os:v2", Digest: "sha256:m", IndexDigest: "sha256:i"})
			}, map[string]any{ns.AnnotationDesiredDigest: "sha256:m", ns.AnnotationDesiredIndexDigest: "sha256:i", ns.AnnotationResolvedImage: "reg/os:v2"}},
			{"clear digest", func() error { return wd.w.ClearDesiredDigest(ctx) },
				map[string]any{ns.AnnotationDesiredDigest: nil, ns.AnnotationDesiredIndexDigest: nil, ns.AnnotationResolvedImage: nil}},
		} {
			if err := c.call(); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			ws := wd.writes(t)
			if len(ws) != 1 {
				t.Fatalf("%s: writes = %v", c.name, whats(ws))
			}
			if got := annotationsOf(t, ws[0]); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("%s: patch = %v, want %v", c.name, got, c.want)
			}
		}
		if s := ns.Read(wd.node(t)); s.ObservedRetry != "7" || s.RebootBootID != "b1" || s.CordonedBy != "" || s.DesiredDigest != "" {
			t.Fatalf("status = %+v", s)
		}
	})

	t.Run("a_long_message_is_truncated_everywhere", func(t *testing.T) {
		wd := newWorld(t)
		long := strings.Repeat("ü", 1000)
		if err := wd.w.SetDegraded(ctx, reason.DrainTimeout, long); err != nil {
			t.Fatal(err)
		}
		ws := wd.writes(t)
		msg, _ := annotationsOf(t, ws[0])[ns.AnnotationMessage].(string)
		if len(msg) > ns.MaxMessageBytes || !strings.HasPrefix(long, strings.TrimSuffix(msg, "…")) {
			t.Fatalf("message %d bytes", len(msg))
		}
		if c := ns.Condition(wd.node(t)); c.Message != msg || ws[2].event.Message != msg {
			t.Fatal("condition or event message differs from the annotation")
		}
	})
}

func TestEvents(t *testing.T) {
	ctx := context.Background()
	countEvents := func(t *testing.T, wd *world) int {
		l, err := wd.cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	t.Run("the_same_event_within_the_window_is_sent_once", func(t *testing.T) {
		wd := newWorld(t, ns.WithEventDedupWindow(5*time.Minute))
		for i := 0; i < 3; i++ {
			if err := wd.w.Warn(ctx, reason.EtcConflict, "/etc/foo shadows the image"); err != nil {
				t.Fatal(err)
			}
		}
		if err := wd.w.Warn(ctx, reason.EtcConflict, "/etc/bar shadows the image"); err != nil {
			t.Fatal(err)
		}
		if n := countEvents(t, wd); n != 2 {
			t.Fatalf("%d events, want 2", n)
		}
		wd.clock.Step(5 * time.Minute)
		if err := wd.w.Warn(ctx, reason.EtcConflict, "/etc/foo shadows the image"); err != nil {
			t.Fatal(err)
		}
		if n := countEvents(t, wd); n != 3 {
			t.Fatalf("%d events after the window, want 3", n)
		}
	})
	t.Run("a_failed_event_does_not_fail_the_transition_and_is_retried_next_time", func(t *testing.T) {
		wd := newWorld(t)
		fail := true
		wd.cs.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
			if fail {
				return true, nil, errors.New("apiserver said no")
			}
			return false, nil, nil
		})
		if err := wd.w.SetWorking(ctx, ns.PhaseResolving, "resolving"); err != nil {
			t.Fatalf("transition failed on an event error: %v", err)
		}
		if err := wd.w.Warn(ctx, reason.EtcConflict, "x"); err == nil || !strings.Contains(err.Error(), "apiserver said no") {
			t.Fatalf("Warn error = %v", err)
		}
		fail = false
		if err := wd.w.SetWorking(ctx, ns.PhaseResolving, "resolving"); err != nil {
			t.Fatal(err)
		}
		if n := countEvents(t, wd); n != 1 {
			t.Fatalf("%d events, want 1 (a failed event is not remembered as sent)", n)
		}
	})
}

func TestFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("a_failed_annotation_patch_writes_nothing_else", func(t *testing.T) {
		wd := newWorld(t)
		wd.cs.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() == "" {
				return true, nil, errors.New("etcd is sad")
			}
			return false, nil, nil
		})
		err := wd.w.SetDegraded(ctx, reason.PullFailed, "x")
		if err == nil || !strings.Contains(err.Error(), "setting Degraded") || !strings.Contains(err.Error(), "etcd is sad") {
			t.Fatalf("error = %v", err)
		}
		if got := whats(wd.writes(t)); !reflect.DeepEqual(got, []string{"patch nodes"}) {
			t.Fatalf("writes = %v", got)
		}
	})
	t.Run("a_failed_condition_patch_is_returned_and_a_retry_converges", func(t *testing.T) {
		wd := newWorld(t)
		calls := 0
		wd.cs.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() == "status" {
				calls++
				if calls == 1 {
					return true, nil, errors.New("timeout")
				}
			}
			return false, nil, nil
		})
		if err := wd.w.SetDone(ctx, "reg/os@sha256:a"); err == nil || !strings.Contains(err.Error(), "OSImageUpToDate") {
			t.Fatalf("error = %v", err)
		}
		if err := wd.w.SetDone(ctx, "reg/os@sha256:a"); err != nil {
			t.Fatal(err)
		}
		if c := ns.Condition(wd.node(t)); c == nil || c.Status != corev1.ConditionTrue {
			t.Fatalf("condition = %+v", c)
		}
	})
	t.Run("a_missing_node_is_an_error_with_context", func(t *testing.T) {
		w, err := ns.New(fake.NewClientset(), "ghost", clocktesting.NewFakeClock(t0), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if err := w.SetWorking(ctx, ns.PhaseResolving, ""); err == nil || !strings.Contains(err.Error(), "ghost") {
			t.Fatalf("error = %v", err)
		}
	})
}
