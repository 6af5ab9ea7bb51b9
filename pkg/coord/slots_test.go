package coord_test

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
)

const ns = "layerd"

var t0 = time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)

var (
	leaseGR  = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	leaseGVR = leaseGR.WithVersion("v1")
)

type fakeWorld struct {
	cs    *fake.Clientset
	clock *clocktesting.FakeClock
	slots *coord.Slots
}

func newFake(t *testing.T, objs ...runtime.Object) *fakeWorld {
	t.Helper()
	cs := fake.NewClientset(objs...)
	clk := clocktesting.NewFakeClock(t0)
	s, err := coord.New(cs, ns, clk, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &fakeWorld{cs: cs, clock: clk, slots: s}
}

func node(name string, ready bool, state nodestatus.State, labels map[string]string) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
	if state != "" {
		n.Annotations[nodestatus.AnnotationState] = string(state)
	}
	return n
}

// heldLease is slot i of pool held by holder, renewed at renewed.
func heldLease(pool string, i int, holder string, renewed time.Time) *coordv1.Lease {
	rt := metav1.NewMicroTime(renewed)
	return &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: coord.LeaseName(pool, i), Namespace: ns, ResourceVersion: "5",
			Labels: map[string]string{coord.LabelSlotPool: pool, coord.LabelSlotIndex: strconv.Itoa(i)}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: ptr(int32(300)), AcquireTime: &rt, RenewTime: &rt},
	}
}

func ptr[T any](v T) *T { return &v }

func (w *fakeWorld) lease(t *testing.T, name string) *coordv1.Lease {
	t.Helper()
	l, err := w.cs.CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func busyHolders(t *testing.T, err error) []string {
	t.Helper()
	var busy *coord.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, coord.ErrBusy) {
		t.Fatalf("error = %v, want a *BusyError", err)
	}
	return busy.Holders
}

func TestNew(t *testing.T) {
	t.Run("rejects_nil_dependencies_and_bad_durations", func(t *testing.T) {
		cs, clk, log := fake.NewClientset(), clocktesting.NewFakeClock(t0), zap.NewNop()
		for name, f := range map[string]func() (*coord.Slots, error){
			"client":    func() (*coord.Slots, error) { return coord.New(nil, ns, clk, log) },
			"namespace": func() (*coord.Slots, error) { return coord.New(cs, "", clk, log) },
			"clock":     func() (*coord.Slots, error) { return coord.New(cs, ns, nil, log) },
			"logger":    func() (*coord.Slots, error) { return coord.New(cs, ns, clk, nil) },
			"duration": func() (*coord.Slots, error) {
				return coord.New(cs, ns, clk, log, coord.WithLeaseDuration(1500*time.Millisecond))
			},
		} {
			if s, err := f(); err == nil || s != nil {
				t.Errorf("%s: New succeeded", name)
			}
		}
	})
}

func TestAcquire(t *testing.T) {
	ctx := context.Background()
	t.Run("creates_the_first_slot_held_by_the_node", func(t *testing.T) {
		w := newFake(t)
		slot, err := w.slots.Acquire(ctx, "n1", "default")
		if err != nil {
			t.Fatal(err)
		}
		if slot.Name != "layerd-slot-default-0" || slot.Holder != "n1" || slot.Index != 0 || slot.Pool != "default" || !slot.RenewTime.Equal(t0) {
			t.Fatalf("slot = %+v", slot)
		}
		l := w.lease(t, slot.Name)
		if *l.Spec.HolderIdentity != "n1" || *l.Spec.LeaseDurationSeconds != 300 {
			t.Fatalf("lease spec = %+v", l.Spec)
		}
	})
	t.Run("a_second_node_is_told_who_holds_the_only_slot", func(t *testing.T) {
		w := newFake(t)
		if _, err := w.slots.Acquire(ctx, "n1", "default"); err != nil {
			t.Fatal(err)
		}
		_, err := w.slots.Acquire(ctx, "n2", "default")
		if h := busyHolders(t, err); !reflect.DeepEqual(h, []string{"n1"}) || !strings.Contains(err.Error(), "n1") {
			t.Fatalf("holders = %v (%v)", h, err)
		}
	})
	t.Run("acquiring_again_returns_the_held_slot_renewed", func(t *testing.T) {
		w := newFake(t)
		first, _ := w.slots.Acquire(ctx, "n1", "default")
		w.clock.Step(time.Minute)
		again, err := w.slots.Acquire(ctx, "n1", "default")
		if err != nil || again.Name != first.Name || !again.RenewTime.Equal(t0.Add(time.Minute)) {
			t.Fatalf("again = %+v, %v", again, err)
		}
	})
	t.Run("max_unavailable_two_gives_two_slots", func(t *testing.T) {
		w := newFake(t, configMap("default:\n  maxUnavailable: 2\n"))
		a, errA := w.slots.Acquire(ctx, "n1", "default")
		b, errB := w.slots.Acquire(ctx, "n2", "default")
		_, errC := w.slots.Acquire(ctx, "n3", "default")
		if errA != nil || errB != nil || a.Index != 0 || b.Index != 1 {
			t.Fatalf("a=%+v %v b=%+v %v", a, errA, b, errB)
		}
		if h := busyHolders(t, errC); !reflect.DeepEqual(h, []string{"n1", "n2"}) {
			t.Fatalf("holders = %v", h)
		}
	})
	t.Run("a_percentage_counts_only_the_pools_nodes_by_label_selector", func(t *testing.T) {
		pool := map[string]string{nodestatus.LabelPool: "gpu"}
		w := newFake(t, configMap("gpu:\n  maxUnavailable: 50%\n"),
			node("g1", true, "", pool), node("g2", true, "", pool), node("g3", true, "", pool), node("g4", true, "", pool), node("x1", true, "", nil))
		if _, err := w.slots.Acquire(ctx, "g1", "gpu"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.slots.Acquire(ctx, "g2", "gpu"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.slots.Acquire(ctx, "g3", "gpu"); !errors.Is(err, coord.ErrBusy) {
			t.Fatalf("third of four got a 50%% slot: %v", err)
		}
		for _, a := range w.cs.Actions() {
			if l, ok := a.(k8stesting.ListAction); ok && a.GetResource().Resource == "nodes" && l.GetListRestrictions().Labels.Empty() {
				t.Fatal("unfiltered list of nodes")
			}
		}
	})
	t.Run("the_default_pool_counts_unlabelled_nodes", func(t *testing.T) {
		w := newFake(t, node("a", true, "", nil), node("b", true, "", map[string]string{nodestatus.LabelPool: "default"}),
			node("c", true, "", map[string]string{nodestatus.LabelPool: ""}), node("d", true, "", map[string]string{nodestatus.LabelPool: "gpu"}))
		if n, err := w.slots.PoolSize(ctx, "default"); err != nil || n != 3 {
			t.Fatalf("PoolSize = %d, %v", n, err)
		}
	})
	t.Run("losing_the_create_race_moves_on_and_names_the_winner", func(t *testing.T) {
		w := newFake(t)
		w.cs.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
			l := a.(k8stesting.CreateAction).GetObject().(*coordv1.Lease)
			winner := heldLease("default", 0, "n9", t0)
			if err := w.cs.Tracker().Add(winner); err != nil {
				t.Error(err)
			}
			return true, nil, apierrors.NewAlreadyExists(leaseGR, l.Name)
		})
		_, err := w.slots.Acquire(ctx, "n1", "default")
		if h := busyHolders(t, err); !reflect.DeepEqual(h, []string{"n9"}) {
			t.Fatalf("holders = %v", h)
		}
	})
	t.Run("a_conflict_on_takeover_is_a_lost_race_not_an_error", func(t *testing.T) {
		w := newFake(t, heldLease("default", 0, "gone", t0.Add(-time.Hour)))
		w.cs.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewConflict(leaseGR, "layerd-slot-default-0", errors.New("rv changed"))
		})
		_, err := w.slots.Acquire(ctx, "n1", "default")
		busyHolders(t, err)
	})
	t.Run("a_failed_call_is_an_error_with_context", func(t *testing.T) {
		for _, verb := range []string{"list", "create", "get"} {
			w := newFake(t)
			resource := "leases"
			if verb == "get" {
				resource = "configmaps"
			}
			w.cs.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewServiceUnavailable("etcd leader changed")
			})
			_, err := w.slots.Acquire(ctx, "n1", "default")
			if err == nil || errors.Is(err, coord.ErrBusy) || !strings.Contains(err.Error(), "etcd leader changed") || !strings.Contains(err.Error(), "pool default") && !strings.Contains(err.Error(), "layerd-slot-default-0") {
				t.Fatalf("%s %s failure: error = %v", verb, resource, err)
			}
		}
	})
	t.Run("rejects_a_pool_that_cannot_name_a_lease", func(t *testing.T) {
		w := newFake(t)
		if _, err := w.slots.Acquire(ctx, "n1", "GPU"); err == nil {
			t.Fatal("pool GPU accepted")
		}
	})
}

func TestTakeover(t *testing.T) {
	ctx := context.Background()
	expired := t0.Add(-301 * time.Second)
	for _, c := range []struct {
		name   string
		holder *corev1.Node
		renew  time.Time
		taken  bool
	}{
		{"an_expired_slot_of_a_deleted_node_is_taken_over", nil, expired, true},
		{"an_expired_slot_of_a_ready_done_holder_is_taken_over", node("h", true, nodestatus.StateDone, nil), expired, true},
		{"an_expired_slot_of_a_not_ready_holder_is_kept", node("h", false, nodestatus.StateDone, nil), expired, false},
		{"an_expired_slot_of_a_holder_mid_update_is_kept", node("h", true, nodestatus.StateWorking, nil), expired, false},
		{"an_expired_slot_of_a_degraded_holder_is_kept", node("h", true, nodestatus.StateDegraded, nil), expired, false},
		{"a_live_slot_of_a_ready_done_holder_is_kept", node("h", true, nodestatus.StateDone, nil), t0.Add(-299 * time.Second), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			objs := []runtime.Object{heldLease("default", 0, "h", c.renew)}
			if c.holder != nil {
				objs = append(objs, c.holder)
			}
			w := newFake(t, objs...)
			slot, err := w.slots.Acquire(ctx, "n1", "default")
			if !c.taken {
				if h := busyHolders(t, err); !reflect.DeepEqual(h, []string{"h"}) {
					t.Fatalf("holders = %v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := w.lease(t, slot.Name)
			if *l.Spec.HolderIdentity != "n1" || *l.Spec.LeaseTransitions != 1 || !l.Spec.AcquireTime.Time.Equal(t0) {
				t.Fatalf("lease spec = %+v", l.Spec)
			}
		})
	}
	t.Run("slots_held_beyond_a_lowered_max_unavailable_still_count", func(t *testing.T) {
		w := newFake(t, heldLease("default", 1, "old1", t0), heldLease("default", 2, "old2", t0))
		_, err := w.slots.Acquire(ctx, "n1", "default")
		if h := busyHolders(t, err); !reflect.DeepEqual(h, []string{"old1", "old2"}) {
			t.Fatalf("holders = %v", h)
		}
	})
}
