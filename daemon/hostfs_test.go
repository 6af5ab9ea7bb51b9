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

var (
	imageWins     = daemon.Policy{EtcImageWins: true}
	createMissing = daemon.Policy{VarCreateMissing: true}
	bothPolicies  = daemon.Policy{EtcImageWins: true, VarCreateMissing: true}
)

func withPolicy(p daemon.Policy) func(*daemon.Observed) {
	return func(o *daemon.Observed) { o.Policy = p }
}

func withBackup(digests ...string) func(*daemon.Observed) {
	return func(o *daemon.Observed) { o.Host.EtcBackups = digests }
}

// conflicts is a preview with two /etc conflicts and three /var paths not applied.
var conflicts = daemon.HostFSSummary{EtcConflicts: 2, EtcConflictPaths: []string{"app.conf", "foo.conf"},
	VarNotApplied: 3, VarPaths: []string{"lib/mytool", "lib/mytool/state.db", "log/mytool"}}

func previewedWith(s daemon.HostFSSummary) func(*daemon.Observed) {
	return last(daemon.Outcome{Effect: "PreviewHost", HostFS: &s})
}

// staging is a node whose staging just ended: the deployment of new is staged.
func stagedNow(change ...func(*daemon.Observed)) daemon.Observed {
	return updating(nodestatus.PhaseStaging, append([]func(*daemon.Observed){func(o *daemon.Observed) {
		o.Host.StagedDigest, o.Host.StagedImage = digNew, pinNew
	}}, change...)...)
}

func reportOf(t *testing.T, effects []daemon.Effect) daemon.Report {
	t.Helper()
	for _, e := range effects {
		if r, ok := e.(daemon.Report); ok {
			return r
		}
	}
	t.Fatalf("no Report in %s", describe(effects))
	return daemon.Report{}
}

func warningsOf(effects []daemon.Effect) map[reason.Code]string {
	out := map[reason.Code]string{}
	for _, e := range effects {
		if w, ok := e.(daemon.Warn); ok {
			out[w.Code] = w.Message
		}
	}
	return out
}

func containsAll(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s %q lacks %q", what, s, w)
		}
	}
}

func TestPreview(t *testing.T) {
	m := newMachine(t)
	t.Run("conflicts_and_missing_var_content_go_into_the_staged_message_and_warnings", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseStaged), stagedNow(previewedWith(conflicts)))
		if got := describe(d.Effects); got != "Warn(EtcConflict) Warn(VarContentNotApplied) Report(Working/Staged)" || d.Next.Phase != daemon.PhaseStaged {
			t.Fatalf("effects %s → %s", got, d.Next.Phase)
		}
		r := reportOf(t, d.Effects)
		containsAll(t, "message", r.Message, "Staged "+aboutNew, "2 local edits shadow a new image default",
			"etcPolicy Keep", "app.conf, foo.conf", "3 paths the image ships are not on the host", "varPolicy Report",
			"lib/mytool, lib/mytool/state.db, log/mytool")
		if r.StagedImage != pinNew {
			t.Errorf("staged image %q", r.StagedImage)
		}
		w := warningsOf(d.Effects)
		containsAll(t, "EtcConflict event", w[reason.EtcConflict], "app.conf, foo.conf", aboutNew)
		containsAll(t, "VarContentNotApplied event", w[reason.VarContentNotApplied], "log/mytool", aboutNew)
		if p := d.Next.Preview; p == nil || p.EtcConflicts != 2 {
			t.Errorf("preview not kept in the state: %+v", p)
		}
	})
	t.Run("warnings_are_asked_for_once_even_when_the_report_is_written_again", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseStaged), stagedNow(previewedWith(conflicts)))
		d = m.Step(d.Next, stagedNow()) // a stale read of the Node: the report is not seen yet
		if got := describe(d.Effects); got != "Report(Working/Staged)" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("the_message_names_the_policies_that_will_act", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseStaged), stagedNow(previewedWith(conflicts), withPolicy(bothPolicies)))
		containsAll(t, "message", reportOf(t, d.Effects).Message, "etcPolicy ImageWins: the new defaults replace them",
			"/var/lib/layerd/etc-backup", "varPolicy CreateMissing: the missing ones are created after the boot")
	})
	t.Run("more_paths_than_listed_end_with_how_many_more_and_a_limit_says_so", func(t *testing.T) {
		s := conflicts
		s.EtcConflicts, s.Limit = 40, "max-files: stopped after 200000 entries"
		d := m.Step(in(daemon.PhaseStaged), stagedNow(previewedWith(s)))
		containsAll(t, "message", reportOf(t, d.Effects).Message, "40 local edits", "app.conf, foo.conf and 38 more.",
			"stopped at a limit (max-files: stopped after 200000 entries)")
	})
	t.Run("a_bad_pool_policy_value_is_named_in_the_message", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseStaged), stagedNow(previewedWith(daemon.HostFSSummary{}),
			withPolicy(daemon.Policy{Problem: `etcPolicy "imagewins": want Keep or ImageWins`})))
		containsAll(t, "message", reportOf(t, d.Effects).Message, `Pool policy: etcPolicy "imagewins"`)
	})
	t.Run("a_clean_preview_reports_without_warnings", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseStaged), stagedNow(previewedWith(daemon.HostFSSummary{})))
		if got := describe(d.Effects); got != "Report(Working/Staged)" {
			t.Errorf("effects %s", got)
		}
		if r := reportOf(t, d.Effects); r.Message != messages[nodestatus.PhaseStaged] {
			t.Errorf("message %q", r.Message)
		}
	})
	t.Run("a_failed_preview_warns_and_the_update_goes_on", func(t *testing.T) {
		obs := stagedNow(last(daemon.Outcome{Effect: "PreviewHost", Err: "etc preview: opening sysroot: permission denied",
			Code: reason.HostPreviewFailed}))
		d := m.Step(in(daemon.PhaseStaged), obs)
		if got := describe(d.Effects); got != "Warn(HostPreviewFailed) Report(Working/Staged)" || d.Next.Phase != daemon.PhaseStaged {
			t.Fatalf("effects %s → %s", got, d.Next.Phase)
		}
		r := reportOf(t, d.Effects)
		containsAll(t, "message", r.Message, "The /etc and /var preview failed: etc preview: opening sysroot: permission denied")
		// The report written, the update moves on to the slot.
		obs = stagedNow()
		obs.Node.Status.Phase, obs.Node.Status.Message, obs.Node.Status.StagedImage = nodestatus.PhaseStaged, r.Message, pinNew
		d = m.Step(d.Next, obs)
		if d.Next.Phase != daemon.PhaseWaitingForSlot {
			t.Errorf("after a failed preview: %s (%s)", d.Next.Phase, describe(d.Effects))
		}
	})
	t.Run("an_interrupted_preview_runs_again", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseStaged), stagedNow(last(daemon.Outcome{Effect: "PreviewHost", Err: "context canceled", Interrupted: true})))
		if got := describe(d.Effects); got != "PreviewHost("+digNew+")" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("a_long_message_is_reported_once", func(t *testing.T) {
		long := daemon.HostFSSummary{EtcConflicts: 10, VarNotApplied: 10}
		for i := range 10 {
			long.EtcConflictPaths = append(long.EtcConflictPaths, fmt.Sprintf("%s/app-%d.conf", strings.Repeat("d", 150), i))
			long.VarPaths = append(long.VarPaths, fmt.Sprintf("lib/%s/%d", strings.Repeat("v", 150), i))
		}
		w := newWorld(t, atRest())
		w.preview = long
		w.desire(imgNew)
		w.runUntil(inPhase(daemon.PhaseWaitingForSlot))
		n := 0
		for _, e := range w.effects {
			if e == "Report(Working/Staged)" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("Staged reported %d times, want once: %v", n, w.effects)
		}
	})
}

func TestImageWins(t *testing.T) {
	m := newMachine(t)
	t.Run("sets_the_local_files_aside_right_before_finalize", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseDraining), updating(nodestatus.PhaseDraining, last(daemon.Outcome{Effect: "Drain"}), withPolicy(imageWins)))
		want := "CheckInhibitors RecordBootID(" + bootFirst + ") Report(Working/Rebooting) ApplyEtcPolicy(" + digNew + ") Finalize(" + digNew + ")"
		if got := describe(d.Effects); got != want || d.Next.Phase != daemon.PhaseRebooting {
			t.Errorf("effects\n got %s\nwant %s", got, want)
		}
	})
	t.Run("keep_sets_nothing_aside", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseDraining), updating(nodestatus.PhaseDraining, last(daemon.Outcome{Effect: "Drain"})))
		if got := describe(d.Effects); strings.Contains(got, "ApplyEtcPolicy") || strings.Contains(got, "RestoreEtc") {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("a_backup_for_the_digest_being_finalized_is_kept", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseRebooting), updating(nodestatus.PhaseRebooting, withPolicy(imageWins), withBackup(digNew)))
		if got := describe(d.Effects); got != "CheckInhibitors ApplyEtcPolicy("+digNew+") Finalize("+digNew+")" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("a_backup_of_an_earlier_attempt_is_put_back_when_the_policy_is_keep_by_now", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseRebooting), updating(nodestatus.PhaseRebooting, withBackup(digNew)))
		if got := describe(d.Effects); got != "CheckInhibitors RestoreEtc("+digNew+") Finalize("+digNew+")" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("a_failed_application_degrades_puts_the_files_back_and_keeps_the_staged_deployment", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseRebooting), updating(nodestatus.PhaseRebooting, withPolicy(imageWins), withBackup(digNew),
			failed("ApplyEtcPolicy", reason.EtcPolicyFailed)))
		if got := describe(d.Effects); got != "Report(Degraded/EtcPolicyFailed) RestoreEtc("+digNew+") Uncordon ReleaseSlot" {
			t.Errorf("effects %s", got)
		}
		if d.Next.Phase != daemon.PhaseDegraded || d.RetryAfter <= 0 {
			t.Errorf("next %s after %s, want Degraded with a backoff", d.Next.Phase, d.RetryAfter)
		}
	})
	t.Run("a_failed_finalize_puts_the_files_back", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseRebooting), updating(nodestatus.PhaseRebooting, withPolicy(imageWins), withBackup(digNew),
			failed("Finalize", reason.FinalizeFailed)))
		if got := describe(d.Effects); got != "Report(Degraded/FinalizeFailed) RestoreEtc("+digNew+") Uncordon ReleaseSlot" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("a_lost_slot_puts_the_files_back_while_waiting", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseRebooting), updating(nodestatus.PhaseRebooting, withPolicy(imageWins), withBackup(digNew),
			func(o *daemon.Observed) { o.SlotHeld = false }))
		if got := describe(d.Effects); d.Next.Phase != daemon.PhaseWaitingForSlot || !strings.Contains(got, "RestoreEtc("+digNew+") AcquireSlot") {
			t.Errorf("%s: %s", d.Next.Phase, got)
		}
	})
	t.Run("after_a_crash_a_backup_of_a_digest_not_booted_is_put_back", func(t *testing.T) {
		for name, obs := range map[string]daemon.Observed{
			"done":               func() daemon.Observed { o := atRest(); o.Host.EtcBackups = []string{digNew}; return o }(),
			"waiting_for_slot":   updating(nodestatus.PhaseWaitingForSlot, withBackup(digNew)),
			"booted_wrong_image": updating(nodestatus.PhaseRebooting, withBackup(digNew), func(o *daemon.Observed) { o.Node.BootID = "boot-2" }),
		} {
			d := m.Step(daemon.State{}, obs)
			if got := describe(d.Effects); !strings.Contains(got, "RestoreEtc("+digNew+")") {
				t.Errorf("%s: derived %s, effects %s", name, d.Next.Phase, got)
			}
		}
	})
	t.Run("after_a_crash_before_finalizing_it_finalizes_with_the_files_still_aside", func(t *testing.T) {
		d := m.Step(daemon.State{}, updating(nodestatus.PhaseRebooting, withPolicy(imageWins), withBackup(digNew)))
		if got := describe(d.Effects); got != "CheckInhibitors ApplyEtcPolicy("+digNew+") Finalize("+digNew+")" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("the_backup_of_the_booted_digest_is_the_record_and_stays", func(t *testing.T) {
		o := atRest()
		o.Host.EtcBackups = []string{digOld}
		if d := m.Step(in(daemon.PhaseDone, func(s *daemon.State) { s.Target = targets[imgOld] }), o); len(d.Effects) != 0 {
			t.Errorf("effects %s", describe(d.Effects))
		}
	})
}

func TestCreateMissingVar(t *testing.T) {
	m := newMachine(t)
	t.Run("after_the_boot_creates_the_missing_content_then_confirms", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseConfirming), updating(nodestatus.PhaseConfirming, withPolicy(createMissing)))
		if got := describe(d.Effects); got != "CreateMissingVar("+digNew+")" || d.Next.Phase != daemon.PhaseConfirming {
			t.Fatalf("effects %s", got)
		}
		d = m.Step(d.Next, updating(nodestatus.PhaseConfirming, withPolicy(createMissing),
			last(daemon.Outcome{Effect: "CreateMissingVar", HostFS: &daemon.HostFSSummary{VarCreated: 3}})))
		if got := describe(d.Effects); got != "Uncordon ReleaseSlot Report(Done)" {
			t.Errorf("effects %s", got)
		}
	})
	t.Run("what_it_left_untouched_is_a_warning", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseConfirming), updating(nodestatus.PhaseConfirming, withPolicy(createMissing),
			last(daemon.Outcome{Effect: "CreateMissingVar", HostFS: &daemon.HostFSSummary{VarCreated: 2, VarNotApplied: 1,
				VarPaths: []string{"lib/mytool/state.db"}}})))
		if got := describe(d.Effects); got != "Warn(VarContentNotApplied)" {
			t.Fatalf("effects %s", got)
		}
		containsAll(t, "warning", warningsOf(d.Effects)[reason.VarContentNotApplied], "created 2 paths", "1 path the image ships was not created",
			"lib/mytool/state.db")
		d = m.Step(d.Next, updating(nodestatus.PhaseConfirming, withPolicy(createMissing), last(daemon.Outcome{Effect: "Warn"})))
		if d.Next.Phase != daemon.PhaseDone {
			t.Errorf("next %s (%s), want Done", d.Next.Phase, describe(d.Effects))
		}
	})
	t.Run("a_failure_is_a_warning_and_the_update_is_done", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseConfirming), updating(nodestatus.PhaseConfirming, withPolicy(createMissing),
			failed("CreateMissingVar", reason.VarContentNotApplied)))
		if got := describe(d.Effects); got != "Warn(VarContentNotApplied)" {
			t.Fatalf("effects %s", got)
		}
		d = m.Step(d.Next, updating(nodestatus.PhaseConfirming, withPolicy(createMissing)))
		if d.Next.Phase != daemon.PhaseDone {
			t.Errorf("next %s (%s), want Done", d.Next.Phase, describe(d.Effects))
		}
	})
	t.Run("report_creates_nothing", func(t *testing.T) {
		d := m.Step(in(daemon.PhaseConfirming), updating(nodestatus.PhaseConfirming))
		if got := describe(d.Effects); got != "Uncordon ReleaseSlot Report(Done)" {
			t.Errorf("effects %s", got)
		}
	})
}

// TestHostFSFlows runs whole updates in the simulated world with the policies.
func TestHostFSFlows(t *testing.T) {
	t.Run("image_wins_finalizes_with_the_edits_in_the_backup_and_creates_var_content", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.obs.Policy = bothPolicies
		w.preview, w.created = conflicts, daemon.HostFSSummary{VarCreated: 3}
		w.desire(imgNew)
		w.run()
		checkDoneOn(t, w, targets[imgNew])
		if w.etcLocal || !slices.Equal(w.backedUp, []string{digNew}) || len(w.obs.Host.EtcBackups) != 0 {
			t.Errorf("etc local %t, backed up %v, pending %v; want the edits in the backup of %s", w.etcLocal, w.backedUp, w.obs.Host.EtcBackups, digNew)
		}
		for _, want := range []string{"Warn(EtcConflict)", "Warn(VarContentNotApplied)", "ApplyEtcPolicy(" + digNew + ")", "CreateMissingVar(" + digNew + ")"} {
			if !slices.Contains(w.effects, want) {
				t.Errorf("no %s in %v", want, w.effects)
			}
		}
		if slices.Contains(w.effects, "RestoreEtc("+digNew+")") {
			t.Errorf("restored although the digest was booted: %v", w.effects)
		}
	})
	t.Run("image_wins_and_a_failing_finalize_give_the_edits_back_and_a_retry_succeeds", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.obs.Policy = imageWins
		w.desire(imgNew)
		w.failing("Finalize", reason.FinalizeFailed)
		w.runUntil(inPhase(daemon.PhaseDegraded))
		w.step()
		if !w.etcLocal || len(w.obs.Host.EtcBackups) != 0 {
			t.Errorf("after the failed finalize: etc local %t, pending backups %v", w.etcLocal, w.obs.Host.EtcBackups)
		}
		if w.obs.SlotHeld || w.obs.Node.Unschedulable || w.obs.Host.StagedDigest != digNew {
			t.Errorf("slot %t, cordon %t, staged %q; want released, uncordoned, kept", w.obs.SlotHeld, w.obs.Node.Unschedulable, w.obs.Host.StagedDigest)
		}
		delete(w.fail, "Finalize")
		w.run()
		checkDoneOn(t, w, targets[imgNew])
		if w.etcLocal || !slices.Equal(w.backedUp, []string{digNew}) {
			t.Errorf("after the retry: etc local %t, backed up %v", w.etcLocal, w.backedUp)
		}
	})
	t.Run("image_wins_and_a_boot_into_the_old_deployment_give_the_edits_back", func(t *testing.T) {
		w := newWorld(t, atRest())
		w.obs.Policy = imageWins
		w.desire(imgNew)
		w.wrongBoot = true
		w.run()
		if st := w.obs.Node.Status; st.Reason != reason.BootedWrongImage || !w.etcLocal || len(w.obs.Host.EtcBackups) != 0 {
			t.Errorf("reason %s, etc local %t, pending backups %v", st.Reason, w.etcLocal, w.obs.Host.EtcBackups)
		}
	})
	t.Run("killed_anywhere_with_both_policies_it_converges_with_one_reboot", func(t *testing.T) {
		ref := newWorld(t, atRest())
		ref.obs.Policy, ref.preview = bothPolicies, conflicts
		ref.desire(imgNew)
		ref.run()
		for k := 1; k <= len(ref.effects); k++ {
			w := newWorld(t, atRest())
			w.obs.Policy, w.preview = bothPolicies, conflicts
			w.desire(imgNew)
			w.crashAt = k
			w.run()
			checkDoneOn(t, w, targets[imgNew])
			if w.etcLocal || !slices.Equal(w.backedUp, []string{digNew}) {
				t.Errorf("killed after %s: etc local %t, backed up %v", ref.effects[k-1], w.etcLocal, w.backedUp)
			}
		}
	})
}
