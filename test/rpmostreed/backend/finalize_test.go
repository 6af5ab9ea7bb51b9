package backend

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFinalizationLock covers lock-finalization: an unplanned boot drops a
// locked staged deployment, FinalizeDeployment unlocks it for the next boot.
func TestFinalizationLock(t *testing.T) {
	n := newNode(t, nil)
	ds, _ := n.deployments()
	v1sum := ds[0]["checksum"].Value().(string)
	v2sum := n.commitRef("2", etcV2)

	t.Run("lock-finalization locks for libostree but, as in rpm-ostree, shows no finalization-locked", func(t *testing.T) {
		timed(t, "stage v2 locked", func() error {
			return n.b.Stage(n.ctx, StageRequest{LockFinalization: true}, &recorder{})
		})
		ds, _ := n.deployments()
		if ds[0]["staged"].Value() != true {
			t.Fatalf("element 0 = %v", ds[0])
		}
		if _, ok := ds[0]["finalization-locked"]; ok {
			t.Error("finalization-locked reported for rpm-ostree's own lock")
		}
		if _, err := os.Stat(filepath.Join(n.runDir, stagedLockedFile)); err != nil {
			t.Errorf("libostree's lock file: %v", err)
		}
		n.assertStatusAgrees()
	})
	t.Run("an unplanned boot with a locked staged deployment boots v1 again", func(t *testing.T) {
		res := n.boot()
		if !res.SkippedLocked || res.Finalized || res.Booted.Checksum != v1sum {
			t.Fatalf("boot %+v", res)
		}
		ds, booted := n.deployments()
		if len(ds) != 1 || booted != 0 || ds[0]["checksum"].Value() != v1sum {
			t.Fatalf("deployments %v", ds)
		}
		n.assertStatusAgrees()
	})
	t.Run("finalize checks the checksum, unlocks, and the next boot applies it", func(t *testing.T) {
		if err := n.b.Stage(n.ctx, StageRequest{LockFinalization: true}, &recorder{}); err != nil {
			t.Fatal(err)
		}
		if err := n.b.Finalize(n.ctx, FinalizeRequest{}); err == nil || err.Error() != "Missing expected checksum" {
			t.Errorf("without checksum: %v", err)
		}
		want := "Expected staged base checksum " + v1sum + ", but found " + v2sum
		if err := n.b.Finalize(n.ctx, FinalizeRequest{Checksum: v1sum}); err == nil || err.Error() != want {
			t.Errorf("wrong checksum: %v", err)
		}
		if err := n.b.Finalize(n.ctx, FinalizeRequest{Checksum: v2sum}); err != nil {
			t.Fatal(err)
		}
		ds, _ := n.deployments()
		if _, ok := ds[0]["finalization-locked"]; ok {
			t.Error("still locked after finalize")
		}
		res := n.boot()
		if !res.Finalized || res.Booted.Checksum != v2sum {
			t.Fatalf("boot %+v", res)
		}
	})
	t.Run("finalize without a staged deployment fails", func(t *testing.T) {
		err := n.b.Finalize(n.ctx, FinalizeRequest{Checksum: v2sum})
		if err == nil || err.Error() != "No pending staged deployment found" {
			t.Errorf("err = %v", err)
		}
	})
	n.commitRef("3", etcV2)
	t.Run("a legacy lock file made by another tool shows finalization-locked", func(t *testing.T) {
		if err := n.b.Stage(n.ctx, StageRequest{}, &recorder{}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.runDir, stagedLockedFile), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		ds, _ := n.deployments()
		wantSig(t, ds[0], "finalization-locked", "b")
		if err := n.b.Finalize(n.ctx, FinalizeRequest{AllowMissingChecksum: true}); err != nil {
			t.Errorf("finalize of a legacy-locked deployment: %v", err)
		}
	})
	t.Run("cleanup of a locked staged deployment removes it and its lock", func(t *testing.T) {
		if err := n.b.Stage(n.ctx, StageRequest{LockFinalization: true}, &recorder{}); err != nil {
			t.Fatal(err)
		}
		if err := n.b.Cleanup(n.ctx, []string{CleanupPendingDeploy}); err != nil {
			t.Fatal(err)
		}
		ds, booted := n.deployments()
		if len(ds) != 2 || booted != 0 || ds[0]["checksum"].Value() != v2sum {
			t.Fatalf("deployments %v", ds)
		}
		if _, err := os.Stat(filepath.Join(n.runDir, stagedLockedFile)); !os.IsNotExist(err) {
			t.Errorf("lock file: %v", err)
		}
		n.assertStatusAgrees()
	})
}

// TestEtcMergeAtShutdown checks the 3-way /etc merge happens at boot
// (finalize) time: an edit made after staging survives, new defaults arrive.
func TestEtcMergeAtShutdown(t *testing.T) {
	n := newNode(t, nil)
	n.commitRef("2", etcV2)
	timed(t, "stage v2", func() error { return n.b.Stage(n.ctx, StageRequest{}, &recorder{}) })
	// Local edits after staging, in the running /etc.
	if err := os.WriteFile(n.bootedEtc("app.conf"), []byte("level=local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.bootedEtc("local.conf"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := n.boot()
	if !res.Finalized {
		t.Fatalf("boot %+v", res)
	}
	t.Run("a local edit made after staging survives", func(t *testing.T) {
		if got := readFile(t, n.bootedEtc("app.conf")); got != "level=local\n" {
			t.Errorf("app.conf = %q", got)
		}
		if got := readFile(t, n.bootedEtc("local.conf")); got != "mine\n" {
			t.Errorf("local.conf = %q", got)
		}
	})
	t.Run("untouched files take the new defaults and new files arrive", func(t *testing.T) {
		if got := readFile(t, n.bootedEtc("motd")); got != "motd v2\n" {
			t.Errorf("motd = %q", got)
		}
		if got := readFile(t, n.bootedEtc("new.conf")); got != "new in v2\n" {
			t.Errorf("new.conf = %q", got)
		}
	})
}
