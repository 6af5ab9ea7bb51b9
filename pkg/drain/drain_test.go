package drain_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/reason"
)

// mixedNode is a node with two ReplicaSet pods (one with emptyDir data) and a DaemonSet pod,
// with their owners. (The fake clientset ignores field selectors: every pod is on testNode.)
func mixedNode() (objs []runtime.Object, rs runtime.Object) {
	web := map[string]string{"app": "web"}
	r := replicaSet("default", "web", web)
	r.UID = "rs-web"
	ds := daemonSet("default", "logs", map[string]string{"app": "logs"})
	ds.UID = "ds-logs"
	return []runtime.Object{
		r, ds,
		pod("default", "web-1", testNode, web, r, "ReplicaSet"),
		withEmptyDir(pod("default", "web-2", testNode, web, r, "ReplicaSet")),
		pod("default", "logs-x", testNode, map[string]string{"app": "logs"}, ds, "DaemonSet"),
	}, r
}

func TestDrainWithFakeClient(t *testing.T) {
	t.Run("evicts_replicated_and_emptydir_pods_and_leaves_daemonset_pods", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		if err := newDrainer(t, w, testNode, drain.Options{}).Drain(t.Context()); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		got := w.evicted()
		if want := []string{"default/web-1", "default/web-2"}; !sameSet(got, want) {
			t.Fatalf("evicted %v, want %v", got, want)
		}
		if _, err := w.CoreV1().Pods("default").Get(t.Context(), "logs-x", metav1.GetOptions{}); err != nil {
			t.Fatalf("DaemonSet pod: %v", err)
		}
		if d := w.deletes(); len(d) != 0 {
			t.Fatalf("pods deleted directly: %v", d)
		}
	})

	t.Run("gives_each_pod_its_own_grace_period_by_default", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		if err := newDrainer(t, w, testNode, drain.Options{}).Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, e := range w.evictionsOf() {
			if e.DeleteOptions == nil || e.DeleteOptions.GracePeriodSeconds != nil {
				t.Fatalf("eviction of %s overrides the grace period: %+v", e.Name, e.DeleteOptions)
			}
		}
	})

	t.Run("passes_a_configured_grace_period", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		opts := drain.Options{GracePeriodSeconds: ptr.To[int64](7)}
		if err := newDrainer(t, w, testNode, opts).Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, e := range w.evictionsOf() {
			if g := e.DeleteOptions.GracePeriodSeconds; g == nil || *g != 7 {
				t.Fatalf("eviction of %s: grace period %v, want 7", e.Name, g)
			}
		}
	})

	t.Run("evicts_only_pods_matching_the_pod_selector", func(t *testing.T) {
		objs, r := mixedNode()
		other := pod("default", "batch-1", testNode, map[string]string{"app": "batch"}, r.(metav1.Object), "ReplicaSet")
		w := newFakeWorld(append(objs, other)...)
		if err := newDrainer(t, w, testNode, drain.Options{PodSelector: "app=batch"}).Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := w.evicted(); !reflect.DeepEqual(got, []string{"default/batch-1"}) {
			t.Fatalf("evicted %v, want only default/batch-1", got)
		}
	})

	t.Run("refuses_unmanaged_pods_without_force_and_evicts_nothing", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(append(objs, pod("default", "solo", testNode, nil, nil, ""))...)
		err := newDrainer(t, w, testNode, drain.Options{}).Drain(t.Context())
		var re *drain.RefusedError
		if !errors.As(err, &re) {
			t.Fatalf("Drain = %v, want *RefusedError", err)
		}
		if want := []drain.PodRef{{Namespace: "default", Name: "solo"}}; !reflect.DeepEqual(re.Unmanaged, want) {
			t.Fatalf("Unmanaged = %v, want %v", re.Unmanaged, want)
		}
		if len(re.LocalStorage)+len(re.DaemonSet) != 0 {
			t.Fatalf("unexpected refusals: %+v", re)
		}
		if ev := w.evicted(); len(ev) != 0 {
			t.Fatalf("a refused drain evicted %v", ev)
		}
		if re.Reason() != reason.DrainTimeout || !strings.Contains(err.Error(), "default/solo") {
			t.Fatalf("reason %s, message %q", re.Reason(), err)
		}
	})

	t.Run("evicts_unmanaged_pods_with_force", func(t *testing.T) {
		w := newFakeWorld(pod("default", "solo", testNode, nil, nil, ""))
		if err := newDrainer(t, w, testNode, drain.Options{Force: true}).Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := w.evicted(); !reflect.DeepEqual(got, []string{"default/solo"}) {
			t.Fatalf("evicted %v", got)
		}
		if d := w.deletes(); len(d) != 0 {
			t.Fatalf("force deleted pods directly: %v", d)
		}
	})

	t.Run("refuses_emptydir_pods_when_their_data_must_be_kept", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		err := newDrainer(t, w, testNode, drain.Options{DeleteEmptyDirData: ptr.To(false)}).Drain(t.Context())
		var re *drain.RefusedError
		if !errors.As(err, &re) || !reflect.DeepEqual(re.LocalStorage, []drain.PodRef{{Namespace: "default", Name: "web-2"}}) {
			t.Fatalf("Drain = %v (%+v), want a refusal naming default/web-2", err, re)
		}
		if ev := w.evicted(); len(ev) != 0 {
			t.Fatalf("a refused drain evicted %v", ev)
		}
	})

	t.Run("refuses_daemonset_pods_when_not_ignoring_them", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		err := newDrainer(t, w, testNode, drain.Options{IgnoreDaemonSets: ptr.To(false)}).Drain(t.Context())
		var re *drain.RefusedError
		if !errors.As(err, &re) || !reflect.DeepEqual(re.DaemonSet, []drain.PodRef{{Namespace: "default", Name: "logs-x"}}) {
			t.Fatalf("Drain = %v (%+v), want a refusal naming default/logs-x", err, re)
		}
	})

	t.Run("times_out_naming_the_blocked_pods_and_the_pdbs_that_select_them", func(t *testing.T) {
		objs, _ := mixedNode()
		objs = append(objs,
			pdb("default", "web-pdb", 2, map[string]string{"app": "web"}),
			pdb("default", "logs-pdb", 1, map[string]string{"app": "logs"}),
			pdb("other", "web-pdb", 1, map[string]string{"app": "web"}))
		w := newFakeWorld(objs...)
		w.refuseWith(func(e *policyv1.Eviction) error {
			if e.Name == "web-2" {
				return pdbRefusal()
			}
			return nil
		})
		opts := drain.Options{Timeout: 1500 * time.Millisecond, EvictionRetryInterval: 100 * time.Millisecond}
		began := time.Now()
		err := newDrainer(t, w, testNode, opts).Drain(t.Context())
		took := time.Since(began)
		var te *drain.TimeoutError
		if !errors.As(err, &te) {
			t.Fatalf("Drain = %v, want *TimeoutError", err)
		}
		if want := []drain.PodRef{{Namespace: "default", Name: "web-2"}}; !reflect.DeepEqual(te.Pods, want) {
			t.Fatalf("Pods = %v, want %v", te.Pods, want)
		}
		if want := []string{"default/web-pdb"}; !reflect.DeepEqual(te.PDBs, want) {
			t.Fatalf("PDBs = %v, want %v", te.PDBs, want)
		}
		if want := "drain timed out after 2s: pod default/web-2 still running (PDB default/web-pdb)"; err.Error() != want {
			t.Fatalf("message %q, want %q", err, want)
		}
		if took > 5*time.Second {
			t.Fatalf("a 1.5s drain took %v", took)
		}
		if n := countOf(w.evicted(), "default/web-2"); n < 3 {
			t.Fatalf("the refused eviction was tried %d times, want retries", n)
		}
	})

	t.Run("treats_the_callers_deadline_as_a_timeout", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		w.refuseWith(func(*policyv1.Eviction) error { return pdbRefusal() })
		ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
		defer cancel()
		err := newDrainer(t, w, testNode, drain.Options{EvictionRetryInterval: 50 * time.Millisecond}).Drain(ctx)
		var te *drain.TimeoutError
		if !errors.As(err, &te) || len(te.Pods) != 2 {
			t.Fatalf("Drain = %v, want *TimeoutError naming 2 pods", err)
		}
		if te.After < 600*time.Millisecond || te.After > 3*time.Second {
			t.Fatalf("After = %v, want about the caller's 700ms", te.After)
		}
	})

	t.Run("a_cancelled_context_is_not_a_timeout", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		w.refuseWith(func(*policyv1.Eviction) error { return pdbRefusal() })
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(300*time.Millisecond, cancel)
		err := newDrainer(t, w, testNode, drain.Options{EvictionRetryInterval: 50 * time.Millisecond}).Drain(ctx)
		var te *drain.TimeoutError
		if errors.As(err, &te) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Drain = %v, want context.Canceled", err)
		}
	})

	t.Run("reports_unmanaged_pods_that_arrive_during_the_drain", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		w.refuseWith(func(e *policyv1.Eviction) error {
			// Reactors run under the fake's lock: write through the tracker.
			_ = w.Tracker().Create(podsGVR, pod("default", "late", testNode, nil, nil, ""), "default")
			return pdbRefusal()
		})
		opts := drain.Options{Timeout: 500 * time.Millisecond, EvictionRetryInterval: 50 * time.Millisecond}
		err := newDrainer(t, w, testNode, opts).Drain(t.Context())
		var te *drain.TimeoutError
		if !errors.As(err, &te) || !reflect.DeepEqual(te.Unmanaged, []drain.PodRef{{Namespace: "default", Name: "late"}}) {
			t.Fatalf("Drain = %v (%+v), want default/late reported as unmanaged", err, te)
		}
	})

	t.Run("other_eviction_errors_are_returned_wrapped", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		w.refuseWith(func(*policyv1.Eviction) error { return errors.New("boom") })
		err := newDrainer(t, w, testNode, drain.Options{}).Drain(t.Context())
		var te *drain.TimeoutError
		if err == nil || errors.As(err, &te) || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), testNode) {
			t.Fatalf("Drain = %v, want a wrapped error naming the node and the cause", err)
		}
	})

	t.Run("never_falls_back_to_delete_without_the_eviction_api", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		w.Resources = []*metav1.APIResourceList{{GroupVersion: "v1", APIResources: []metav1.APIResource{{Name: "pods", Kind: "Pod", Namespaced: true}}}}
		err := newDrainer(t, w, testNode, drain.Options{}).Drain(t.Context())
		if err == nil || !strings.Contains(err.Error(), "eviction") {
			t.Fatalf("Drain = %v, want a refusal to delete", err)
		}
		if d := w.deletes(); len(d) != 0 {
			t.Fatalf("deleted %v", d)
		}
	})

	t.Run("an_empty_node_drains_at_once", func(t *testing.T) {
		w := newFakeWorld()
		if err := newDrainer(t, w, testNode, drain.Options{}).Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}
