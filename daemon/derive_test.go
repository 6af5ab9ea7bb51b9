package daemon_test

import (
	"testing"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// TestDerive restarts the agent from observations alone (DESIGN §3: every step re-derivable)
// and checks where it resumes and what it does first.
func TestDerive(t *testing.T) {
	m := newMachine(t)
	rebootedInto := func(dig, pin string) func(*daemon.Observed) {
		return func(o *daemon.Observed) {
			o.Node.BootID = "boot-2"
			o.Host.BootedDigest, o.Host.BootedImage, o.Host.StagedDigest, o.Host.StagedImage = dig, pin, "", ""
		}
	}
	cases := []struct {
		name    string
		obs     daemon.Observed
		phase   daemon.Phase
		pin     string
		txn     string
		effects string
	}{
		{"a_fresh_node_without_desired_image_is_idle_and_reports_done", func() daemon.Observed {
			o := atRest()
			o.Node.Status = nodestatus.Status{Pool: nodestatus.DefaultPool}
			return o
		}(), daemon.PhaseIdle, "", "", "Report(Done)"},
		{"done_on_the_desired_image_does_nothing", atRest(), daemon.PhaseDone, "", "", ""},
		{"a_desired_image_set_while_down_starts_an_update", func() daemon.Observed {
			o := atRest()
			o.Node.Status.DesiredImage = imgNew
			return o
		}(), daemon.PhaseDone, "", "", "Report(Working/Resolving) Resolve(" + imgNew + ")"},
		{"killed_mid_resolve_resolves_again", updating(nodestatus.PhaseResolving, func(o *daemon.Observed) {
			o.Node.Status.DesiredDigest, o.Node.Status.DesiredIndexDigest, o.Node.Status.ResolvedImage = digOld, "", imgOld
		}), daemon.PhaseResolving, "", "", "Resolve(" + imgNew + ")"},
		{"killed_mid_verify_resolves_again_pinned_to_the_recorded_digest", updating(nodestatus.PhaseVerifying),
			daemon.PhaseResolving, idxNew, "", "Report(Working/Resolving) Resolve(" + imgNew + "@" + idxNew + ")"},
		{"killed_mid_pull_resolves_again_pinned", updating(nodestatus.PhaseStaging),
			daemon.PhaseResolving, idxNew, "", "Report(Working/Resolving) Resolve(" + imgNew + "@" + idxNew + ")"},
		{"killed_mid_transaction_re_attaches", updating(nodestatus.PhaseStaging, func(o *daemon.Observed) { o.Host.ActiveTxn = txnPath }),
			daemon.PhaseStaging, "", txnPath, "AttachTxn(" + txnPath + ")"},
		{"killed_after_staging_never_pulls_again", updating(nodestatus.PhaseStaging, func(o *daemon.Observed) {
			o.Host.StagedDigest, o.Host.StagedImage = digNew, pinNew
		}), daemon.PhaseStaged, "", "", "PreviewHost(" + digNew + ")"},
		{"killed_while_waiting_for_a_slot_asks_again", updating(nodestatus.PhaseWaitingForSlot),
			daemon.PhaseWaitingForSlot, "", "", "AcquireSlot(default)"},
		{"killed_after_cordon_drains_without_cordoning_again", updating(nodestatus.PhaseDraining),
			daemon.PhaseDraining, "", "", "Drain"},
		{"killed_between_recording_cordoned_by_and_cordoning_cordons", updating(nodestatus.PhaseDraining, func(o *daemon.Observed) {
			o.Node.Unschedulable = false
		}), daemon.PhaseDraining, "", "", "Cordon Drain"},
		{"killed_between_recording_the_boot_id_and_reporting_rebooting_drains_then_reboots", updating(nodestatus.PhaseDraining, func(o *daemon.Observed) {
			o.Node.Status.RebootBootID = bootFirst
		}), daemon.PhaseDraining, "", "", "Drain"},
		{"killed_between_recording_the_boot_id_and_finalizing_finalizes_in_the_same_boot", updating(nodestatus.PhaseRebooting),
			daemon.PhaseRebooting, "", "", "CheckInhibitors Finalize(" + digNew + ")"},
		{"right_after_boot_confirms", updating(nodestatus.PhaseRebooting, rebootedInto(digNew, pinNew)),
			daemon.PhaseConfirming, "", "", "Report(Working/Confirming)"},
		{"right_after_boot_into_the_wrong_image_degrades", updating(nodestatus.PhaseRebooting, rebootedInto(digOld, pinOld)),
			daemon.PhaseConfirming, "", "", "Report(Degraded/BootedWrongImage) Uncordon"},
		{"killed_while_confirming_finishes", updating(nodestatus.PhaseConfirming),
			daemon.PhaseConfirming, "", "", "Uncordon ReleaseSlot Report(Done)"},
		{"an_unplanned_reboot_that_dropped_the_staged_deployment_starts_again_pinned",
			updating(nodestatus.PhaseWaitingForSlot, rebootedInto(digOld, pinOld)),
			daemon.PhaseWaitingForSlot, "", "", "ClearStaged Report(Working/Resolving) Resolve(" + imgNew + "@" + idxNew + ")"},
		{"an_unplanned_reboot_while_draining_uncordons_and_releases_before_starting_again",
			updating(nodestatus.PhaseDraining, rebootedInto(digOld, pinOld)),
			daemon.PhaseDraining, "", "", "Uncordon ReleaseSlot ClearStaged Report(Working/Resolving) Resolve(" + imgNew + "@" + idxNew + ")"},
		{"a_failure_after_the_reboot_stays_degraded", updating(nodestatus.PhaseRebooting, rebootedInto(digOld, pinOld), func(o *daemon.Observed) {
			o.Node.Status.State, o.Node.Status.Phase, o.Node.Status.Reason = nodestatus.StateDegraded, "", reason.BootedWrongImage
			o.Node.Status.Message, o.Node.Unschedulable, o.Node.Status.CordonedBy = "", false, ""
		}), daemon.PhaseDegraded, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := daemon.Derive(c.obs)
			if s.Phase != c.phase || s.Pin != c.pin || s.Txn != c.txn {
				t.Errorf("derived %s pin %q txn %q; want %s pin %q txn %q", s.Phase, s.Pin, s.Txn, c.phase, c.pin, c.txn)
			}
			d := m.Step(daemon.State{}, c.obs)
			if d.Err != nil {
				t.Fatal(d.Err)
			}
			if got := describe(d.Effects); got != c.effects {
				t.Errorf("first effects\n got %s\nwant %s", got, c.effects)
			}
		})
	}
}
