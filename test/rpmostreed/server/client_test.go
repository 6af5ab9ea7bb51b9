package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
)

// The production client against the stand-in, over a real dbus-daemon.
func TestClientAgainstStandIn(t *testing.T) {
	w := startWorld(t)
	c := w.client(t, rpmostree.Options{})
	ctx := context.Background()

	t.Run("registers_as_layerd", func(t *testing.T) {
		found := false
		for _, id := range w.srv.Clients() {
			found = found || id == "layerd"
		}
		if !found {
			t.Fatalf("clients = %v", w.srv.Clients())
		}
	})

	t.Run("reads_the_booted_deployment", func(t *testing.T) {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Booted == nil || st.Booted.ContainerImageReferenceDigest != digestA || st.Default.ID != st.Booted.ID ||
			st.Staged != nil || st.Rollback != nil || st.ActiveTransaction != nil || st.OSName != "fedora-coreos" || st.Path != "/sysroot" {
			t.Fatalf("status = %+v", st)
		}
	})

	var events []rpmostree.Event
	t.Run("stages_an_image_with_progress_events", func(t *testing.T) {
		res, err := c.StageImage(ctx, "127.0.0.1:5000/os@"+digestB, rpmostree.RebaseOptions{
			LockFinalization: true, InitiatingCommandLine: "layerd: stage " + digestB,
			Progress: func(e rpmostree.Event) { events = append(events, e) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Started || !res.Deployment.Staged || res.Deployment.ContainerImageReferenceDigest != digestB {
			t.Fatalf("result = %+v", res.Deployment)
		}
		var sawMessage, sawTask, sawDownload, sawEnd bool
		for _, e := range events {
			switch e := e.(type) {
			case rpmostree.Message:
				sawMessage = true
			case rpmostree.TaskBegin:
				sawTask = true
			case rpmostree.DownloadProgress:
				sawDownload = e.Bytes == 1<<20 && e.BytesPerSecond == 1<<20
			case rpmostree.ProgressEnd:
				sawEnd = true
			}
		}
		if !sawMessage || !sawTask || !sawDownload || !sawEnd {
			t.Fatalf("events = %#v", events)
		}
		if reqs := w.backend.stageRequests(); len(reqs) != 1 || !reqs[0].LockFinalization || !reqs[0].AllowDowngrade || reqs[0].Refspec != refspec(digestB) {
			t.Fatalf("stage requests = %+v", reqs)
		}
	})

	t.Run("shows_the_staged_deployment_first_with_typed_keys", func(t *testing.T) {
		raw := w.raw(t)
		deps := sysrootProp(t, raw, "Deployments").Value().([]map[string]dbus.Variant)
		if len(deps) != 2 {
			t.Fatalf("deployments = %v", deps)
		}
		staged := deps[0]
		for key, sig := range map[string]string{
			"id": "s", "osname": "s", "checksum": "s", "serial": "i", "booted": "b", "staged": "b", "pinned": "b",
			"unlocked": "s", "timestamp": "t", "version": "s", "container-image-reference": "s",
			"container-image-reference-digest": "s", "base-commit-meta": "a{sv}", "packages": "as",
		} {
			if v, ok := staged[key]; !ok || v.Signature().String() != sig {
				t.Errorf("staged[%q] = %v, want type %s", key, v, sig)
			}
		}
		if _, ok := staged["origin"]; ok {
			t.Error("container deployment has an origin key")
		}
		if staged["staged"].Value() != true || deps[1]["booted"].Value() != true {
			t.Errorf("order: %v", deps)
		}
		def, err := raw.Object("org.projectatomic.rpmostree1", osPath).GetProperty("org.projectatomic.rpmostree1.OS.DefaultDeployment")
		if err != nil || def.Value().(map[string]dbus.Variant)["container-image-reference-digest"].Value() != digestB {
			t.Fatalf("DefaultDeployment = %v, %v", def, err)
		}
	})

	t.Run("restaging_the_same_digest_runs_no_transaction", func(t *testing.T) {
		res, err := c.StageImage(ctx, "127.0.0.1:5000/os@"+digestB, rpmostree.RebaseOptions{LockFinalization: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Started || len(w.backend.stageRequests()) != 1 {
			t.Fatalf("started = %v, stage requests = %d", res.Started, len(w.backend.stageRequests()))
		}
	})

	t.Run("finalize_with_a_wrong_digest_carries_rpm_ostree_message", func(t *testing.T) {
		err := c.FinalizeDeployment(ctx, digestC, rpmostree.FinalizeOptions{})
		var te *rpmostree.TxnError
		want := "Expected staged base checksum " + digestC + ", but found " + digestB
		if !errors.As(err, &te) || te.Message != want {
			t.Fatalf("err = %v, want message %q", err, want)
		}
		if w.srv.Rebooting() {
			t.Fatal("a failed finalize requested a reboot")
		}
	})

	t.Run("finalize_requests_a_reboot", func(t *testing.T) {
		if err := c.FinalizeDeployment(ctx, digestB, rpmostree.FinalizeOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w.backend.reboots:
		case <-time.After(5 * time.Second):
			t.Fatal("reboot hook not called")
		}
		if _, locked := w.backend.stagedLocked(); locked || w.srv.Reboots() != 1 {
			t.Fatalf("locked = %v, reboots = %d", locked, w.srv.Reboots())
		}
	})

	t.Run("refuses_new_transactions_after_the_reboot_request", func(t *testing.T) {
		err := c.Cleanup(ctx, []string{rpmostree.CleanupPendingDeploy}, rpmostree.CleanupOptions{})
		if !errors.Is(err, rpmostree.ErrRebootInitiated) {
			t.Fatalf("err = %v", err)
		}
	})
}
