package daemon_test

import (
	"testing"
	"time"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
)

func TestSettleTimeOfThePool(t *testing.T) {
	m := newMachine(t) // default settle time 10s
	readyFor := func(d time.Duration, settle *time.Duration) daemon.Observed {
		return updating(nodestatus.PhaseConfirming, func(o *daemon.Observed) {
			o.Node.ReadySince = o.Now.Add(-d)
			o.Policy.SettleTime = settle
		})
	}
	cur := daemon.Derive(readyFor(time.Minute, nil))

	t.Run("the_pool's_settle_time_holds_a_node_ready_for_less", func(t *testing.T) {
		long := 2 * time.Minute
		d := m.Step(cur, readyFor(time.Minute, &long))
		if d.Err != nil || len(d.Effects) != 0 || d.RetryAfter != time.Minute {
			t.Fatalf("effects %s retry after %v (err %v): want none, and a step again in 1m", describe(d.Effects), d.RetryAfter, d.Err)
		}
	})
	t.Run("without_one_the_default_applies", func(t *testing.T) {
		d := m.Step(cur, readyFor(time.Minute, nil))
		if got := describe(d.Effects); d.Err != nil || got != "Uncordon ReleaseSlot Report(Done)" {
			t.Fatalf("effects %s (err %v), want Done after the default 10s", got, d.Err)
		}
	})
	t.Run("zero_finishes_as_soon_as_the_node_is_ready", func(t *testing.T) {
		zero := time.Duration(0)
		d := m.Step(cur, readyFor(0, &zero))
		if got := describe(d.Effects); d.Err != nil || got != "Uncordon ReleaseSlot Report(Done)" {
			t.Fatalf("effects %s (err %v), want Done at once", got, d.Err)
		}
	})
}
