package daemon_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

const aboutNew = imgNew + " (" + digNew + ")"

// messages are the messages the machine reports in each phase of the update to new.
var messages = map[nodestatus.Phase]string{
	nodestatus.PhaseResolving: "Resolving " + imgNew,
	nodestatus.PhaseVerifying: "Verifying " + aboutNew,
	nodestatus.PhaseStaging:   "Staging " + aboutNew,
	nodestatus.PhaseStaged: "Staged " + aboutNew + "; it is applied by the next planned reboot. " +
		"/etc: no local edit shadows a new default. /var: the host has everything the image ships.",
	nodestatus.PhaseWaitingForSlot: "Waiting for a reboot slot of pool default",
	nodestatus.PhaseDraining:       "Draining the node to reboot into " + aboutNew,
	nodestatus.PhaseRebooting:      "Rebooting into " + aboutNew,
	nodestatus.PhaseConfirming:     "Confirming the boot into " + aboutNew,
}

// updating is a node in the middle of the update to new, annotated in phase p, with everything
// the earlier phases left: desired-digest recorded, the deployment staged, the slot held and
// the node cordoned by layerd.
func updating(p nodestatus.Phase, change ...func(*daemon.Observed)) daemon.Observed {
	obs := atRest()
	st := &obs.Node.Status
	st.DesiredImage, st.ResolvedImage, st.DesiredDigest, st.DesiredIndexDigest = imgNew, imgNew, digNew, idxNew
	st.State, st.Phase, st.Message = nodestatus.StateWorking, p, messages[p]
	after := func(q nodestatus.Phase) bool {
		return slices.Index(nodestatus.Phases(), p) >= slices.Index(nodestatus.Phases(), q)
	}
	if after(nodestatus.PhaseStaged) {
		obs.Host.StagedDigest, obs.Host.StagedImage, st.StagedImage = digNew, pinNew, pinNew
	}
	if after(nodestatus.PhaseDraining) {
		obs.SlotHeld, obs.Node.Unschedulable, st.CordonedBy = true, true, nodestatus.CordonedByLayerd
	}
	if after(nodestatus.PhaseRebooting) {
		st.RebootBootID = bootFirst
	}
	if p == nodestatus.PhaseConfirming {
		obs.Node.BootID = "boot-2"
		obs.Host.BootedDigest, obs.Host.BootedImage, obs.Host.StagedDigest, obs.Host.StagedImage = digNew, pinNew, "", ""
	}
	for _, c := range change {
		c(&obs)
	}
	return obs
}

func last(o daemon.Outcome) func(*daemon.Observed) {
	return func(obs *daemon.Observed) { obs.Last = o }
}

func failed(effect string, code reason.Code) func(*daemon.Observed) {
	return last(daemon.Outcome{Effect: effect, Err: effect + " failed", Code: code})
}

func in(p daemon.Phase, change ...func(*daemon.State)) daemon.State {
	s := daemon.State{Phase: p, Target: targets[imgNew]}
	for _, c := range change {
		c(&s)
	}
	return s
}

const anyDelay = -1

// previewed is a Staged state whose preview found nothing to report.
func previewed(s *daemon.State) { s.Preview = &daemon.HostFSSummary{} }

func TestPhaseHandlers(t *testing.T) {
	m := newMachine(t)
	newTarget := targets[imgNew]
	otherTarget := targets[imgOther]
	cases := []struct {
		name    string
		cur     daemon.State
		obs     daemon.Observed
		next    daemon.Phase
		effects string
		after   time.Duration
	}{
		{"idle_starts_resolving_when_desired_image_is_set", daemon.State{Phase: daemon.PhaseIdle},
			func() daemon.Observed { o := atRest(); o.Node.Status.DesiredImage = imgNew; return o }(),
			daemon.PhaseResolving, "Report(Working/Resolving) Resolve(" + imgNew + ")", 0},
		{"idle_lifts_its_cordon_releases_its_slot_and_clears_the_digest", daemon.State{Phase: daemon.PhaseIdle},
			func() daemon.Observed {
				o := atRest()
				o.Node.Status.DesiredImage, o.SlotHeld, o.Node.Status.CordonedBy = "", true, nodestatus.CordonedByLayerd
				return o
			}(), daemon.PhaseIdle, "Uncordon ReleaseSlot ClearDigest", 0},
		{"done_on_the_desired_image_does_nothing", in(daemon.PhaseDone, func(s *daemon.State) { s.Target = targets[imgOld] }),
			atRest(), daemon.PhaseDone, "", 0},
		{"done_with_a_drifted_booted_digest_converges_back_pinned", in(daemon.PhaseDone, func(s *daemon.State) { s.Target = targets[imgOld] }),
			func() daemon.Observed { o := atRest(); o.Host.BootedDigest = digOther; return o }(),
			daemon.PhaseResolving, "Report(Working/Resolving) Resolve(" + imgOld + "@" + digOld + ")", 0},
		{"resolved_records_the_digest_and_verifies", in(daemon.PhaseResolving, func(s *daemon.State) { s.Target = daemon.Target{Image: imgNew} }),
			updating(nodestatus.PhaseResolving, last(daemon.Outcome{Effect: "Resolve", Target: &newTarget})),
			daemon.PhaseVerifying, "Report(Working/Verifying) Verify(" + pinNew + ")", 0},
		{"a_resolve_failure_degrades_with_its_reason_and_backs_off", in(daemon.PhaseResolving),
			updating(nodestatus.PhaseResolving, failed("Resolve", reason.ImageNotFound)),
			daemon.PhaseDegraded, "Report(Degraded/ImageNotFound)", 54 * time.Second},
		{"a_pinned_resolution_to_another_digest_is_a_digest_mismatch", in(daemon.PhaseResolving, func(s *daemon.State) { s.Pin = idxNew }),
			updating(nodestatus.PhaseResolving, last(daemon.Outcome{Effect: "Resolve", Target: &otherTarget})),
			daemon.PhaseDegraded, "Report(Degraded/DigestMismatch)", anyDelay},
		{"verified_then_validates", in(daemon.PhaseVerifying),
			updating(nodestatus.PhaseVerifying, last(daemon.Outcome{Effect: "Verify"})),
			daemon.PhaseVerifying, "Validate(" + pinNew + ")", 0},
		{"validated_stages_with_lock_finalization", in(daemon.PhaseVerifying, func(s *daemon.State) { s.Verified = true }),
			updating(nodestatus.PhaseVerifying, last(daemon.Outcome{Effect: "Validate", Size: 42})),
			daemon.PhaseStaging, "Report(Working/Staging) Stage(" + pinNew + ",lock=true)", 0},
		{"validated_and_already_staged_never_pulls_again", in(daemon.PhaseVerifying, func(s *daemon.State) { s.Verified = true }),
			updating(nodestatus.PhaseVerifying, last(daemon.Outcome{Effect: "Validate"}),
				func(o *daemon.Observed) { o.Host.StagedDigest, o.Host.StagedImage = digNew, pinNew }),
			daemon.PhaseStaged, "PreviewHost(" + digNew + ")", 0},
		{"a_rejected_signature_is_permanent", in(daemon.PhaseVerifying),
			updating(nodestatus.PhaseVerifying, failed("Verify", reason.SignatureRejected)),
			daemon.PhaseDegraded, "Report(Degraded/SignatureRejected)", 0},
		{"staged_previews_etc_and_var_first", in(daemon.PhaseStaging),
			updating(nodestatus.PhaseStaging, last(daemon.Outcome{Effect: "Stage"}),
				func(o *daemon.Observed) { o.Host.StagedDigest, o.Host.StagedImage = digNew, pinNew }),
			daemon.PhaseStaged, "PreviewHost(" + digNew + ")", 0},
		{"previewed_reports_the_staged_image", in(daemon.PhaseStaged),
			updating(nodestatus.PhaseStaging, last(daemon.Outcome{Effect: "PreviewHost", HostFS: &daemon.HostFSSummary{}}),
				func(o *daemon.Observed) { o.Host.StagedDigest, o.Host.StagedImage = digNew, pinNew }),
			daemon.PhaseStaged, "Report(Working/Staged)", 0},
		{"a_success_that_staged_another_digest_is_a_stage_failure", in(daemon.PhaseStaging),
			updating(nodestatus.PhaseStaging, last(daemon.Outcome{Effect: "Stage"}),
				func(o *daemon.Observed) { o.Host.StagedDigest, o.Host.StagedImage = digOther, pinOther }),
			daemon.PhaseDegraded, "Report(Degraded/StageFailed)", anyDelay},
		{"not_enough_disk_degrades_before_the_slot", in(daemon.PhaseStaging),
			updating(nodestatus.PhaseStaging, failed("Stage", reason.InsufficientDisk)),
			daemon.PhaseDegraded, "Report(Degraded/InsufficientDisk)", anyDelay},
		{"an_active_transaction_is_followed_not_doubled", in(daemon.PhaseStaging),
			updating(nodestatus.PhaseStaging, func(o *daemon.Observed) { o.Host.ActiveTxn = txnPath }),
			daemon.PhaseStaging, "AttachTxn(" + txnPath + ")", 0},
		{"staged_and_reported_asks_for_a_slot", in(daemon.PhaseStaged, previewed), updating(nodestatus.PhaseStaged),
			daemon.PhaseWaitingForSlot, "Report(Working/WaitingForSlot) AcquireSlot(default)", 0},
		{"a_busy_pool_is_polled", in(daemon.PhaseWaitingForSlot),
			updating(nodestatus.PhaseWaitingForSlot, last(daemon.Outcome{Effect: "AcquireSlot", Busy: true, Holders: []string{"node-b"}})),
			daemon.PhaseWaitingForSlot, "Report(Working/WaitingForSlot)", 13500 * time.Millisecond},
		{"a_held_slot_cordons_and_drains", in(daemon.PhaseWaitingForSlot),
			updating(nodestatus.PhaseWaitingForSlot, func(o *daemon.Observed) { o.SlotHeld = true }),
			daemon.PhaseDraining, "Report(Working/Draining) Cordon Drain", 0},
		{"a_node_cordoned_by_someone_else_is_drained_without_claiming_the_cordon", in(daemon.PhaseWaitingForSlot),
			updating(nodestatus.PhaseWaitingForSlot, func(o *daemon.Observed) { o.SlotHeld, o.Node.Unschedulable = true, true }),
			daemon.PhaseDraining, "Report(Working/Draining) Drain", 0},
		{"drained_records_the_boot_id_then_finalizes", in(daemon.PhaseDraining),
			updating(nodestatus.PhaseDraining, last(daemon.Outcome{Effect: "Drain"})),
			daemon.PhaseRebooting, "CheckInhibitors RecordBootID(" + bootFirst + ") Report(Working/Rebooting) Finalize(" + digNew + ")", 0},
		{"a_drain_timeout_uncordons_releases_and_keeps_the_staged_deployment", in(daemon.PhaseDraining),
			updating(nodestatus.PhaseDraining, failed("Drain", reason.DrainTimeout)),
			daemon.PhaseDegraded, "Report(Degraded/DrainTimeout) Uncordon ReleaseSlot", anyDelay},
		{"a_lost_slot_stops_draining_and_waits_again", in(daemon.PhaseDraining),
			updating(nodestatus.PhaseDraining, func(o *daemon.Observed) { o.SlotHeld = false }),
			daemon.PhaseWaitingForSlot, "Uncordon Report(Working/WaitingForSlot) AcquireSlot(default)", 0},
		{"an_inhibitor_degrades_like_a_drain_timeout", in(daemon.PhaseRebooting),
			updating(nodestatus.PhaseDraining, failed("CheckInhibitors", reason.RebootInhibited)),
			daemon.PhaseDegraded, "Report(Degraded/RebootInhibited) Uncordon ReleaseSlot", anyDelay},
		{"finalized_waits_for_the_reboot", in(daemon.PhaseRebooting),
			updating(nodestatus.PhaseRebooting, last(daemon.Outcome{Effect: "Finalize"})),
			daemon.PhaseRebooting, "", time.Minute},
		{"a_staged_deployment_gone_before_the_reboot_fails_cleanly", in(daemon.PhaseRebooting),
			updating(nodestatus.PhaseRebooting, func(o *daemon.Observed) { o.Host.StagedDigest, o.Host.StagedImage = "", "" }),
			daemon.PhaseDegraded, "Report(Degraded/StageFailed) Uncordon ReleaseSlot ClearStaged", anyDelay},
		{"a_new_boot_id_means_the_reboot_happened", in(daemon.PhaseRebooting),
			updating(nodestatus.PhaseRebooting, func(o *daemon.Observed) { o.Node.BootID = "boot-2" }),
			daemon.PhaseConfirming, "Report(Working/Confirming)", 0},
		{"the_wrong_image_booted_keeps_the_slot_and_uncordons_a_ready_node", in(daemon.PhaseConfirming),
			updating(nodestatus.PhaseConfirming, func(o *daemon.Observed) { o.Host.BootedDigest = digOld }),
			daemon.PhaseDegraded, "Report(Degraded/BootedWrongImage) Uncordon", 0},
		{"the_wrong_image_booted_keeps_the_cordon_of_a_node_not_ready", in(daemon.PhaseConfirming),
			updating(nodestatus.PhaseConfirming, func(o *daemon.Observed) { o.Host.BootedDigest, o.Node.Ready = digOld, false }),
			daemon.PhaseDegraded, "Report(Degraded/BootedWrongImage)", 0},
		{"confirming_waits_for_ready", in(daemon.PhaseConfirming),
			updating(nodestatus.PhaseConfirming, func(o *daemon.Observed) { o.Node.Ready = false }),
			daemon.PhaseConfirming, "", 15 * time.Second},
		{"confirming_waits_out_the_settle_time", in(daemon.PhaseConfirming),
			updating(nodestatus.PhaseConfirming, func(o *daemon.Observed) { o.Node.ReadySince = t0.Add(-4 * time.Second) }),
			daemon.PhaseConfirming, "", 6 * time.Second},
		{"confirmed_uncordons_releases_and_reports_done", in(daemon.PhaseConfirming),
			updating(nodestatus.PhaseConfirming), daemon.PhaseDone, "Uncordon ReleaseSlot Report(Done)", 0},
		{"a_permanent_failure_waits", in(daemon.PhaseDegraded, func(s *daemon.State) { s.Reason = reason.NotBootable }),
			updating(nodestatus.PhaseVerifying, func(o *daemon.Observed) {
				o.Node.Status.State, o.Node.Status.Phase, o.Node.Status.Reason = nodestatus.StateDegraded, "", reason.NotBootable
				o.Node.Status.Message = ""
			}), daemon.PhaseDegraded, "", 0},
		{"a_transient_failure_waits_for_its_backoff", in(daemon.PhaseDegraded, func(s *daemon.State) {
			s.Reason, s.RetryAt = reason.PullFailed, t0.Add(time.Minute)
		}), updating(nodestatus.PhaseStaging, func(o *daemon.Observed) {
			o.Node.Status.State, o.Node.Status.Phase, o.Node.Status.Reason = nodestatus.StateDegraded, "", reason.PullFailed
			o.Node.Status.Message = ""
		}), daemon.PhaseDegraded, "", time.Minute},
		{"a_re_derived_transient_failure_counts_its_backoff_from_the_last_transition", in(daemon.PhaseDegraded, func(s *daemon.State) {
			s.Reason = reason.PullFailed
		}), updating(nodestatus.PhaseStaging, func(o *daemon.Observed) {
			o.Node.Status.State, o.Node.Status.Phase, o.Node.Status.Reason = nodestatus.StateDegraded, "", reason.PullFailed
			o.Node.Status.LastTransition, o.Node.Status.Message = t0.Add(-10*time.Second), ""
		}), daemon.PhaseDegraded, "", 44 * time.Second},
		{"after_the_backoff_it_resolves_again", in(daemon.PhaseDegraded, func(s *daemon.State) {
			s.Reason, s.RetryAt = reason.PullFailed, t0
		}), updating(nodestatus.PhaseStaging, func(o *daemon.Observed) {
			o.Node.Status.State, o.Node.Status.Phase, o.Node.Status.Reason = nodestatus.StateDegraded, "", reason.PullFailed
		}), daemon.PhaseResolving, "Report(Working/Resolving) Resolve(" + imgNew + ")", 0},
		{"after_the_backoff_a_kept_staged_deployment_resumes_at_staged", in(daemon.PhaseDegraded, func(s *daemon.State) {
			s.Reason, s.RetryAt = reason.DrainTimeout, t0
		}), updating(nodestatus.PhaseStaged, func(o *daemon.Observed) {
			o.Node.Status.State, o.Node.Status.Phase, o.Node.Status.Reason = nodestatus.StateDegraded, "", reason.DrainTimeout
		}), daemon.PhaseStaged, "PreviewHost(" + digNew + ")", 0},
		{"an_error_without_a_reason_is_retried_in_place", in(daemon.PhaseVerifying),
			updating(nodestatus.PhaseVerifying, last(daemon.Outcome{Effect: "Report", Err: "apiserver unavailable"})),
			daemon.PhaseVerifying, "", 1800 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := m.Step(c.cur, c.obs)
			if d.Err != nil {
				t.Fatal(d.Err)
			}
			if d.Next.Phase != c.next {
				t.Errorf("next %s, want %s", d.Next.Phase, c.next)
			}
			if got := describe(d.Effects); got != c.effects {
				t.Errorf("effects\n got %s\nwant %s", got, c.effects)
			}
			if c.after != anyDelay && d.RetryAfter != c.after {
				t.Errorf("RetryAfter %s, want %s", d.RetryAfter, c.after)
			}
		})
	}
}

func TestReportsSaySomething(t *testing.T) {
	m := newMachine(t)
	t.Run("waiting_for_a_slot_names_the_holders", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseWaitingForSlot), updating(nodestatus.PhaseWaitingForSlot,
			last(daemon.Outcome{Effect: "AcquireSlot", Busy: true, Holders: []string{"node-b", "node-c"}})))
		r := d.Effects[0].(daemon.Report)
		if r.Message != "Waiting for a reboot slot of pool default, held by node-b, node-c" {
			t.Errorf("message %q", r.Message)
		}
	})
	t.Run("a_failure_carries_the_owner_s_sentence", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseDraining), updating(nodestatus.PhaseDraining, last(daemon.Outcome{Effect: "Drain",
			Err: "evicting pod default/web-0 blocked by PodDisruptionBudget default/web", Code: reason.DrainTimeout})))
		if r := d.Effects[0].(daemon.Report); !strings.Contains(r.Message, "PodDisruptionBudget default/web") {
			t.Errorf("message %q", r.Message)
		}
	})
}
