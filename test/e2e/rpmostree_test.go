package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/harness"
)

// TestDeploymentLifecycleThroughTheBox drives node-1 through a whole update with the production
// client over the node's real dbus-daemon: refuse an unsigned image, stage a signed one by
// digest, finalize and reboot into it (with /etc merged), roll back, show it with `layerd
// status` in a pod, and clean up. Each step needs the previous one.
func TestDeploymentLifecycleThroughTheBox(t *testing.T) {
	w := world(t)
	n := w.Nodes[0]
	v2, unsigned := imageV2(t, w), imageUnsigned(t, w)
	c := connect(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var stageTime time.Duration

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("an_unsigned_image_is_refused_by_the_containers_policy_and_nothing_is_staged", func(t *testing.T) {
		before := status(t, c)
		err := c.Rebase(ctx, signedRefspec(unsigned), rpmostree.RebaseOptions{LockFinalization: true})
		var te *rpmostree.TxnError
		if !errors.As(err, &te) {
			t.Fatalf("Rebase of an unsigned image: got %v, want a failed transaction", err)
		}
		// containers/image's policy refusal, as rpm-ostree (skopeo) reports it.
		if !strings.Contains(te.Message, "A signature was required, but no signature exists") {
			t.Errorf("failure message %q does not say the signature is missing", te.Message)
		}
		t.Logf("refused: %s", te.Message)
		after := status(t, c)
		if after.Staged != nil {
			t.Errorf("staged deployment %s after a refused image", after.Staged.ID)
		}
		if got, want := ids(after.Deployments), ids(before.Deployments); !slices.Equal(got, want) {
			t.Errorf("deployments changed: %v → %v", want, got)
		}
		if after.ActiveTransaction != nil {
			t.Errorf("transaction still active: %+v", after.ActiveTransaction)
		}
	})

	step("a_signed_image_stages_by_digest_with_progress_events", func(t *testing.T) {
		var events []rpmostree.Event
		began := time.Now()
		err := c.Rebase(ctx, signedRefspec(v2), rpmostree.RebaseOptions{
			LockFinalization: true, InitiatingCommandLine: "layerd e2e stage",
			Progress: func(e rpmostree.Event) { events = append(events, e) },
		})
		stageTime = time.Since(began)
		if err != nil {
			t.Fatalf("Rebase %s: %v", signedRefspec(v2), err)
		}
		var msgs, pcts, dls int
		var maxBytes uint64
		for _, e := range events {
			switch e := e.(type) {
			case rpmostree.Message:
				msgs++
			case rpmostree.PercentProgress:
				pcts++
			case rpmostree.DownloadProgress:
				dls++
				maxBytes = max(maxBytes, e.Bytes)
			}
		}
		if msgs == 0 || pcts == 0 || dls == 0 {
			t.Errorf("progress: %d Message, %d PercentProgress, %d DownloadProgress; want each at least once (events %v)", msgs, pcts, dls, events)
		}
		if maxBytes == 0 {
			t.Errorf("DownloadProgress never reported bytes")
		}
		t.Logf("staged in %v: %d events (%d messages, %d percent, %d download, %d bytes)", stageTime.Round(time.Millisecond), len(events), msgs, pcts, dls, maxBytes)
	})

	step("the_staged_deployment_carries_rpm-ostree's_keys_with_their_types", func(t *testing.T) {
		st := status(t, c)
		if st.Staged == nil || len(st.Deployments) == 0 || !st.Deployments[0].Staged {
			t.Fatalf("no staged deployment first in %v", ids(st.Deployments))
		}
		s := st.Staged
		if s.ContainerImageReferenceDigest != v2.Digest.String() {
			t.Errorf("staged digest %q, want %s", s.ContainerImageReferenceDigest, v2.Digest)
		}
		if s.ContainerImageReference != signedRefspec(v2) {
			t.Errorf("staged container-image-reference %q, want %q", s.ContainerImageReference, signedRefspec(v2))
		}
		if s.Version != "2.0" || s.Timestamp == 0 || s.OSName != "fcos" || s.Booted {
			t.Errorf("staged: version %q, timestamp %d, osname %q, booted %v", s.Version, s.Timestamp, s.OSName, s.Booted)
		}
		if want := fmt.Sprintf("%s-%s.%d", s.OSName, s.Checksum, s.Serial); s.ID != want {
			t.Errorf("staged id %q, want %q", s.ID, want)
		}
		if st.Default == nil || st.Default.ID != s.ID {
			t.Errorf("default deployment %v is not the staged one", st.Default)
		}
		if digestOf(st.Booted) != w.Base.Digest.String() || !st.Booted.Booted {
			t.Errorf("booted %s, want the base %s", digestOf(st.Booted), w.Base.Digest)
		}
		// The wire types, read without the client's parser.
		dicts := rawDeployments(t, n)
		want := map[string]string{
			"id": "s", "osname": "s", "checksum": "s", "serial": "i", "timestamp": "t", "version": "s",
			"booted": "b", "staged": "b", "pinned": "b", "container-image-reference": "s",
			"container-image-reference-digest": "s", "base-commit-meta": "a{sv}",
		}
		for key, sig := range want {
			v, ok := dicts[0][key]
			if !ok {
				t.Errorf("staged dict has no %q (keys %v)", key, keys(dicts[0]))
				continue
			}
			if got := v.Signature().String(); got != sig {
				t.Errorf("staged %q has D-Bus type %q, want %q", key, got, sig)
			}
		}
		if _, ok := dicts[0]["serial"].Value().(int32); !ok {
			t.Errorf("serial is a %T, want int32", dicts[0]["serial"].Value())
		}
		if _, ok := dicts[0]["timestamp"].Value().(uint64); !ok {
			t.Errorf("timestamp is a %T, want uint64", dicts[0]["timestamp"].Value())
		}
		if staged, _ := dicts[0]["staged"].Value().(bool); !staged {
			t.Errorf("first deployment dict has staged=%v", dicts[0]["staged"])
		}
		// The new tree is on disk, its /etc default in usr/etc.
		dir := deploymentDir(n, s)
		if b, err := os.ReadFile(filepath.Join(dir, "usr/bin/mytool")); err != nil || string(b) != mytoolV2 {
			t.Errorf("staged tree's usr/bin/mytool: %q, %v", b, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "usr/etc/motd")); err != nil || string(b) != motdV2 {
			t.Errorf("staged tree's usr/etc/motd: %q, %v", b, err)
		}
	})

	step("restaging_the_same_image_is_idempotent_and_starts_no_transaction", func(t *testing.T) {
		// rpm-ostree's own answer to the same refspec: the trap StageImage avoids.
		err := c.Rebase(ctx, signedRefspec(v2), rpmostree.RebaseOptions{LockFinalization: true})
		var te *rpmostree.TxnError
		if !errors.As(err, &te) || te.Message != "Old and new refs are equal: "+signedRefspec(v2) {
			t.Errorf("Rebase to the staged refspec: %v, want \"Old and new refs are equal: %s\"", err, signedRefspec(v2))
		}
		before := status(t, c)
		created := countInLog(t, n, "transaction created")
		if created == 0 {
			t.Fatalf("the stand-in log %s records no transactions: cannot tell whether a re-stage starts one", standInLog(n))
		}
		res, err := c.StageImage(ctx, v2.Pinned, rpmostree.RebaseOptions{LockFinalization: true})
		if err != nil {
			t.Fatalf("StageImage %s again: %v", v2.Pinned, err)
		}
		if res.Started || res.Deployment == nil || res.Deployment.ID != before.Staged.ID {
			t.Errorf("StageImage again: started %v, deployment %v; want no transaction and %s", res.Started, res.Deployment, before.Staged.ID)
		}
		if got := countInLog(t, n, "transaction created"); got != created {
			t.Errorf("the stand-in created %d transactions for an idempotent re-stage", got-created)
		}
		if p, err := c.ActiveTransactionPath(ctx); err != nil || p != "" {
			t.Errorf("ActiveTransactionPath %q, %v; want idle", p, err)
		}
		if after := status(t, c); !slices.Equal(ids(after.Deployments), ids(before.Deployments)) {
			t.Errorf("deployments changed: %v → %v", ids(before.Deployments), ids(after.Deployments))
		}
	})

	step("finalize_reboots_into_the_new_image_keeping_a_local_etc_edit_made_after_staging", func(t *testing.T) {
		st := status(t, c)
		oldBooted, err := n.Booted()
		if err != nil {
			t.Fatal(err)
		}
		// A local edit in the running system's /etc, after the deployment was staged: the
		// 3-way merge at shutdown must see it.
		const localConf = "# app defaults\nlevel=7 # set on this node after staging\n"
		if err := os.WriteFile(filepath.Join(oldBooted.Dir, "etc/app.conf"), []byte(localConf), 0o644); err != nil {
			t.Fatal(err)
		}
		reboots, bootID := n.Reboots(), n.Kubelet.BootID()
		began := time.Now()
		if err := c.FinalizeDeployment(ctx, v2.Digest.String(), rpmostree.FinalizeOptions{InitiatingCommandLine: "layerd e2e finalize"}); err != nil {
			t.Fatalf("FinalizeDeployment %s: %v", v2.Digest, err)
		}
		waitReboots(t, n, reboots+1, 2*time.Minute)
		rebootTime := time.Since(began)
		fmt.Printf("BENCH e2e-stage-finalize-reboot: %.2fs (stage %.2fs, finalize+reboot %.2fs)\n",
			(stageTime + rebootTime).Seconds(), stageTime.Seconds(), rebootTime.Seconds())
		if lb := n.LastBoot(); !lb.Finalized || lb.FinalizeErr != nil {
			t.Errorf("last boot: finalized %v, error %v, output %q", lb.Finalized, lb.FinalizeErr, lb.FinalizeOutput)
		}

		c2 := connect(t, n)
		after := status(t, c2)
		if digestOf(after.Booted) != v2.Digest.String() || after.Booted.ID != st.Staged.ID {
			t.Errorf("booted %s (%s), want %s (%s)", after.Booted.ID, digestOf(after.Booted), st.Staged.ID, v2.Digest)
		}
		if digestOf(after.Rollback) != w.Base.Digest.String() || after.Rollback.ID != st.Booted.ID {
			t.Errorf("rollback %v (%s), want the base %s", after.Rollback, digestOf(after.Rollback), st.Booted.ID)
		}
		if after.Staged != nil {
			t.Errorf("still staged after finalize: %s", after.Staged.ID)
		}
		booted, err := n.Booted()
		if err != nil {
			t.Fatal(err)
		}
		if booted.Checksum != st.Staged.Checksum || booted.Dir == oldBooted.Dir {
			t.Fatalf("the harness booted %s (%s), want %s", booted.Checksum, booted.Dir, st.Staged.Checksum)
		}
		for file, want := range map[string]string{
			"etc/app.conf":   localConf, // local edit survives
			"etc/motd":       motdV2,    // unmodified file takes the new default
			"usr/bin/mytool": mytoolV2,
		} {
			if b, err := os.ReadFile(filepath.Join(booted.Dir, file)); err != nil || string(b) != want {
				t.Errorf("booted %s: %q, %v; want %q", file, b, err, want)
			}
		}
		newBootID := n.Kubelet.BootID()
		if newBootID == bootID || newBootID == "" {
			t.Errorf("boot ID %q → %q: want a new one", bootID, newBootID)
		}
		waitNodeBootID(t, w, n.Name, newBootID)
	})

	step("rollback_with_reboot_boots_the_previous_deployment", func(t *testing.T) {
		c := connect(t, n)
		st := status(t, c)
		if st.Rollback == nil {
			t.Fatal("no rollback deployment")
		}
		reboots := n.Reboots()
		began := time.Now()
		if err := c.Rollback(ctx, rpmostree.RollbackOptions{Reboot: true}); err != nil {
			t.Fatalf("Rollback: %v", err)
		}
		waitReboots(t, n, reboots+1, 2*time.Minute)
		fmt.Printf("BENCH e2e-rollback-reboot: %.2fs\n", time.Since(began).Seconds())
		after := status(t, connect(t, n))
		if after.Booted == nil || after.Booted.ID != st.Rollback.ID || digestOf(after.Booted) != w.Base.Digest.String() {
			t.Errorf("booted %v (%s), want the former rollback %s (base)", after.Booted, digestOf(after.Booted), st.Rollback.ID)
		}
		if after.Rollback == nil || after.Rollback.ID != st.Booted.ID {
			t.Errorf("rollback %v, want the formerly booted %s", after.Rollback, st.Booted.ID)
		}
		if booted, err := n.Booted(); err != nil || booted.Checksum != st.Rollback.Checksum {
			t.Errorf("the harness booted %+v, %v; want %s", booted, err, st.Rollback.Checksum)
		}
	})

	v3 := imageV3(t, w)
	step("layerd_status_in_a_pod_shows_booted_staged_and_rollback", func(t *testing.T) {
		c := connect(t, n)
		res, err := c.StageImage(ctx, v3.Pinned, rpmostree.RebaseOptions{LockFinalization: true})
		if err != nil || !res.Started {
			t.Fatalf("StageImage %s: %+v, %v", v3.Pinned, res, err)
		}
		st := status(t, c)
		if st.Booted == nil || st.Staged == nil || st.Rollback == nil {
			t.Fatalf("want booted, staged and rollback deployments, have %v", ids(st.Deployments))
		}
		out := runInPod(t, n, "status", "--json")
		var host bootcHost
		if err := json.Unmarshal([]byte(out), &host); err != nil {
			t.Fatalf("layerd status --json: %v\n%s", err, out)
		}
		for _, e := range []struct {
			role  string
			entry *bootcEntry
			want  *rpmostree.Deployment
		}{{"booted", host.Status.Booted, st.Booted}, {"staged", host.Status.Staged, st.Staged}, {"rollback", host.Status.Rollback, st.Rollback}} {
			if e.entry == nil || e.entry.Image == nil || e.entry.Ostree == nil {
				t.Errorf("status.%s: %+v\n%s", e.role, e.entry, out)
				continue
			}
			if e.entry.Image.ImageDigest != e.want.ContainerImageReferenceDigest || e.entry.Ostree.Checksum != e.want.Checksum {
				t.Errorf("status.%s: digest %s checksum %s, want %s %s", e.role, e.entry.Image.ImageDigest,
					e.entry.Ostree.Checksum, e.want.ContainerImageReferenceDigest, e.want.Checksum)
			}
		}
		if host.Status.Booted != nil && host.Status.Booted.Image != nil && host.Status.Booted.Image.ImageDigest != w.Base.Digest.String() {
			t.Errorf("status.booted.image.imageDigest %s, want the base %s", host.Status.Booted.Image.ImageDigest, w.Base.Digest)
		}
		if host.Status.Staged != nil && host.Status.Staged.Image != nil {
			img := host.Status.Staged.Image
			if img.ImageDigest != v3.Digest.String() || img.Image.Image != v3.Pinned || img.Image.Transport != "registry" {
				t.Errorf("status.staged.image: %+v, want %s by digest %s over registry", img, v3.Pinned, v3.Digest)
			}
		}
		if host.Status.Rollback != nil && host.Status.Rollback.Image != nil && host.Status.Rollback.Image.ImageDigest != v2.Digest.String() {
			t.Errorf("status.rollback.image.imageDigest %s, want v2 %s", host.Status.Rollback.Image.ImageDigest, v2.Digest)
		}

		table := runInPod(t, n, "status")
		t.Logf("layerd status in a pod on %s:\n%s", n.Name, table)
		for role, digest := range map[string]string{"booted": w.Base.Digest.String(), "staged": v3.Digest.String(), "rollback": v2.Digest.String()} {
			if row := tableRow(table, role); !strings.Contains(row, digest) {
				t.Errorf("table row %q does not name %s\n%s", row, digest, table)
			}
		}
	})

	step("cleanup_removes_the_rollback_then_the_pending_deployment", func(t *testing.T) {
		c := connect(t, n)
		st := status(t, c)
		if st.Rollback == nil || st.Staged == nil {
			t.Fatalf("want a rollback and a staged deployment, have %v", ids(st.Deployments))
		}
		if err := c.Cleanup(ctx, []string{rpmostree.CleanupRollbackDeploy}, rpmostree.CleanupOptions{}); err != nil {
			t.Fatalf("Cleanup(rollback-deploy): %v", err)
		}
		after := status(t, c)
		if after.Rollback != nil || slices.Contains(ids(after.Deployments), st.Rollback.ID) {
			t.Errorf("rollback %v still there: %v", after.Rollback, ids(after.Deployments))
		}
		if after.Staged == nil || after.Staged.ID != st.Staged.ID || after.Booted.ID != st.Booted.ID {
			t.Errorf("Cleanup(rollback-deploy) touched staged/booted: %v", ids(after.Deployments))
		}
		if err := c.Cleanup(ctx, []string{rpmostree.CleanupPendingDeploy}, rpmostree.CleanupOptions{}); err != nil {
			t.Fatalf("Cleanup(pending-deploy): %v", err)
		}
		after = status(t, c)
		if after.Staged != nil || len(after.Deployments) != 1 || after.Deployments[0].ID != st.Booted.ID {
			t.Errorf("after Cleanup(pending-deploy): staged %v, deployments %v; want only %s", after.Staged, ids(after.Deployments), st.Booted.ID)
		}
		if _, err := os.Stat(filepath.Join(n.RunDir, "ostree/staged-deployment-locked")); !os.IsNotExist(err) {
			t.Errorf("finalization lock left behind: %v", err)
		}
		onDisk, err := n.Sysroot.Deployments()
		if err != nil {
			t.Fatal(err)
		}
		if len(onDisk) != 1 || onDisk[0].Checksum != st.Booted.Checksum {
			t.Errorf("on disk: %d deployments, want only the booted %s", len(onDisk), st.Booted.Checksum)
		}
	})
}

// TestUnplannedRebootWithALockedStagedDeploymentBootsTheOldOne: a node that reboots for another
// reason while layerd holds a staged deployment locked must come back on the old deployment,
// and the staged one is gone (as ostree-finalize-staged skips a locked deployment).
func TestUnplannedRebootWithALockedStagedDeploymentBootsTheOldOne(t *testing.T) {
	w := world(t)
	n := w.Nodes[1]
	v2 := imageV2(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := connect(t, n)
	before := status(t, c)
	if _, err := c.StageImage(ctx, v2.Pinned, rpmostree.RebaseOptions{LockFinalization: true}); err != nil {
		t.Fatalf("StageImage: %v", err)
	}
	if st := status(t, c); st.Staged == nil || digestOf(st.Staged) != v2.Digest.String() {
		t.Fatalf("staged %v, want %s", st.Staged, v2.Digest)
	}
	oldBooted, err := n.Booted()
	if err != nil {
		t.Fatal(err)
	}
	bootID := n.Kubelet.BootID()
	if err := n.Reboot(ctx); err != nil {
		t.Fatalf("rebooting %s: %v", n.Name, err)
	}

	t.Run("the_boot_skipped_the_locked_deployment", func(t *testing.T) {
		if lb := n.LastBoot(); !lb.SkippedLocked || lb.Finalized {
			t.Errorf("last boot: skipped locked %v, finalized %v (%q)", lb.SkippedLocked, lb.Finalized, lb.FinalizeOutput)
		}
		if n.Kubelet.BootID() == bootID {
			t.Errorf("boot ID unchanged: %s", bootID)
		}
	})
	t.Run("the_old_deployment_is_booted_again", func(t *testing.T) {
		booted, err := n.Booted()
		if err != nil || booted.Checksum != oldBooted.Checksum || booted.Serial != oldBooted.Serial {
			t.Fatalf("booted %+v, %v; want %s.%d", booted, err, oldBooted.Checksum, oldBooted.Serial)
		}
		st := status(t, connect(t, n))
		if st.Booted == nil || st.Booted.ID != before.Booted.ID {
			t.Errorf("rpm-ostree says booted %v, want %s", st.Booted, before.Booted.ID)
		}
	})
	t.Run("the_staged_deployment_is_gone", func(t *testing.T) {
		st := status(t, connect(t, n))
		if st.Staged != nil {
			t.Errorf("staged %s survived the reboot", st.Staged.ID)
		}
		for _, d := range st.Deployments {
			if d.ContainerImageReferenceDigest == v2.Digest.String() {
				t.Errorf("deployment %s of the staged image is still listed", d.ID)
			}
		}
		onDisk, err := n.Sysroot.Deployments()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range onDisk {
			if d.Staged || d.ManifestDigest == v2.Digest.String() {
				t.Errorf("on disk: deployment %s.%d (staged %v, digest %s)", d.Checksum, d.Serial, d.Staged, d.ManifestDigest)
			}
		}
	})
}

// TestStandInCrashMidTransaction: rpm-ostreed dies while a transaction runs; the client must
// report the transaction as lost, and the restarted daemon must report the deployments from
// disk and accept new work.
func TestStandInCrashMidTransaction(t *testing.T) {
	w := world(t)
	n := w.Nodes[1]
	v3 := imageV3(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := connect(t, n)
	before := status(t, c)
	stalled := countInLog(t, n, "transaction stalled")
	knob(t, n, "stall")

	done := make(chan error, 1)
	go func() {
		done <- c.Rebase(ctx, signedRefspec(v3), rpmostree.RebaseOptions{LockFinalization: true})
	}()
	// The transaction is running (and held) before the daemon goes.
	waitInLog(t, n, "transaction stalled", stalled+1, time.Minute)
	if p, err := c.ActiveTransactionPath(ctx); err != nil || p == "" {
		t.Fatalf("ActiveTransactionPath %q, %v while stalled", p, err)
	}
	if err := n.CrashStandIn(); err != nil {
		t.Fatalf("crashing and restarting the stand-in: %v", err)
	}

	t.Run("the_client's_transaction_fails_with_ErrDaemonLost", func(t *testing.T) {
		select {
		case err := <-done:
			if !errors.Is(err, rpmostree.ErrDaemonLost) {
				t.Errorf("Rebase after the daemon crashed: %v, want ErrDaemonLost", err)
			}
			t.Logf("client: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("Rebase still running a minute after the daemon crashed")
		}
	})
	t.Run("the_new_stand-in_reports_the_same_deployments_from_disk", func(t *testing.T) {
		st := status(t, connect(t, n))
		if got, want := ids(st.Deployments), ids(before.Deployments); !slices.Equal(got, want) {
			t.Errorf("deployments %v, want %v", got, want)
		}
		if st.Booted == nil || st.Booted.ID != before.Booted.ID || st.Staged != nil || st.ActiveTransaction != nil {
			t.Errorf("booted %v, staged %v, active %+v", st.Booted, st.Staged, st.ActiveTransaction)
		}
	})
	t.Run("the_new_stand-in_accepts_a_new_transaction", func(t *testing.T) {
		c := connect(t, n)
		res, err := c.StageImage(ctx, v3.Pinned, rpmostree.RebaseOptions{LockFinalization: true})
		if err != nil || !res.Started || digestOf(res.Deployment) != v3.Digest.String() {
			t.Fatalf("StageImage after the crash: %+v, %v", res, err)
		}
		if err := c.Cleanup(ctx, []string{rpmostree.CleanupPendingDeploy}, rpmostree.CleanupOptions{}); err != nil {
			t.Fatalf("Cleanup(pending-deploy): %v", err)
		}
		if st := status(t, c); st.Staged != nil {
			t.Errorf("staged %s after cleanup", st.Staged.ID)
		}
	})
}

// bootcHost is the part of `layerd status --json` (bootc's format) the tests read.
type bootcHost struct {
	Status struct {
		Booted, Staged, Rollback *bootcEntry
	} `json:"status"`
}

type bootcEntry struct {
	Image *struct {
		Image struct {
			Image     string `json:"image"`
			Transport string `json:"transport"`
		} `json:"image"`
		ImageDigest string  `json:"imageDigest"`
		Version     *string `json:"version"`
	} `json:"image"`
	Ostree *struct {
		Checksum     string `json:"checksum"`
		DeploySerial int32  `json:"deploySerial"`
	} `json:"ostree"`
}

// tableRow returns the line of `layerd status` whose first column is role.
func tableRow(table, role string) string {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == role {
			return line
		}
	}
	return ""
}

func ids(ds []rpmostree.Deployment) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func keys(m map[string]dbus.Variant) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// rawDeployments reads Sysroot.Deployments on the node's bus with plain godbus.
func rawDeployments(t *testing.T, n *harness.Node) []map[string]dbus.Variant {
	t.Helper()
	conn, err := dbus.Connect(n.BusAddress())
	if err != nil {
		t.Fatalf("connecting to %s: %v", n.BusAddress(), err)
	}
	defer conn.Close()
	v, err := conn.Object(rpmostree.BusName, rpmostree.SysrootPath).GetProperty(rpmostree.SysrootIface + ".Deployments")
	if err != nil {
		t.Fatalf("reading Sysroot.Deployments: %v", err)
	}
	if sig := v.Signature().String(); sig != "aa{sv}" {
		t.Fatalf("Sysroot.Deployments has D-Bus type %q, want aa{sv}", sig)
	}
	var dicts []map[string]dbus.Variant
	if err := v.Store(&dicts); err != nil || len(dicts) == 0 {
		t.Fatalf("Sysroot.Deployments: %d dicts, %v", len(dicts), err)
	}
	return dicts
}

// deploymentDir is the directory of a deployment in the node's sysroot.
func deploymentDir(n *harness.Node, d *rpmostree.Deployment) string {
	return filepath.Join(n.Sysroot.Path, "ostree/deploy", d.OSName, "deploy", fmt.Sprintf("%s.%d", d.Checksum, d.Serial))
}

// waitNodeBootID polls the Node object until its status reports bootID.
func waitNodeBootID(t *testing.T, w *harness.World, node, bootID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		got, err := w.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil && got.Status.NodeInfo.BootID == bootID {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Node %s does not report boot ID %s: %v", node, bootID, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
