package daemon_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

var everyPhaseInOrder = []string{"Working/Resolving", "Working/Verifying", "Working/Staging", "Working/Staged",
	"Working/WaitingForSlot", "Working/Draining", "Working/Rebooting", "Working/Confirming", "Done"}

// checkDoneOn checks the end state of a successful update to tg, reached with one reboot.
func checkDoneOn(t *testing.T, w *world, tg daemon.Target) {
	t.Helper()
	st, h := w.obs.Node.Status, w.obs.Host
	if w.state.Phase != daemon.PhaseDone || st.State != nodestatus.StateDone || st.Phase != "" {
		t.Errorf("ended %s, annotations %s/%s", w.state.Phase, st.State, st.Phase)
	}
	if h.BootedDigest != tg.Digest || st.CurrentImage != tg.Pinned {
		t.Errorf("booted %s, current-image %s; want %s", h.BootedDigest, st.CurrentImage, tg.Pinned)
	}
	if w.obs.SlotHeld || w.obs.Node.Unschedulable || st.CordonedBy != "" {
		t.Errorf("left slot=%t unschedulable=%t cordoned-by=%q", w.obs.SlotHeld, w.obs.Node.Unschedulable, st.CordonedBy)
	}
	if h.StagedDigest != "" || st.StagedImage != "" || st.RebootBootID != "" {
		t.Errorf("left staged %q / staged-image %q / reboot-boot-id %q", h.StagedDigest, st.StagedImage, st.RebootBootID)
	}
	if w.reboots != 1 {
		t.Errorf("rebooted %d times, want once", w.reboots)
	}
	if w.repulls != 0 {
		t.Errorf("staged again %d times while the staged deployment matched", w.repulls)
	}
}

func TestUpdate(t *testing.T) {
	t.Run("goes_through_every_phase_in_order_with_one_reboot", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.run()
		checkDoneOn(t, w, targets[imgNew])
		if !slices.Equal(w.reported, everyPhaseInOrder) {
			t.Errorf("reported %v, want %v", w.reported, everyPhaseInOrder)
		}
		if w.pulls != 1 {
			t.Errorf("%d staging transactions, want 1", w.pulls)
		}
		if got := w.obs.Node.Status; got.DesiredDigest != digNew || got.DesiredIndexDigest != idxNew || got.ResolvedImage != imgNew {
			t.Errorf("recorded %s/%s/%s", got.DesiredDigest, got.DesiredIndexDigest, got.ResolvedImage)
		}
	})
	t.Run("the_same_image_twice_is_a_no_op", func(t *testing.T) {
		w := newWorld(t, atRest())
		d, waiting := w.step()
		if !waiting || d.RetryAfter != 0 || len(w.effects) != 0 {
			t.Errorf("at rest on the desired image: effects %v, RetryAfter %s", w.effects, d.RetryAfter)
		}
	})
	t.Run("another_reference_to_the_booted_digest_needs_no_transaction_and_no_reboot", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.images[pinOld] = targets[imgOld]
		w.desire(pinOld)
		w.run()
		if w.pulls != 0 || w.reboots != 0 || w.state.Phase != daemon.PhaseDone {
			t.Errorf("pulls %d, reboots %d, phase %s; effects %v", w.pulls, w.reboots, w.state.Phase, w.effects)
		}
		if got := strings.Join(w.effects, " "); got != "Report(Working/Resolving) Resolve("+pinOld+") RecordDigest("+digOld+") Report(Done)" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("waits_for_a_busy_pool_naming_the_holders", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.busy = []string{"node-b"}
		w.runUntil(func(w *world) bool { return len(w.state.Holders) > 0 })
		w.step()
		if msg := w.obs.Node.Status.Message; !strings.Contains(msg, "held by node-b") {
			t.Errorf("message %q does not name the holder", msg)
		}
		d, waiting := w.step()
		if !waiting || d.RetryAfter <= 0 {
			t.Errorf("while busy: waiting %t, RetryAfter %s", waiting, d.RetryAfter)
		}
		w.busy = nil
		w.run()
		checkDoneOn(t, w, targets[imgNew])
	})
	t.Run("a_cordon_made_by_someone_else_is_kept", func(t *testing.T) {
		obs := atRest()
		obs.Node.Unschedulable = true
		w := newWorld(t, obs)
		w.desire(imgNew)
		w.run()
		if !w.obs.Node.Unschedulable || slices.Contains(w.effects, "Cordon") || slices.Contains(w.effects, "Uncordon") {
			t.Errorf("unschedulable %t; effects %v", w.obs.Node.Unschedulable, w.effects)
		}
	})
}

// TestKilledAnywhere kills the agent after each effect of an update in turn; the restarted agent
// derives its state and converges with one reboot and without staging twice.
func TestKilledAnywhere(t *testing.T) {
	ref := newWorld(t, atRest())
	ref.desire(imgNew)
	ref.run()
	for k := 1; k <= len(ref.effects); k++ {
		t.Run(fmt.Sprintf("after_effect_%02d_%s", k, subtestName(ref.effects[k-1])), func(t *testing.T) {
			w := newWorld(t, atRest())
			w.desire(imgNew)
			w.crashAt = k
			w.run()
			checkDoneOn(t, w, targets[imgNew])
		})
	}
	t.Run("mid_transaction_re_attaches_instead_of_staging_again", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.stageCrashes = true
		w.run()
		checkDoneOn(t, w, targets[imgNew])
		if w.pulls != 1 || !slices.Contains(w.effects, "AttachTxn("+txnPath+")") {
			t.Errorf("pulls %d; effects %v", w.pulls, w.effects)
		}
	})
}

// subtestName keeps letters and digits of s, joined by underscores.
func subtestName(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}), "_")
}

func TestFailures(t *testing.T) {
	beforeSlot := []struct {
		name, image, effect string
		code                reason.Code
	}{
		{"unsigned", imgNew, "Verify", reason.SignatureRejected},
		{"not_bootable", imgNew, "Validate", reason.NotBootable},
		{"wrong_arch", imgNew, "Validate", reason.ArchMismatch},
		{"unknown_tag", repo + ":nope", "", reason.ImageNotFound},
		{"not_enough_disk", imgNew, "Stage", reason.InsufficientDisk},
		{"pull_failed", imgNew, "Stage", reason.PullFailed},
	}
	for _, c := range beforeSlot {
		t.Run(c.name+"_leaves_nothing_staged_no_cordon_no_slot_and_a_retry_succeeds", func(t *testing.T) {
			w := newWorld(t, atRest())
			w.desire(c.image)
			if c.effect != "" {
				w.failing(c.effect, c.code)
			}
			w.runUntil(inPhase(daemon.PhaseDegraded))
			if c.code.Permanent() {
				w.run() // a permanent reason waits for a new desired-image or retry
			} else {
				w.step() // a transient one keeps its end state until the backoff ends
			}
			if st := w.obs.Node.Status; st.State != nodestatus.StateDegraded || st.Reason != c.code {
				t.Errorf("reported %s/%s, want Degraded/%s", st.State, st.Reason, c.code)
			}
			if w.obs.Host.StagedDigest != "" || w.obs.SlotHeld || w.obs.Node.Unschedulable {
				t.Errorf("left staged %q, slot %t, cordon %t", w.obs.Host.StagedDigest, w.obs.SlotHeld, w.obs.Node.Unschedulable)
			}
			// The admin fixes the cause and asks for a retry.
			delete(w.fail, c.effect)
			w.images[c.image] = targets[imgNew]
			w.obs.Node.Status.Retry = "1"
			w.run()
			checkDoneOn(t, w, targets[imgNew])
			if w.obs.Node.Status.ObservedRetry != "1" {
				t.Errorf("observed-retry %q", w.obs.Node.Status.ObservedRetry)
			}
		})
	}
	t.Run("drain_timeout_uncordons_releases_keeps_the_staged_deployment_and_retries_without_pulling", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.failing("Drain", reason.DrainTimeout)
		w.runUntil(inPhase(daemon.PhaseDegraded))
		d, _ := w.step()
		if w.obs.SlotHeld || w.obs.Node.Unschedulable || w.obs.Host.StagedDigest != digNew || w.obs.Node.Status.StagedImage != pinNew {
			t.Errorf("slot %t, cordon %t, staged %q / %q", w.obs.SlotHeld, w.obs.Node.Unschedulable,
				w.obs.Host.StagedDigest, w.obs.Node.Status.StagedImage)
		}
		if d.RetryAfter <= 0 {
			t.Errorf("a transient reason must retry after a backoff, RetryAfter %s", d.RetryAfter)
		}
		delete(w.fail, "Drain")
		w.run()
		checkDoneOn(t, w, targets[imgNew])
		if w.pulls != 1 {
			t.Errorf("%d staging transactions, want 1", w.pulls)
		}
	})
	t.Run("booted_wrong_image_keeps_the_slot_uncordons_and_names_the_finalize_error", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.desire(imgNew)
		w.wrongBoot = true
		w.run()
		st := w.obs.Node.Status
		if st.State != nodestatus.StateDegraded || st.Reason != reason.BootedWrongImage {
			t.Fatalf("reported %s/%s", st.State, st.Reason)
		}
		if !w.obs.SlotHeld || w.obs.Node.Unschedulable {
			t.Errorf("slot %t (want kept), unschedulable %t (want uncordoned)", w.obs.SlotHeld, w.obs.Node.Unschedulable)
		}
		if !strings.Contains(st.Message, "bwrap: Operation not permitted") {
			t.Errorf("message %q lacks the finalize error", st.Message)
		}
	})
}
