package coord_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	coordv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clocktesting "k8s.io/utils/clock/testing"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
)

// apiWorld is one namespace on the real API server and a Slots per agent sharing one fake clock
// (set to real time, so API server timestamps and lease times agree).
type apiWorld struct {
	client kubernetes.Interface
	ns     string
	clock  *clocktesting.FakeClock
}

func newAPIWorld(t *testing.T) *apiWorld {
	t.Helper()
	c := cluster(t)
	return &apiWorld{client: c.Client, ns: newNamespace(t, c.Client), clock: clocktesting.NewFakeClock(time.Now())}
}

func (w *apiWorld) slots(t *testing.T) *coord.Slots {
	t.Helper()
	s, err := coord.New(w.client, w.ns, w.clock, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (w *apiWorld) setConfig(t *testing.T, doc string) {
	t.Helper()
	cm := configMap(doc)
	cm.Namespace = w.ns
	if _, err := w.client.CoreV1().ConfigMaps(w.ns).Create(testContext(t), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// plantLease creates slot 0 of pool held by holder, last renewed at renewed (another agent).
func (w *apiWorld) plantLease(t *testing.T, pool, holder string, renewed time.Time) {
	t.Helper()
	l := heldLease(pool, 0, holder, renewed)
	l.Namespace, l.ResourceVersion = w.ns, ""
	if _, err := w.client.CoordinationV1().Leases(w.ns).Create(testContext(t), l, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (w *apiWorld) lease(t *testing.T, name string) (*coordv1.Lease, error) {
	t.Helper()
	return w.client.CoordinationV1().Leases(w.ns).Get(testContext(t), name, metav1.GetOptions{})
}

// race has every node try Acquire at once and returns the winners and the busy errors.
func race(t *testing.T, w *apiWorld, pool string, nodes []string) (won []coord.Slot, busy []*coord.BusyError) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, n := range nodes {
		s := w.slots(t)
		wg.Go(func() {
			<-start
			slot, err := s.Acquire(testContext(t), n, pool)
			mu.Lock()
			defer mu.Unlock()
			var be *coord.BusyError
			switch {
			case err == nil:
				won = append(won, slot)
			case errors.As(err, &be):
				busy = append(busy, be)
			default:
				t.Errorf("%s: %v", n, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return won, busy
}

func TestSlotsOnAPIServer(t *testing.T) {
	t.Run("nodes_racing_for_one_slot_exactly_one_wins", func(t *testing.T) {
		w := newAPIWorld(t)
		nodes := []string{"r1", "r2", "r3", "r4", "r5", "r6"}
		for round := 0; round < 5; round++ {
			won, busy := race(t, w, "default", nodes)
			if len(won) != 1 || len(busy) != len(nodes)-1 {
				t.Fatalf("round %d: %d winners, %d busy", round, len(won), len(busy))
			}
			for _, b := range busy {
				if !reflect.DeepEqual(b.Holders, []string{won[0].Holder}) {
					t.Fatalf("round %d: busy names %v, winner is %s", round, b.Holders, won[0].Holder)
				}
			}
			if err := w.slots(t).Release(testContext(t), won[0]); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("max_unavailable_two_gives_two_slots", func(t *testing.T) {
		w := newAPIWorld(t)
		w.setConfig(t, "default:\n  maxUnavailable: 2\n")
		won, busy := race(t, w, "default", []string{"m1", "m2", "m3", "m4", "m5"})
		if len(won) != 2 || len(busy) != 3 || won[0].Index == won[1].Index {
			t.Fatalf("winners %+v, %d busy", won, len(busy))
		}
	})
	t.Run("a_percentage_counts_the_pools_nodes", func(t *testing.T) {
		w := newAPIWorld(t)
		pool := uniqueName("pct")
		w.setConfig(t, pool+":\n  maxUnavailable: 50%\n")
		for i := 0; i < 6; i++ {
			createNode(t, w.client, node(uniqueName("pct-node"), true, "", map[string]string{nodestatus.LabelPool: pool}))
		}
		won, _ := race(t, w, pool, []string{"p1", "p2", "p3", "p4", "p5", "p6"})
		if len(won) != 3 {
			t.Fatalf("%d winners of 50%% of 6 nodes", len(won))
		}
	})
	t.Run("an_expired_slot_of_a_deleted_node_is_taken_over_by_exactly_one", func(t *testing.T) {
		w := newAPIWorld(t)
		w.plantLease(t, "default", uniqueName("deleted"), w.clock.Now().Add(-10*time.Minute))
		won, busy := race(t, w, "default", []string{"d1", "d2", "d3", "d4"})
		if len(won) != 1 || len(busy) != 3 {
			t.Fatalf("%d winners, %d busy", len(won), len(busy))
		}
		l, err := w.lease(t, won[0].Name)
		if err != nil || *l.Spec.HolderIdentity != won[0].Holder || *l.Spec.LeaseTransitions != 1 {
			t.Fatalf("lease = %+v, %v", l, err)
		}
	})
	for _, c := range []struct {
		name  string
		ready bool
		state nodestatus.State
		taken bool
	}{
		{"an_expired_slot_of_a_not_ready_holder_is_kept", false, nodestatus.StateWorking, false},
		{"an_expired_slot_of_a_ready_holder_mid_update_is_kept", true, nodestatus.StateWorking, false},
		{"an_expired_slot_of_a_ready_done_holder_is_taken_over", true, nodestatus.StateDone, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newAPIWorld(t)
			holder := uniqueName("holder")
			createNode(t, w.client, node(holder, c.ready, c.state, nil))
			w.plantLease(t, "default", holder, w.clock.Now().Add(-10*time.Minute))
			slot, err := w.slots(t).Acquire(testContext(t), "waiter", "default")
			if !c.taken {
				var be *coord.BusyError
				if !errors.As(err, &be) || !reflect.DeepEqual(be.Holders, []string{holder}) {
					t.Fatalf("error = %v, want busy naming %s", err, holder)
				}
				return
			}
			if err != nil || slot.Holder != "waiter" {
				t.Fatalf("slot = %+v, %v", slot, err)
			}
		})
	}
	t.Run("renewal_keeps_the_slot_past_its_duration", func(t *testing.T) {
		w := newAPIWorld(t)
		owner := uniqueName("keeper")
		createNode(t, w.client, node(owner, true, nodestatus.StateDone, nil)) // would be taken if expired
		s := w.slots(t)
		slot, err := s.Acquire(testContext(t), owner, "default")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(testContext(t))
		done := make(chan error, 1)
		go func() { done <- s.Keep(ctx, slot) }()
		for i := 1; i <= 4; i++ {
			waitWaiters(t, w.clock)
			w.clock.Step(100 * time.Second)
			want := slot.RenewTime.Add(time.Duration(i) * 100 * time.Second)
			waitUntil(t, "renewal", func() bool {
				l, err := w.lease(t, slot.Name)
				return err == nil && !l.Spec.RenewTime.Time.Before(want.Truncate(time.Microsecond))
			})
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// 400s after acquiring, the slot is still live: a Ready+Done holder keeps it.
		if _, err := w.slots(t).Acquire(testContext(t), "other", "default"); !errors.Is(err, coord.ErrBusy) {
			t.Fatalf("renewed slot taken: %v", err)
		}
	})
	t.Run("release_frees_the_slot_and_held_re_derives_it", func(t *testing.T) {
		w := newAPIWorld(t)
		s := w.slots(t)
		slot, err := s.Acquire(testContext(t), "n1", "default")
		if err != nil {
			t.Fatal(err)
		}
		held, ok, err := w.slots(t).Held(testContext(t), "n1")
		if err != nil || !ok || held.Name != slot.Name {
			t.Fatalf("Held = %+v %v %v", held, ok, err)
		}
		if err := w.slots(t).Release(testContext(t), held); err != nil {
			t.Fatal(err)
		}
		if _, err := w.lease(t, slot.Name); !apierrors.IsNotFound(err) {
			t.Fatalf("lease after release: %v", err)
		}
		if _, err := s.Renew(testContext(t), slot); !errors.Is(err, coord.ErrSlotLost) {
			t.Fatalf("renew after release: %v", err)
		}
		if got, err := w.slots(t).Acquire(testContext(t), "n2", "default"); err != nil || got.Name != slot.Name {
			t.Fatalf("n2 after release: %+v %v", got, err)
		}
	})
	t.Run("release_with_a_stale_version_does_not_delete_a_new_holders_slot", func(t *testing.T) {
		w := newAPIWorld(t)
		w.plantLease(t, "default", "n1", w.clock.Now())
		l, err := w.lease(t, coord.LeaseName("default", 0))
		if err != nil {
			t.Fatal(err)
		}
		stale := l.DeepCopy()
		l.Spec.HolderIdentity = ptr("n2")
		if _, err := w.client.CoordinationV1().Leases(w.ns).Update(testContext(t), l, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		uid, rv := stale.UID, stale.ResourceVersion
		err = w.client.CoordinationV1().Leases(w.ns).Delete(testContext(t), stale.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		if !apierrors.IsConflict(err) {
			t.Fatalf("delete with a stale version: %v (the precondition Release relies on)", err)
		}
		if err := w.slots(t).Release(testContext(t), coord.Slot{Name: stale.Name, Holder: "n1"}); err != nil {
			t.Fatal(err)
		}
		if l, err := w.lease(t, stale.Name); err != nil || *l.Spec.HolderIdentity != "n2" {
			t.Fatalf("n2's slot after n1's release: %+v %v", l, err)
		}
	})
}

func waitWaiters(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	waitUntil(t, "Keep waiting on the clock", clk.HasWaiters)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
