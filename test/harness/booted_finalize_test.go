package harness_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/systemd"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// TestFinalizeFailureIsReadFromTheBootedNodesJournal: on a booted-tier node a staged
// deployment whose finalization fails at shutdown (the node's /boot made immutable, so ostree
// cannot write the new boot entries) leaves the node booted into the old deployment after a
// real reboot; systemd.JournalctlFinalizeLog reads the failure from the node's persistent
// journal the way a DaemonSet pod reads <host-root>/var/log/journal.
func TestFinalizeFailureIsReadFromTheBootedNodesJournal(t *testing.T) {
	requireRoot(t)
	w := harness.Start(t, harness.Options{Nodes: 1, Booted: 1, Log: testWriter{t}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	node := w.Nodes[0]
	nsp := node.Nspawn()
	journalDir := filepath.Join(node.Sysroot.StaterootVar(), "log", "journal")
	flog, err := systemd.NewJournalctlFinalizeLog(journalDir, systemd.ExecRunner{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the_first_boot_has_no_previous_boot_to_report", func(t *testing.T) {
		if msg, err := flog.PreviousBootFinalizeError(ctx); err != nil || msg != "" {
			t.Errorf("PreviousBootFinalizeError = %q, %v; want none", msg, err)
		}
	})

	t.Run("a_clean_reboot_reports_no_finalize_error", func(t *testing.T) {
		if err := node.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		if msg, err := flog.PreviousBootFinalizeError(ctx); err != nil || msg != "" {
			t.Errorf("PreviousBootFinalizeError = %q, %v; want none", msg, err)
		}
	})

	t.Run("a_failed_finalization_is_reported_and_the_old_deployment_boots", func(t *testing.T) {
		img, err := w.BootedImage(ctx, osimage.Spec{Repo: harness.BootedBaseRepo, Tag: "finalize-fails", Version: "2.0",
			Files: map[string]osimage.File{"usr/lib/layerd-test/finalize": {Content: "never booted\n"}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
			t.Fatal(err)
		}
		client := connect(ctx, t, node)
		defer client.Close()
		if err := client.Rebase(ctx, "ostree-image-signed:docker://"+img.Pinned, rpmostree.RebaseOptions{LockFinalization: true}); err != nil {
			t.Fatal(err)
		}
		before, err := node.Booted()
		if err != nil {
			t.Fatal(err)
		}
		boot := filepath.Join(node.Sysroot.Path, "boot")
		if out, err := exec.Command("chattr", "+i", boot).CombinedOutput(); err != nil {
			t.Fatalf("chattr +i %s: %v: %s", boot, err, out)
		}
		defer func() {
			if out, err := exec.Command("chattr", "-i", boot).CombinedOutput(); err != nil {
				t.Errorf("chattr -i %s: %v: %s", boot, err, out)
			}
		}()
		reboots := node.Reboots()
		if err := client.FinalizeDeployment(ctx, img.Digest.String(), rpmostree.FinalizeOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := node.WaitRebooted(ctx, reboots+1); err != nil {
			t.Fatal(err)
		}
		after, err := node.Booted()
		if err != nil || after.Checksum != before.Checksum {
			t.Errorf("booted %s after the failed finalization (%v), want the old %s", after.Checksum, err, before.Checksum)
		}
		began := time.Now()
		msg, err := flog.PreviousBootFinalizeError(ctx)
		fmt.Printf("BENCH previous-boot-finalize-error: %.3fs\n", time.Since(began).Seconds())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("PreviousBootFinalizeError: %s", msg)
		if !strings.Contains(msg, "error:") || !strings.Contains(msg, "unit result: exit-code") {
			j, _ := node.Journal(ctx, "-b", "-1", "-u", systemd.FinalizeUnit, "-o", "verbose")
			t.Errorf("PreviousBootFinalizeError = %q; the unit's journal of the previous boot:\n%s", msg, j)
		}
		if nsp.BootID() == "" {
			t.Error("the node is down")
		}
	})
}
