package daemon_test

import (
	"slices"
	"strings"
	"testing"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// TestDesiredImageChanges follows DESIGN §2 for a new or removed desired-image in every phase.
func TestDesiredImageChanges(t *testing.T) {
	m := newMachine(t)
	t.Run("an_effect_in_flight_before_the_reboot_is_interrupted", func(t *testing.T) {
		for _, c := range []struct {
			phase  daemon.Phase
			effect string
		}{{daemon.PhaseResolving, "Resolve"}, {daemon.PhaseVerifying, "Verify"}, {daemon.PhaseStaging, "Stage"}, {daemon.PhaseDraining, "Drain"}} {
			obs := atRest()
			obs.Node.Status.DesiredImage = imgOther
			obs.InFlight = c.effect
			d := m.Step(daemon.State{Phase: c.phase, Target: targets[imgNew]}, obs)
			if got := describe(d.Effects); got != "Interrupt("+c.effect+")" || d.Next.Phase != c.phase {
				t.Errorf("%s: %s, next %s", c.phase, got, d.Next.Phase)
			}
			obs.Node.Status.DesiredImage = imgNew
			if d := m.Step(daemon.State{Phase: c.phase, Target: targets[imgNew]}, obs); len(d.Effects) != 0 {
				t.Errorf("%s without a change: %s", c.phase, describe(d.Effects))
			}
		}
	})
	t.Run("mid_staging_the_transaction_is_cancelled_then_the_second_image_wins", func(t *testing.T) {
		obs := atRest()
		obs.Node.Status.DesiredImage = imgOther
		obs.Host.ActiveTxn = txnPath
		obs.Last = daemon.Outcome{Effect: "Stage", Err: "context canceled", Interrupted: true}
		cur := daemon.State{Phase: daemon.PhaseStaging, Target: targets[imgNew]}
		d := m.Step(cur, obs)
		if got := describe(d.Effects); got != "CancelTxn("+txnPath+")" {
			t.Errorf("with the transaction still active: %s", got)
		}
		obs.Host.ActiveTxn, obs.Last = "", daemon.Outcome{Effect: "CancelTxn"}
		d = m.Step(d.Next, obs)
		if got := describe(d.Effects); got != "Report(Working/Resolving) Resolve("+imgOther+")" || d.Next.Phase != daemon.PhaseResolving {
			t.Errorf("after the cancel: %s → %s", got, d.Next.Phase)
		}
	})
	t.Run("after_a_restart_mid_transaction_the_transaction_is_cancelled", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.stageCrashes = true
		w.runUntil(func(w *world) bool { return w.obs.Host.ActiveTxn != "" })
		w.desire(imgOther)
		w.run()
		checkDoneOn(t, w, targets[imgOther])
		if !slices.Contains(w.effects, "CancelTxn("+txnPath+")") || slices.Contains(w.effects, "AttachTxn("+txnPath+")") {
			t.Errorf("effects %v", w.effects)
		}
	})
	t.Run("while_staged_the_deployment_is_cleaned_up", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.runUntil(func(w *world) bool { return w.obs.Node.Status.Phase == nodestatus.PhaseStaged })
		w.desire(imgOther)
		d, _ := w.step()
		if got := describe(d.Effects); got != "CleanupPending ClearStaged Report(Working/Resolving) Resolve("+imgOther+")" {
			t.Errorf("effects %s", got)
		}
		w.run()
		checkDoneOn(t, w, targets[imgOther])
	})
	t.Run("while_waiting_for_a_slot_the_deployment_is_cleaned_up_and_the_slot_not_taken", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.busy = []string{"node-b"}
		w.runUntil(func(w *world) bool { return len(w.state.Holders) > 0 })
		w.desire(imgOther)
		d, _ := w.step()
		if got := describe(d.Effects); got != "CleanupPending ClearStaged Report(Working/Resolving) Resolve("+imgOther+")" {
			t.Errorf("effects %s", got)
		}
		if w.obs.SlotHeld || w.obs.Host.StagedDigest != "" {
			t.Errorf("slot %t, staged %q", w.obs.SlotHeld, w.obs.Host.StagedDigest)
		}
		w.busy = nil
		w.run()
		checkDoneOn(t, w, targets[imgOther])
	})
	t.Run("while_draining_it_uncordons_releases_and_cleans_up", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.fail["Drain"] = daemon.Outcome{Effect: "Drain", Err: "apiserver unavailable"}
		w.runUntil(func(w *world) bool { return w.obs.Node.Unschedulable && w.state.Retries > 0 })
		w.desire(imgOther)
		d, _ := w.step()
		want := "Uncordon ReleaseSlot CleanupPending ClearStaged Report(Working/Resolving) Resolve(" + imgOther + ")"
		if got := describe(d.Effects); got != want {
			t.Errorf("effects %s, want %s", got, want)
		}
		delete(w.fail, "Drain")
		w.run()
		checkDoneOn(t, w, targets[imgOther])
	})
	t.Run("once_rebooting_it_is_taken_up_after_the_boot", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.fail["CheckInhibitors"] = daemon.Outcome{Effect: "CheckInhibitors", Err: "logind unavailable"}
		w.runUntil(func(w *world) bool { return w.state.Phase == daemon.PhaseRebooting && w.state.Retries > 0 })
		delete(w.fail, "CheckInhibitors")
		w.desire(imgOther)
		w.run()
		if w.obs.Host.BootedDigest != digOther || w.reboots != 2 {
			t.Errorf("booted %s after %d reboots", w.obs.Host.BootedDigest, w.reboots)
		}
		got := strings.Join(w.reported, " ")
		if !strings.Contains(got, "Working/Confirming Done Working/Resolving") {
			t.Errorf("the first update did not finish before the second began: %s", got)
		}
	})
	t.Run("after_a_permanent_failure_a_new_image_starts_over", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.failing("Verify", reason.SignatureRejected)
		w.run()
		delete(w.fail, "Verify")
		w.desire(imgOther)
		w.run()
		checkDoneOn(t, w, targets[imgOther])
	})
}

func TestDesiredImageRemoved(t *testing.T) {
	stops := []struct {
		name  string
		until func(*world) bool
	}{
		{"while_resolving", func(w *world) bool { return w.obs.Node.Status.Phase == nodestatus.PhaseResolving }},
		{"while_verifying", func(w *world) bool { return w.obs.Node.Status.Phase == nodestatus.PhaseVerifying }},
		{"while_staged", func(w *world) bool { return w.obs.Node.Status.Phase == nodestatus.PhaseStaged }},
		{"while_waiting_for_a_slot", func(w *world) bool { return len(w.state.Holders) > 0 }},
		{"while_draining", func(w *world) bool { return w.obs.Node.Unschedulable }},
		{"when_degraded", func(w *world) bool { return w.state.Phase == daemon.PhaseDegraded }},
	}
	for _, c := range stops {
		t.Run(c.name+"_stops_cleanly_and_ends_idle", func(t *testing.T) {
			w := newWorld(t, atRest())
			w.desire(imgNew)
			if c.name == "while_waiting_for_a_slot" {
				w.busy = []string{"node-b"}
			}
			if c.name == "when_degraded" {
				w.failing("Drain", reason.DrainTimeout)
			}
			w.runUntil(c.until)
			w.desire("")
			w.run()
			st, h := w.obs.Node.Status, w.obs.Host
			if w.state.Phase != daemon.PhaseIdle || st.State != nodestatus.StateDone || st.CurrentImage != pinOld {
				t.Errorf("ended %s, reported %s on %q", w.state.Phase, st.State, st.CurrentImage)
			}
			if w.obs.SlotHeld || w.obs.Node.Unschedulable || h.StagedDigest != "" || st.StagedImage != "" || st.DesiredDigest != "" {
				t.Errorf("left slot %t, cordon %t, staged %q/%q, desired-digest %q", w.obs.SlotHeld, w.obs.Node.Unschedulable,
					h.StagedDigest, st.StagedImage, st.DesiredDigest)
			}
			if w.reboots != 0 {
				t.Errorf("rebooted %d times", w.reboots)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	t.Run("a_new_value_is_acknowledged_without_acting_when_nothing_failed", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.obs.Node.Status.Retry = "r1"
		w.run()
		if got := strings.Join(w.effects, " "); got != "AckRetry(r1)" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("a_new_value_retries_a_permanent_failure_now", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.failing("Validate", reason.NotBootable)
		w.run()
		n := len(w.effects)
		w.run()
		if len(w.effects) != n {
			t.Errorf("a permanent failure was retried without a retry: %v", w.effects[n:])
		}
		w.obs.Node.Status.Retry = "r1"
		w.step()
		if got := strings.Join(w.effects[n:], " "); !strings.HasPrefix(got, "AckRetry(r1) Report(Working/Resolving) Resolve("+imgNew+")") {
			t.Errorf("effects after the retry %s", got)
		}
	})
}
