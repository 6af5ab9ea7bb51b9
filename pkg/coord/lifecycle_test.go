package coord_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"layerd.dev/layerd/pkg/coord"
)

func TestRenewAndKeep(t *testing.T) {
	ctx := context.Background()
	t.Run("renew_moves_the_renew_time", func(t *testing.T) {
		w := newFake(t)
		slot, _ := w.slots.Acquire(ctx, "n1", "default")
		w.clock.Step(90 * time.Second)
		got, err := w.slots.Renew(ctx, slot)
		if err != nil || !got.RenewTime.Equal(t0.Add(90*time.Second)) || !got.AcquireTime.Equal(t0) {
			t.Fatalf("renewed = %+v, %v", got, err)
		}
	})
	t.Run("renew_reports_a_slot_taken_by_another_node_as_lost", func(t *testing.T) {
		w := newFake(t)
		slot, _ := w.slots.Acquire(ctx, "n1", "default")
		if err := w.cs.Tracker().Update(leaseGVR, heldLease("default", 0, "n2", t0), ns); err != nil {
			t.Fatal(err)
		}
		if _, err := w.slots.Renew(ctx, slot); !errors.Is(err, coord.ErrSlotLost) {
			t.Fatalf("error = %v", err)
		}
		if err := w.cs.CoordinationV1().Leases(ns).Delete(ctx, slot.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.slots.Renew(ctx, slot); !errors.Is(err, coord.ErrSlotLost) {
			t.Fatalf("error after delete = %v", err)
		}
	})
	t.Run("renew_retries_a_conflict", func(t *testing.T) {
		w := newFake(t)
		slot, _ := w.slots.Acquire(ctx, "n1", "default")
		var n atomic.Int32
		w.cs.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			if n.Add(1) == 1 {
				return true, nil, apierrors.NewConflict(leaseGR, slot.Name, errors.New("rv"))
			}
			return false, nil, nil
		})
		if _, err := w.slots.Renew(ctx, slot); err != nil || n.Load() != 2 {
			t.Fatalf("err = %v after %d updates", err, n.Load())
		}
	})
	t.Run("keep_renews_every_third_of_the_duration_and_retries_failures", func(t *testing.T) {
		w := newFake(t)
		slot, _ := w.slots.Acquire(ctx, "n1", "default")
		var fail atomic.Bool
		w.cs.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			if fail.Load() {
				return true, nil, apierrors.NewServiceUnavailable("down")
			}
			return false, nil, nil
		})
		kctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.slots.Keep(kctx, slot) }()
		step := func(d time.Duration) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for !w.clock.HasWaiters() {
				if time.Now().After(deadline) {
					t.Fatal("Keep is not waiting on the clock")
				}
				time.Sleep(time.Millisecond)
			}
			w.clock.Step(d)
		}
		waitRenew := func(want time.Time) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for !w.lease(t, slot.Name).Spec.RenewTime.Time.Equal(want) {
				if time.Now().After(deadline) {
					t.Fatalf("renew time %v, want %v", w.lease(t, slot.Name).Spec.RenewTime, want)
				}
				time.Sleep(time.Millisecond)
			}
		}
		step(100 * time.Second)
		waitRenew(t0.Add(100 * time.Second))
		fail.Store(true)
		step(100 * time.Second) // fails: retried after 50s
		step(49 * time.Second)
		fail.Store(false)
		step(time.Second)
		waitRenew(t0.Add(250 * time.Second))
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Keep = %v after cancel", err)
		}
	})
	t.Run("keep_returns_when_the_slot_is_lost", func(t *testing.T) {
		w := newFake(t)
		slot, _ := w.slots.Acquire(ctx, "n1", "default")
		if err := w.cs.CoordinationV1().Leases(ns).Delete(ctx, slot.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- w.slots.Keep(ctx, slot) }()
		for !w.clock.HasWaiters() {
			time.Sleep(time.Millisecond)
		}
		w.clock.Step(100 * time.Second)
		select {
		case err := <-done:
			if !errors.Is(err, coord.ErrSlotLost) {
				t.Fatalf("Keep = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Keep did not return")
		}
	})
}

func TestRelease(t *testing.T) {
	ctx := context.Background()
	t.Run("deletes_the_lease_with_uid_and_version_preconditions", func(t *testing.T) {
		w := newFake(t)
		slot, _ := w.slots.Acquire(ctx, "n1", "default")
		w.cs.ClearActions()
		if err := w.slots.Release(ctx, slot); err != nil {
			t.Fatal(err)
		}
		var pre *metav1.Preconditions
		for _, a := range w.cs.Actions() {
			if d, ok := a.(k8stesting.DeleteAction); ok {
				pre = d.GetDeleteOptions().Preconditions
			}
		}
		if pre == nil || pre.UID == nil || pre.ResourceVersion == nil {
			t.Fatalf("preconditions = %+v", pre)
		}
		if _, err := w.cs.CoordinationV1().Leases(ns).Get(ctx, slot.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("lease still there: %v", err)
		}
		if _, err := w.slots.Acquire(ctx, "n2", "default"); err != nil {
			t.Fatalf("freed slot not acquirable: %v", err)
		}
	})
	t.Run("is_idempotent_and_leaves_another_holders_lease", func(t *testing.T) {
		w := newFake(t, heldLease("default", 0, "n2", t0))
		slot := coord.Slot{Name: coord.LeaseName("default", 0), Pool: "default", Holder: "n1"}
		if err := w.slots.Release(ctx, slot); err != nil {
			t.Fatal(err)
		}
		if *w.lease(t, slot.Name).Spec.HolderIdentity != "n2" {
			t.Fatal("released another node's slot")
		}
		if err := w.slots.Release(ctx, coord.Slot{Name: "layerd-slot-default-7", Holder: "n1"}); err != nil {
			t.Fatalf("releasing a missing lease: %v", err)
		}
	})
	t.Run("retries_a_precondition_conflict", func(t *testing.T) {
		w := newFake(t)
		slot, _ := w.slots.Acquire(ctx, "n1", "default")
		var n atomic.Int32
		w.cs.PrependReactor("delete", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			if n.Add(1) == 1 {
				return true, nil, apierrors.NewConflict(leaseGR, slot.Name, errors.New("precondition failed"))
			}
			return false, nil, nil
		})
		if err := w.slots.Release(ctx, slot); err != nil || n.Load() != 2 {
			t.Fatalf("err = %v after %d deletes", err, n.Load())
		}
	})
}

func TestHeld(t *testing.T) {
	ctx := context.Background()
	t.Run("finds_the_nodes_slot_after_a_restart", func(t *testing.T) {
		w := newFake(t, heldLease("default", 0, "n2", t0), heldLease("gpu", 1, "n1", t0))
		slot, ok, err := w.slots.Held(ctx, "n1")
		if err != nil || !ok || slot.Name != "layerd-slot-gpu-1" || slot.Pool != "gpu" || slot.Index != 1 {
			t.Fatalf("Held = %+v %v %v", slot, ok, err)
		}
		if _, ok, err := w.slots.Held(ctx, "n3"); ok || err != nil {
			t.Fatalf("n3 holds a slot: %v %v", ok, err)
		}
	})
	t.Run("a_failed_list_is_an_error", func(t *testing.T) {
		w := newFake(t)
		w.cs.PrependReactor("list", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("boom")
		})
		if _, _, err := w.slots.Held(ctx, "n1"); err == nil {
			t.Fatal("no error")
		}
	})
}
