package drain_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"layerd.dev/layerd/pkg/drain"
)

func node(unschedulable bool) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}, Spec: corev1.NodeSpec{Unschedulable: unschedulable}}
}

func unschedulable(t *testing.T, w *fakeWorld) bool {
	t.Helper()
	n, err := w.CoreV1().Nodes().Get(t.Context(), testNode, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Spec.Unschedulable
}

func patches(w *fakeWorld) int {
	n := 0
	for _, a := range w.Actions() {
		if a.GetVerb() == "patch" && a.GetResource().Resource == "nodes" {
			n++
		}
	}
	return n
}

func TestCordonWithFakeClient(t *testing.T) {
	t.Run("cordons_a_schedulable_node_and_claims_the_cordon", func(t *testing.T) {
		w := newFakeWorld(node(false))
		ours, err := newDrainer(t, w, testNode, drain.Options{}).Cordon(t.Context())
		if err != nil || !ours {
			t.Fatalf("Cordon = %v, %v; want true", ours, err)
		}
		if !unschedulable(t, w) {
			t.Fatal("node is still schedulable")
		}
	})

	t.Run("keeps_a_cordon_it_did_not_make_and_says_so", func(t *testing.T) {
		w := newFakeWorld(node(true))
		ours, err := newDrainer(t, w, testNode, drain.Options{}).Cordon(t.Context())
		if err != nil || ours {
			t.Fatalf("Cordon = %v, %v; want false", ours, err)
		}
		if n := patches(w); n != 0 {
			t.Fatalf("%d patches to a node cordoned by someone else", n)
		}
	})

	t.Run("does_not_claim_a_cordon_made_between_its_read_and_its_write", func(t *testing.T) {
		w := newFakeWorld(node(false))
		var calls atomic.Int32
		w.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			if calls.Add(1) > 1 {
				return false, nil, nil
			}
			// Someone else cordons first; our patch's resourceVersion no longer matches.
			gvr := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
			if err := w.Tracker().Update(gvr, node(true), ""); err != nil {
				return true, nil, err
			}
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, testNode, errors.New("the object has been modified"))
		})
		ours, err := newDrainer(t, w, testNode, drain.Options{}).Cordon(t.Context())
		if err != nil || ours {
			t.Fatalf("Cordon = %v, %v; want false (someone else's cordon)", ours, err)
		}
	})

	t.Run("sends_the_resource_version_it_read_as_a_precondition", func(t *testing.T) {
		w := newFakeWorld(node(false))
		if _, err := newDrainer(t, w, testNode, drain.Options{}).Cordon(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, a := range w.Actions() {
			if p, ok := a.(k8stesting.PatchAction); ok && !strings.Contains(string(p.GetPatch()), `"resourceVersion"`) {
				t.Fatalf("patch %s has no resourceVersion", p.GetPatch())
			}
		}
	})

	t.Run("uncordon_lifts_the_cordon_and_is_a_no_op_on_a_schedulable_node", func(t *testing.T) {
		w := newFakeWorld(node(true))
		d := newDrainer(t, w, testNode, drain.Options{})
		if err := d.Uncordon(t.Context()); err != nil {
			t.Fatal(err)
		}
		if unschedulable(t, w) {
			t.Fatal("node is still unschedulable")
		}
		before := patches(w)
		if err := d.Uncordon(t.Context()); err != nil {
			t.Fatal(err)
		}
		if patches(w) != before {
			t.Fatal("uncordoning a schedulable node wrote to it")
		}
	})

	t.Run("a_missing_node_is_an_error_naming_it", func(t *testing.T) {
		w := newFakeWorld()
		_, err := newDrainer(t, w, testNode, drain.Options{}).Cordon(t.Context())
		if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), testNode) {
			t.Fatalf("Cordon = %v, want a wrapped NotFound naming the node", err)
		}
	})
}

func TestNew(t *testing.T) {
	w := newFakeWorld()
	cases := []struct {
		name string
		run  func() error
	}{
		{"rejects_a_nil_client", func() error { _, err := drain.New(nil, testNode, drain.Options{}, zap.NewNop()); return err }},
		{"rejects_a_nil_logger", func() error { _, err := drain.New(w, testNode, drain.Options{}, nil); return err }},
		{"rejects_an_empty_node_name", func() error { _, err := drain.New(w, "", drain.Options{}, zap.NewNop()); return err }},
		{"rejects_a_negative_timeout", func() error {
			_, err := drain.New(w, testNode, drain.Options{Timeout: -1}, zap.NewNop())
			return err
		}},
		{"rejects_an_invalid_pod_selector", func() error {
			_, err := drain.New(w, testNode, drain.Options{PodSelector: "app in (("}, zap.NewNop())
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.run(); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}
