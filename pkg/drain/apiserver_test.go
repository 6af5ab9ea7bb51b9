package drain_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/nodestatus"
)

// These tests run against a real kube-apiserver (Eviction API, PDB admission) with the real
// disruption controller and the kubelet stand-in, which marks pods Running/Ready and finishes
// their deletion.
func TestDrainOnTheAPIServer(t *testing.T) {
	t.Run("drains_replicated_and_emptydir_pods_and_leaves_the_daemonset_pod", func(t *testing.T) {
		w := newAPIWorld(t)
		web := map[string]string{"app": "web"}
		rs := w.createReplicaSet(t, "web", web)
		ds := w.createDaemonSet(t, "logs", map[string]string{"app": "logs"})
		web1 := pod(w.ns, "web-1", w.node, web, rs, "ReplicaSet")
		seven := int64(7)
		web1.Spec.TerminationGracePeriodSeconds = &seven
		w.createPods(t,
			web1,
			pod(w.ns, "web-2", w.node, web, rs, "ReplicaSet"),
			withEmptyDir(pod(w.ns, "cache-1", w.node, web, rs, "ReplicaSet")),
			pod(w.ns, "logs-1", w.node, map[string]string{"app": "logs"}, ds, "DaemonSet"))
		graces := w.watchDeletionGrace(t)

		d := newDrainer(t, w.client, w.node, drain.Options{Timeout: 30 * time.Second})
		ours, err := d.Cordon(testContext(t))
		if err != nil || !ours {
			t.Fatalf("Cordon = %v, %v", ours, err)
		}
		began := time.Now()
		if err := d.Drain(testContext(t)); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		bench("three-pods", time.Since(began))
		if got := w.podNames(t); !reflect.DeepEqual(got, []string{"logs-1"}) {
			t.Fatalf("pods left: %v, want only the DaemonSet pod logs-1", got)
		}
		if !w.unschedulable(t) {
			t.Fatal("node is not cordoned")
		}
		if g := graces.of("web-1"); g != 7 {
			t.Fatalf("web-1 was deleted with grace %ds, want its own 7s", g)
		}
	})

	t.Run("a_pdb_allowing_no_disruption_times_out_naming_the_pods_and_the_pdb", func(t *testing.T) {
		w := newAPIWorld(t)
		web := map[string]string{"app": "web"}
		rs := w.createReplicaSet(t, "web", web)
		w.createPods(t, pod(w.ns, "web-1", w.node, web, rs, "ReplicaSet"), pod(w.ns, "web-2", w.node, web, rs, "ReplicaSet"))
		budget, err := w.client.PolicyV1().PodDisruptionBudgets(w.ns).Create(testContext(t), pdb(w.ns, "web-pdb", 2, web), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.waitFor(t, 60*time.Second, "the disruption controller to count 2 healthy pods", func() (bool, error) {
			p, err := w.client.PolicyV1().PodDisruptionBudgets(w.ns).Get(testContext(t), budget.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			s := p.Status
			return s.ObservedGeneration == p.Generation && s.CurrentHealthy == 2 && s.DesiredHealthy == 2, nil
		})

		d := newDrainer(t, w.client, w.node, drain.Options{Timeout: 4 * time.Second, EvictionRetryInterval: 500 * time.Millisecond})
		if _, err := d.Cordon(testContext(t)); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		err = d.Drain(testContext(t))
		took := time.Since(began)
		bench("pdb-timeout-4s", took)
		var te *drain.TimeoutError
		if !errors.As(err, &te) {
			t.Fatalf("Drain = %v, want *TimeoutError", err)
		}
		wantPods := []drain.PodRef{{Namespace: w.ns, Name: "web-1"}, {Namespace: w.ns, Name: "web-2"}}
		if !reflect.DeepEqual(te.Pods, wantPods) || !reflect.DeepEqual(te.PDBs, []string{w.ref("web-pdb")}) {
			t.Fatalf("Pods %v, PDBs %v; want %v and %s", te.Pods, te.PDBs, wantPods, w.ref("web-pdb"))
		}
		for _, want := range []string{"timed out after 4s", w.ref("web-1"), w.ref("web-2"), "PDB " + w.ref("web-pdb")} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("message %q lacks %q", err, want)
			}
		}
		if took > 4*time.Second+3*time.Second {
			t.Fatalf("a 4s drain took %v", took)
		}
		if got := w.podNames(t); !reflect.DeepEqual(got, []string{"web-1", "web-2"}) {
			t.Fatalf("pods %v, want both still running", got)
		}

		if err := w.client.PolicyV1().PodDisruptionBudgets(w.ns).Delete(testContext(t), budget.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		began = time.Now()
		if err := d.Drain(testContext(t)); err != nil {
			t.Fatalf("Drain after removing the PDB: %v", err)
		}
		bench("after-pdb-removed", time.Since(began))
		if got := w.podNames(t); len(got) != 0 {
			t.Fatalf("pods left: %v", got)
		}
	})

	t.Run("an_unmanaged_pod_blocks_without_force_and_is_reported", func(t *testing.T) {
		w := newAPIWorld(t)
		web := map[string]string{"app": "web"}
		rs := w.createReplicaSet(t, "web", web)
		w.createPods(t, pod(w.ns, "web-1", w.node, web, rs, "ReplicaSet"), pod(w.ns, "solo", w.node, nil, nil, ""))

		err := newDrainer(t, w.client, w.node, drain.Options{Timeout: 10 * time.Second}).Drain(testContext(t))
		var re *drain.RefusedError
		if !errors.As(err, &re) || !reflect.DeepEqual(re.Unmanaged, []drain.PodRef{{Namespace: w.ns, Name: "solo"}}) {
			t.Fatalf("Drain = %v, want *RefusedError naming %s", err, w.ref("solo"))
		}
		if !strings.Contains(err.Error(), w.ref("solo")) {
			t.Fatalf("message %q does not name the pod", err)
		}
		if got := w.podNames(t); !reflect.DeepEqual(got, []string{"solo", "web-1"}) {
			t.Fatalf("pods %v, want both untouched", got)
		}

		if err := newDrainer(t, w.client, w.node, drain.Options{Timeout: 10 * time.Second, Force: true}).Drain(testContext(t)); err != nil {
			t.Fatalf("Drain with Force: %v", err)
		}
		if got := w.podNames(t); len(got) != 0 {
			t.Fatalf("pods left after a forced drain: %v", got)
		}
	})

	t.Run("keeps_a_cordon_it_did_not_make", func(t *testing.T) {
		w := newAPIWorld(t)
		if _, err := w.client.CoreV1().Nodes().Patch(testContext(t), w.node, types.MergePatchType,
			[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		ours, err := newDrainer(t, w.client, w.node, drain.Options{}).Cordon(testContext(t))
		if err != nil || ours {
			t.Fatalf("Cordon = %v, %v; want false", ours, err)
		}
		if !w.unschedulable(t) {
			t.Fatal("the admin's cordon is gone")
		}
	})

	t.Run("uncordon_lifts_its_own_cordon", func(t *testing.T) {
		w := newAPIWorld(t)
		d := newDrainer(t, w.client, w.node, drain.Options{})
		if ours, err := d.Cordon(testContext(t)); err != nil || !ours {
			t.Fatalf("Cordon = %v, %v", ours, err)
		}
		if err := d.Uncordon(testContext(t)); err != nil {
			t.Fatal(err)
		}
		if w.unschedulable(t) {
			t.Fatal("still cordoned")
		}
	})

	t.Run("the_caller_protocol_records_cordoned_by_and_lifts_only_its_own_cordon", func(t *testing.T) {
		w := newAPIWorld(t)
		status, err := nodestatus.New(w.client, w.node, clocktesting.NewFakeClock(time.Now()), zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		d := newDrainer(t, w.client, w.node, drain.Options{})
		ours, err := cordonRecorded(testContext(t), w, status, d)
		if err != nil || !ours {
			t.Fatalf("cordon = %v, %v", ours, err)
		}
		if !w.readStatus(t).CordonedByUs() || !w.unschedulable(t) {
			t.Fatal("cordon or cordoned-by missing")
		}
		// A restart: the node is unschedulable and the annotation says it is ours.
		if ours, err := cordonRecorded(testContext(t), w, status, d); err != nil || !ours {
			t.Fatalf("cordon after restart = %v, %v", ours, err)
		}
		if err := uncordonIfOurs(testContext(t), w, status, d); err != nil {
			t.Fatal(err)
		}
		if w.readStatus(t).CordonedByUs() || w.unschedulable(t) {
			t.Fatal("cordon or cordoned-by left behind")
		}
	})
}

// cordonRecorded is the Cordon contract as the update loop follows it (see Drainer.Cordon).
func cordonRecorded(ctx context.Context, w *apiWorld, status *nodestatus.Writer, d drain.Interface) (bool, error) {
	n, err := w.client.CoreV1().Nodes().Get(ctx, w.node, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	if n.Spec.Unschedulable {
		return nodestatus.Read(n).CordonedByUs(), nil
	}
	if err := status.SetCordonedBy(ctx); err != nil {
		return false, err
	}
	ours, err := d.Cordon(ctx)
	if err == nil && !ours {
		err = status.ClearCordonedBy(ctx)
	}
	return ours, err
}

func uncordonIfOurs(ctx context.Context, w *apiWorld, status *nodestatus.Writer, d drain.Interface) error {
	n, err := w.client.CoreV1().Nodes().Get(ctx, w.node, metav1.GetOptions{})
	if err != nil || !nodestatus.Read(n).CordonedByUs() {
		return err
	}
	if err := d.Uncordon(ctx); err != nil {
		return err
	}
	return status.ClearCordonedBy(ctx)
}

func (w *apiWorld) readStatus(t *testing.T) nodestatus.Status {
	t.Helper()
	n, err := w.client.CoreV1().Nodes().Get(testContext(t), w.node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return nodestatus.Read(n)
}

// graceLog records each pod's deletionGracePeriodSeconds as a watch sees it.
type graceLog struct {
	mu sync.Mutex
	by map[string]int64
}

func (g *graceLog) of(name string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.by[name]
}

func (w *apiWorld) watchDeletionGrace(t *testing.T) *graceLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	watcher, err := w.client.CoreV1().Pods(w.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g := &graceLog{by: map[string]int64{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range watcher.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || p.DeletionGracePeriodSeconds == nil {
				continue
			}
			g.mu.Lock()
			// The stand-in's final delete uses 0; keep the grace the eviction asked for.
			g.by[p.Name] = slices.Max([]int64{g.by[p.Name], *p.DeletionGracePeriodSeconds})
			g.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		watcher.Stop()
		cancel()
		<-done
	})
	return g
}
