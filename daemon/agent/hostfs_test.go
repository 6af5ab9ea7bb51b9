package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/rpmostree"
)

// The agent's hostfs effects over the real pkg/hostfs, on a host root in a temporary
// directory: v2 changes the default of /etc/app.conf (level=1 → level=2).

func doneOn(dig string) func(nodestatus.Status) bool {
	return func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+dig
	}
}

func (f *fixture) hasEvent(reasonAndText ...string) bool {
	for _, e := range f.events() {
		all := true
		for _, s := range reasonAndText {
			all = all && strings.Contains(e, s)
		}
		if all {
			return true
		}
	}
	return false
}

func (f *fixture) readReport() hostfs.Report {
	f.t.Helper()
	var rep hostfs.Report
	if err := json.Unmarshal([]byte(f.read(f.report)), &rep); err != nil {
		f.t.Fatal(err)
	}
	return rep
}

func (f *fixture) edited() {
	f.write(filepath.Join(f.root, "etc/app.conf"), "level=local\n")
}

func (f *fixture) shipsVar() {
	f.write(filepath.Join(f.deploymentDir(v2Dig), "var/lib/mytool/state.db"), "db v2\n")
	f.mkdir(filepath.Join(f.deploymentDir(v2Dig), "var/log/mytool"))
}

func TestAgentPreview(t *testing.T) {
	t.Run("a_conflict_and_missing_var_content_are_reported_before_the_reboot", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.edited()
		f.shipsVar()
		f.holdSlot("node-9") // the update stops before the reboot
		f.start()
		f.waitFor("WaitingForSlot", func(s nodestatus.Status) bool { return s.Phase == nodestatus.PhaseWaitingForSlot })
		var staged string
		for _, m := range f.messages() {
			if strings.HasPrefix(m, "Staged ") {
				staged = m
			}
		}
		for _, want := range []string{"1 local edit shadows a new image default", "etcPolicy Keep", ": app.conf.",
			"3 paths the image ships are not on the host", "lib/mytool, lib/mytool/state.db, log/mytool"} {
			if !strings.Contains(staged, want) {
				t.Errorf("Staged message %q lacks %q", staged, want)
			}
		}
		if !f.hasEvent("EtcConflict: ", "app.conf") || !f.hasEvent("VarContentNotApplied: ", "log/mytool") {
			t.Errorf("events %q, want EtcConflict naming app.conf and VarContentNotApplied naming log/mytool", f.events())
		}
		rep := f.readReport()
		if s := rep.Summary; s.EtcConflicts != 1 || s.EtcConflictPaths[0] != "app.conf" || s.VarNotApplied != 3 || rep.Etc == nil || rep.Var == nil {
			t.Errorf("report %+v", rep.Summary)
		}
		if got := f.read(filepath.Join(f.root, "etc/app.conf")); got != "level=local\n" {
			t.Errorf("Keep changed /etc/app.conf to %q", got)
		}
		if m := f.scrape(); !strings.Contains(m, `layerd_errors_total{reason="EtcConflict"} 1`+"\n") {
			t.Errorf("/metrics does not count the EtcConflict warning once: %s", grepLines(m, "layerd_errors_total"))
		}
	})

	t.Run("a_failed_preview_is_a_warning_and_the_update_goes_on", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		if err := os.RemoveAll(f.deploymentDir(v2Dig)); err != nil {
			t.Fatal(err)
		}
		f.start()
		f.waitFor("Done on v2", doneOn(v2Dig))
		if !f.hasEvent("HostPreviewFailed: ", "preview of "+repo+":v2") {
			t.Errorf("events %q, want HostPreviewFailed", f.events())
		}
	})

	t.Run("a_bad_policy_value_is_named_and_the_default_used", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.edited()
		f.poolPolicy("default:\n  etcPolicy: imagewins\n")
		f.start()
		f.waitFor("Done on v2", doneOn(v2Dig))
		found := false
		for _, m := range f.messages() {
			found = found || strings.Contains(m, `Pool policy: etcPolicy "imagewins" is an invalid pool policy value`)
		}
		if !found {
			t.Errorf("no message names the bad policy: %q", f.messages())
		}
		if got := f.read(filepath.Join(f.root, "etc/app.conf")); got != "level=local\n" {
			t.Errorf("/etc/app.conf %q: the default (Keep) must leave it", got)
		}
	})
}

func TestAgentEtcPolicy(t *testing.T) {
	backup := func(f *fixture, dig string) string {
		return filepath.Join(f.root, "var", hostfs.BackupDir, dig)
	}
	t.Run("image_wins_sets_the_edit_aside_and_the_booted_default_back_before_finalizing", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.edited()
		f.poolPolicy("default:\n  etcPolicy: ImageWins\n")
		f.start()
		f.waitFor("Done on v2", doneOn(v2Dig))
		// The fake host does not merge /etc: what finalize found is still there.
		if got := f.read(filepath.Join(f.root, "etc/app.conf")); got != "level=1\n" {
			t.Errorf("/etc/app.conf %q at finalize, want the booted default so the merge takes the new one", got)
		}
		if got := f.read(filepath.Join(backup(f, v2Dig), "files/app.conf")); got != "level=local\n" {
			t.Errorf("backup %q, want the local edit", got)
		}
		if n := countPrefix(host.Calls(), "FinalizeDeployment"); n != 1 {
			t.Errorf("%d finalize calls", n)
		}
	})

	t.Run("image_wins_and_a_failing_finalize_put_the_edit_back", func(t *testing.T) {
		host := &fakeHost{booted: baseDig, finalizeErr: &rpmostree.TxnError{Method: "FinalizeDeployment", Message: "injected failure"}}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.edited()
		f.poolPolicy("default:\n  etcPolicy: ImageWins\n")
		f.start()
		st := f.waitFor("Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.FinalizeFailed || !strings.Contains(st.Message, "injected failure") {
			t.Errorf("reason %s message %q, want FinalizeFailed with rpm-ostree's message", st.Reason, st.Message)
		}
		retired := func() bool { _, err := os.Stat(backup(f, v2Dig)); return os.IsNotExist(err) }
		deadline := time.Now().Add(5 * time.Second)
		for !retired() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !retired() {
			t.Errorf("backup not retired: no restore after the failed finalize")
		}
		if got := f.read(filepath.Join(f.root, "etc/app.conf")); got != "level=local\n" {
			t.Errorf("/etc/app.conf %q after the failed finalize, want the local edit back", got)
		}
		if calls := host.Calls(); countPrefix(calls, "Cleanup") != 0 {
			t.Errorf("host calls %v: the staged deployment must be kept for the retry", calls)
		}
	})

	t.Run("a_backup_of_a_digest_not_booted_is_put_back_at_start", func(t *testing.T) {
		host := &fakeHost{booted: baseDig, staged: v2Dig}
		f := newFixture(t, readyNode(""), host)
		f.edited()
		// A crashed ImageWins attempt: the edit set aside, the booted default in /etc.
		h, err := hostfs.New(hostfs.Options{HostRoot: f.root, Log: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		booted := hostfs.DeploymentRef{OSName: "fcos", Checksum: baseDig[7:]}
		rep, err := h.PreviewEtc(context.Background(), booted, hostfs.DeploymentRef{OSName: "fcos", Checksum: v2Dig[7:]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.EtcBackupAndApply(context.Background(), rep, v2Dig); err != nil {
			t.Fatal(err)
		}
		if got := f.read(filepath.Join(f.root, "etc/app.conf")); got != "level=1\n" {
			t.Fatalf("setup: /etc/app.conf %q", got)
		}
		f.start()
		retired := func() bool {
			_, err := os.Stat(filepath.Join(f.root, "var", hostfs.BackupDir, v2Dig))
			return os.IsNotExist(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !retired() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := f.read(filepath.Join(f.root, "etc/app.conf")); got != "level=local\n" {
			t.Errorf("/etc/app.conf %q, want the local edit back", got)
		}
	})
}

func TestAgentVarPolicy(t *testing.T) {
	t.Run("create_missing_creates_what_the_image_ships_after_the_boot", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.shipsVar()
		f.poolPolicy("default:\n  varPolicy: CreateMissing\n")
		f.start()
		f.waitFor("Done on v2", doneOn(v2Dig))
		if got := f.read(filepath.Join(f.root, "var/lib/mytool/state.db")); got != "db v2\n" {
			t.Errorf("state.db %q", got)
		}
		if fi, err := os.Stat(filepath.Join(f.root, "var/log/mytool")); err != nil || !fi.IsDir() {
			t.Errorf("log/mytool: %v %v", fi, err)
		}
		created := 0
		for _, r := range f.readReport().VarResults {
			if r.Action == hostfs.Created {
				created++
			}
		}
		if created != 3 {
			t.Errorf("report: %d paths created, want 3 (lib/mytool, its state.db, log/mytool): %+v", created, f.readReport().VarResults)
		}
	})

	t.Run("an_existing_different_file_is_left_untouched_and_reported", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.shipsVar()
		f.write(filepath.Join(f.root, "var/lib/mytool/state.db"), "the host's own db\n")
		f.poolPolicy("default:\n  varPolicy: CreateMissing\n")
		f.start()
		f.waitFor("Done on v2", doneOn(v2Dig))
		if got := f.read(filepath.Join(f.root, "var/lib/mytool/state.db")); got != "the host's own db\n" {
			t.Errorf("state.db %q, want it untouched", got)
		}
		if !f.hasEvent("VarContentNotApplied: After the boot", "lib/mytool/state.db") {
			t.Errorf("events %q, want a warning naming state.db after the boot", f.events())
		}
	})

	t.Run("report_creates_nothing", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.shipsVar()
		f.start()
		f.waitFor("Done on v2", doneOn(v2Dig))
		if _, err := os.Lstat(filepath.Join(f.root, "var/lib/mytool")); !os.IsNotExist(err) {
			t.Errorf("lib/mytool created under varPolicy Report: %v", err)
		}
	})
}

func TestAgentEtcDrift(t *testing.T) {
	t.Run("the_drift_gauge_is_set_at_start", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(""), host)
		f.edited()
		f.write(filepath.Join(f.root, "etc/mine.conf"), "local\n")
		f.start()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(f.scrape(), "layerd_etc_drift_files 2\n") {
			if time.Now().After(deadline) {
				t.Fatalf("layerd_etc_drift_files is not 2")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func grepLines(s, sub string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}
