package daemon_test

import (
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

func TestBackoff(t *testing.T) {
	b := daemon.Backoff{Base: time.Minute, Max: 30 * time.Minute, Jitter: 0.2}
	t.Run("doubles_per_attempt_up_to_the_cap", func(t *testing.T) {
		want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute,
			30 * time.Minute, 30 * time.Minute}
		for i, w := range want {
			if got := b.Delay(i+1, 0); got != w {
				t.Errorf("attempt %d: %s, want %s", i+1, got, w)
			}
		}
	})
	t.Run("never_overflows_or_exceeds_the_cap", func(t *testing.T) {
		for _, n := range []int{40, 63, 64, 1000, 1 << 30} {
			if got := b.Delay(n, 0); got != 30*time.Minute {
				t.Errorf("attempt %d: %s", n, got)
			}
		}
	})
	t.Run("jitter_only_shortens_by_up_to_its_fraction", func(t *testing.T) {
		if got := b.Delay(1, 0.5); got != 54*time.Second {
			t.Errorf("r=0.5: %s, want 54s", got)
		}
		if got := b.Delay(100, 0.999999); got < 24*time.Minute || got > 30*time.Minute {
			t.Errorf("r≈1 at the cap: %s", got)
		}
	})
	t.Run("a_random_number_outside_0_1_counts_as_0_and_attempt_0_as_1", func(t *testing.T) {
		if b.Delay(1, -3) != time.Minute || b.Delay(1, 1) != time.Minute || b.Delay(0, 0) != time.Minute {
			t.Errorf("got %s %s %s", b.Delay(1, -3), b.Delay(1, 1), b.Delay(0, 0))
		}
	})
}

func TestNew(t *testing.T) {
	t.Run("rejects_a_missing_jitter_source", func(t *testing.T) {
		if _, err := daemon.New(daemon.DefaultConfig(nil)); err == nil || !strings.Contains(err.Error(), "jitter") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("rejects_impossible_tuning", func(t *testing.T) {
		for name, change := range map[string]func(*daemon.Config){
			"zero_base":          func(c *daemon.Config) { c.Backoff.Base = 0 },
			"max_below_base":     func(c *daemon.Config) { c.RetryBackoff.Max = time.Second },
			"jitter_of_one":      func(c *daemon.Config) { c.Backoff.Jitter = 1 },
			"no_slot_poll":       func(c *daemon.Config) { c.SlotPoll = 0 },
			"negative_settle":    func(c *daemon.Config) { c.SettleTime = -time.Second },
			"no_reboot_interval": func(c *daemon.Config) { c.RebootWait = 0 },
		} {
			c := config()
			change(&c)
			if _, err := daemon.New(c); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
	})
	t.Run("the_retry_delay_uses_the_injected_jitter_source", func(t *testing.T) {
		c := config()
		c.Rand = func() float64 { return 0 }
		m, err := daemon.New(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.RetryAfter(3); got != 4*time.Minute {
			t.Errorf("RetryAfter(3) = %s", got)
		}
	})
}

// TestTransientRetries fails the pull again and again: each retry waits twice as long, up to
// the cap, and the attempt count survives the retries until a success.
func TestTransientRetries(t *testing.T) {
	w := newWorld(t, atRest())
	w.desire(imgNew)
	w.failing("Stage", reason.PullFailed)
	var delays []time.Duration
	for len(delays) < 8 {
		d, _ := w.step()
		if d.Next.Phase == daemon.PhaseDegraded && len(d.Effects) > 0 && d.RetryAfter > 0 {
			delays = append(delays, d.RetryAfter)
		}
		if len(d.Effects) == 0 {
			w.obs.Now = w.obs.Now.Add(d.RetryAfter)
		}
	}
	want := []time.Duration{54 * time.Second, 108 * time.Second, 216 * time.Second, 432 * time.Second, 864 * time.Second,
		27 * time.Minute, 27 * time.Minute, 27 * time.Minute}
	for i := range want {
		if delays[i] != want[i] {
			t.Errorf("retry %d after %s, want %s (all: %v)", i+1, delays[i], want[i], delays)
		}
	}
	if w.obs.Node.Status.State != nodestatus.StateDegraded || w.obs.Node.Status.Reason != reason.PullFailed {
		t.Errorf("reported %s/%s", w.obs.Node.Status.State, w.obs.Node.Status.Reason)
	}
	delete(w.fail, "Stage")
	w.run()
	checkDoneOn(t, w, targets[imgNew])
	if w.state.Attempt != 0 {
		t.Errorf("attempt count %d after Done", w.state.Attempt)
	}
}
