package drain_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"layerd.dev/layerd/pkg/drain"
)

func TestFake(t *testing.T) {
	t.Run("claims_only_a_cordon_it_makes", func(t *testing.T) {
		f := drain.NewFake(true)
		if ours, err := f.Cordon(t.Context()); ours || err != nil {
			t.Fatalf("Cordon = %v, %v on a cordoned node", ours, err)
		}
		f = drain.NewFake(false)
		if ours, err := f.Cordon(t.Context()); !ours || err != nil || !f.Unschedulable() {
			t.Fatalf("Cordon = %v, %v on a schedulable node", ours, err)
		}
		if err := f.Uncordon(t.Context()); err != nil || f.Unschedulable() {
			t.Fatalf("Uncordon = %v", err)
		}
	})

	t.Run("returns_the_configured_errors_and_records_calls", func(t *testing.T) {
		f := drain.NewFake(false)
		timeout := &drain.TimeoutError{Pods: []drain.PodRef{{Namespace: "a", Name: "b"}}}
		f.SetDrainError(timeout)
		var te *drain.TimeoutError
		if err := f.Drain(t.Context()); !errors.As(err, &te) {
			t.Fatalf("Drain = %v", err)
		}
		boom := errors.New("boom")
		f.SetCordonErrors(boom, boom)
		if _, err := f.Cordon(t.Context()); !errors.Is(err, boom) {
			t.Fatalf("Cordon = %v", err)
		}
		if err := f.Uncordon(t.Context()); !errors.Is(err, boom) {
			t.Fatalf("Uncordon = %v", err)
		}
		f.SetDrainFunc(func(ctx context.Context) error { return ctx.Err() })
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := f.Drain(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Drain = %v", err)
		}
		if got, want := f.Calls(), []string{"Drain", "Cordon", "Uncordon", "Drain"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("calls %v, want %v", got, want)
		}
	})
}
