package drain_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/reason"
)

// policyDoc parses one pool's policy fields as coord.PoolPolicy.Raw holds them.
func policyDoc(t *testing.T, doc string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestApplyPolicy(t *testing.T) {
	base := drain.Options{Timeout: 3 * time.Minute, Force: true, PodSelector: "app!=layerd-agent",
		GracePeriodSeconds: ptr.To[int64](20), EvictionRetryInterval: time.Second}

	t.Run("an_empty_policy_keeps_every_option", func(t *testing.T) {
		got, err := base.ApplyPolicy(nil)
		if err != nil || !reflect.DeepEqual(got, base) {
			t.Fatalf("got %+v, %v; want %+v", got, err, base)
		}
	})

	t.Run("set_fields_replace_the_options_and_missing_ones_keep_them", func(t *testing.T) {
		got, err := base.ApplyPolicy(policyDoc(t, `{"drainTimeout": "8s", "drain": {"force": false, "deleteEmptyDirData": false}}`))
		if err != nil {
			t.Fatal(err)
		}
		want := base
		want.Timeout, want.Force, want.DeleteEmptyDirData = 8*time.Second, false, ptr.To(false)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got  %+v\nwant %+v", got, want)
		}
	})

	t.Run("a_pool_pod_selector_narrows_the_callers_selector", func(t *testing.T) {
		got, err := base.ApplyPolicy(policyDoc(t, `{"drain": {"podSelector": "tier!=batch"}}`))
		if err != nil || got.PodSelector != "app!=layerd-agent,tier!=batch" {
			t.Fatalf("selector %q, %v; want both joined", got.PodSelector, err)
		}
	})

	for name, doc := range map[string]string{
		"rejects_a_zero_drain_timeout":            `{"drainTimeout": "0s"}`,
		"rejects_a_negative_skip_wait":            `{"drain": {"skipWaitForDeleteTimeout": "-1s"}}`,
		"rejects_a_drain_that_is_not_an_object":   `{"drain": true}`,
		"rejects_an_invalid_joined_pod_selector":  `{"drain": {"podSelector": "a in (("}}`,
		"rejects_a_grace_period_that_is_a_string": `{"drain": {"gracePeriodSeconds": "30"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := base.ApplyPolicy(policyDoc(t, doc)); err == nil {
				t.Fatalf("accepted %s as %+v", doc, got)
			}
		})
	}
}

// policyBox is a PolicySource whose answer the test changes, counting the reads.
type policyBox struct {
	mu    sync.Mutex
	pol   drain.Policy
	err   error
	reads int
}

func (b *policyBox) set(t *testing.T, pool, doc string) {
	raw := policyDoc(t, doc)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pol, b.err = drain.Policy{Pool: pool, Raw: raw}, nil
}

func (b *policyBox) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
}

func (b *policyBox) source(context.Context) (drain.Policy, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reads++
	return b.pol, b.err
}

func (b *policyBox) readCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reads
}

func newPolicyDrainer(t *testing.T, w *fakeWorld, opts drain.Options, box *policyBox) *drain.Drainer {
	t.Helper()
	d, err := drain.New(w, testNode, opts, zaptest.NewLogger(t), drain.WithPolicy(box.source))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDrainWithPolicy(t *testing.T) {
	t.Run("the_pools_drain_timeout_wins_over_the_constructors", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		w.refuseWith(func(*policyv1.Eviction) error { return pdbRefusal() })
		box := &policyBox{}
		box.set(t, "workers", `{"drainTimeout": "600ms"}`)
		d := newPolicyDrainer(t, w, drain.Options{Timeout: time.Hour, EvictionRetryInterval: 50 * time.Millisecond}, box)
		began := time.Now()
		err := d.Drain(t.Context())
		var te *drain.TimeoutError
		if !errors.As(err, &te) || te.After != 600*time.Millisecond {
			t.Fatalf("Drain = %v, want a *TimeoutError after the pool's 600ms", err)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Fatalf("a 600ms drain took %v", took)
		}
	})

	t.Run("reads_the_policy_again_at_every_drain", func(t *testing.T) {
		w := newFakeWorld(pod("default", "solo", testNode, nil, nil, ""))
		box := &policyBox{}
		box.set(t, "workers", `{"drain": {"force": false}}`)
		d := newPolicyDrainer(t, w, drain.Options{Force: true}, box)
		var re *drain.RefusedError
		if err := d.Drain(t.Context()); !errors.As(err, &re) {
			t.Fatalf("with the pool's force=false over the constructor's true: Drain = %v, want *RefusedError", err)
		}
		if ev := w.evicted(); len(ev) != 0 {
			t.Fatalf("a refused drain evicted %v", ev)
		}
		box.set(t, "workers", `{}`) // the pool drops its setting: the constructor's force=true applies
		if err := d.Drain(t.Context()); err != nil {
			t.Fatalf("Drain after the policy changed: %v", err)
		}
		if got := w.evicted(); !reflect.DeepEqual(got, []string{"default/solo"}) {
			t.Fatalf("evicted %v, want default/solo", got)
		}
		if n := box.readCount(); n != 2 {
			t.Fatalf("the policy was read %d times for 2 drains", n)
		}
	})

	t.Run("a_pool_pod_selector_narrows_the_constructors", func(t *testing.T) {
		objs, rs := mixedNode()
		r := rs.(metav1.Object)
		objs = append(objs,
			pod("default", "agent-1", testNode, map[string]string{"app": "layerd-agent"}, r, "ReplicaSet"),
			pod("default", "batch-1", testNode, map[string]string{"app": "batch"}, r, "ReplicaSet"))
		w := newFakeWorld(objs...)
		box := &policyBox{}
		box.set(t, "workers", `{"drain": {"podSelector": "app!=batch"}}`)
		if err := newPolicyDrainer(t, w, drain.Options{PodSelector: "app!=layerd-agent"}, box).Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got, want := w.evicted(), []string{"default/web-1", "default/web-2"}; !sameSet(got, want) {
			t.Fatalf("evicted %v, want %v (neither the agent's pod nor the batch pod)", got, want)
		}
	})

	t.Run("an_invalid_policy_fails_naming_the_pool_and_the_setting_and_evicts_nothing", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		box := &policyBox{}
		box.set(t, "workers", `{"drainTimeout": "10m", "drain": {"forse": true}}`)
		err := newPolicyDrainer(t, w, drain.Options{}, box).Drain(t.Context())
		var pe *drain.PolicyError
		if !errors.As(err, &pe) || pe.Pool != "workers" || pe.Node != testNode {
			t.Fatalf("Drain = %v, want a *PolicyError for pool workers", err)
		}
		for _, want := range []string{"nothing evicted", "pool workers", `"forse"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
		}
		if code, ok := reason.Of(err); !ok || code != reason.DrainTimeout {
			t.Errorf("reason.Of = %q, %v; want %s", code, ok, reason.DrainTimeout)
		}
		if ev := w.evicted(); len(ev) != 0 {
			t.Fatalf("a drain with an invalid policy evicted %v", ev)
		}
		if len(w.Actions()) != 0 {
			t.Fatalf("a drain with an invalid policy made API calls: %v", w.Actions())
		}
	})

	t.Run("a_policy_that_cannot_be_read_is_an_error_without_a_reason_code", func(t *testing.T) {
		objs, _ := mixedNode()
		w := newFakeWorld(objs...)
		box := &policyBox{}
		box.fail(errors.New("configmap unavailable"))
		err := newPolicyDrainer(t, w, drain.Options{}, box).Drain(t.Context())
		var pe *drain.PolicyError
		if err == nil || errors.As(err, &pe) || !strings.Contains(err.Error(), "configmap unavailable") {
			t.Fatalf("Drain = %v, want the source's error wrapped, not a *PolicyError", err)
		}
		if _, ok := reason.Of(err); ok {
			t.Errorf("a read failure carries a reason code: %v", err)
		}
		if ev := w.evicted(); len(ev) != 0 {
			t.Fatalf("evicted %v", ev)
		}
	})

	t.Run("a_cancelled_context_while_reading_the_policy_is_a_cancellation", func(t *testing.T) {
		w := newFakeWorld()
		ctx, cancel := context.WithCancel(t.Context())
		d, err := drain.New(w, testNode, drain.Options{}, zaptest.NewLogger(t), drain.WithPolicy(func(context.Context) (drain.Policy, error) {
			cancel()
			return drain.Policy{}, errors.New("interrupted")
		}))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Drain(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Drain = %v, want context.Canceled", err)
		}
	})
}
