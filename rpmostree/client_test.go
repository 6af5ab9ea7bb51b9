package rpmostree_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
)

func newTestClient(t *testing.T, f *fakeDaemon, opts rpmostree.Options) *rpmostree.Client {
	t.Helper()
	opts.Dial = f.dial
	if opts.Clock == nil {
		opts.Clock = &fakeClock{now: time.Unix(0, 0)}
	}
	c, err := rpmostree.NewWithBus(context.Background(), f, opts)
	if err != nil {
		t.Fatalf("NewWithBus: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func bootedOnly() *fakeDaemon {
	booted := containerDeployment(0, digestA, true, false)
	return newFakeDaemon([]map[string]dbus.Variant{booted}, booted, booted, map[string]dbus.Variant{})
}

func TestClient(t *testing.T) {
	t.Run("registers_with_id_layerd_retrying_no_reply", func(t *testing.T) {
		f := bootedOnly()
		f.noReply = 2
		newTestClient(t, f, rpmostree.Options{})
		regs := f.callsTo(rpmostree.SysrootIface + ".RegisterClient")
		if len(regs) != 3 {
			t.Fatalf("RegisterClient calls = %d, want 3 (two NoReply then success)", len(regs))
		}
		opts := regs[2].Args[0].(map[string]dbus.Variant)
		if v := opts["id"]; v.Signature().String() != "s" || v.Value() != "layerd" {
			t.Fatalf("id option = %v", v)
		}
	})

	t.Run("unregisters_on_close", func(t *testing.T) {
		f := bootedOnly()
		c, err := rpmostree.NewWithBus(context.Background(), f, rpmostree.Options{Dial: f.dial})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if n := len(f.callsTo(rpmostree.SysrootIface + ".UnregisterClient")); n != 1 {
			t.Fatalf("UnregisterClient calls = %d", n)
		}
	})

	t.Run("reads_typed_status_after_reload", func(t *testing.T) {
		f := bootedOnly()
		f.sysroot["ActiveTransaction"] = dbus.MakeVariant([]any{"Rebase", ":1.42", string(fakeOSPath)})
		f.sysroot["ActiveTransactionPath"] = dbus.MakeVariant("unix:path=/run/rpm-ostree-transaction.sock")
		c := newTestClient(t, f, rpmostree.Options{})
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(f.callsTo(rpmostree.SysrootIface+".Reload")) != 1 {
			t.Fatal("Status did not Reload first")
		}
		if st.Booted == nil || st.Booted.ContainerImageReferenceDigest != digestA || st.Booted.Serial != 0 || !st.Booted.Booted {
			t.Fatalf("booted = %+v", st.Booted)
		}
		if st.Rollback != nil || st.Staged != nil {
			t.Fatalf("rollback %v staged %v, want none", st.Rollback, st.Staged)
		}
		if st.ActiveTransaction == nil || st.ActiveTransaction.Method != "Rebase" || st.ActiveTransaction.Sender != ":1.42" {
			t.Fatalf("active txn = %+v", st.ActiveTransaction)
		}
		if st.OSName != "fedora" {
			t.Fatalf("OSName = %q", st.OSName)
		}
	})

	t.Run("sends_rebase_options_with_exact_variant_types", func(t *testing.T) {
		f := bootedOnly()
		f.script = []*dbus.Signal{sig("Finished", true, "")}
		c := newTestClient(t, f, rpmostree.Options{})
		no := false
		err := c.Rebase(context.Background(), "ostree-unverified-registry:quay.io/org/os@"+digestB, rpmostree.RebaseOptions{
			Reboot: true, LockFinalization: true, AllowDowngrade: &no, DownloadOnly: true, CacheOnly: true,
			InitiatingCommandLine: "layerd: rebase", RegisterDriver: "layerd",
		})
		if err != nil {
			t.Fatal(err)
		}
		calls := f.callsTo(rpmostree.OSIface + ".Rebase")
		if len(calls) != 1 {
			t.Fatalf("Rebase calls = %d", len(calls))
		}
		args := calls[0].Args
		if got := dbus.SignatureOf(args...).String(); got != "a{sv}sas" {
			t.Fatalf("Rebase signature = %s, want a{sv}sas", got)
		}
		want := map[string]string{
			"reboot": "b", "lock-finalization": "b", "allow-downgrade": "b", "download-only": "b",
			"cache-only": "b", "initiating-command-line": "s", "register-driver": "s",
		}
		opts := args[0].(map[string]dbus.Variant)
		if len(opts) != len(want) {
			t.Fatalf("options = %v, want keys %v", opts, want)
		}
		for k, s := range want {
			if got := opts[k].Signature().String(); got != s {
				t.Errorf("option %s type %s, want %s", k, got, s)
			}
		}
		if opts["allow-downgrade"].Value() != false {
			t.Error("allow-downgrade not sent as false")
		}
		if !f.txns[0].isClosed() {
			t.Error("transaction connection left open after Finished")
		}
	})

	t.Run("streams_progress_events_in_order", func(t *testing.T) {
		f := bootedOnly()
		f.script = []*dbus.Signal{
			sig("Message", "Pulling manifest"),
			sig("TaskBegin", "[1/2] Fetching"),
			sig("PercentProgress", "Fetching", uint32(50)),
			sig("DownloadProgress",
				[]any{uint64(1), uint64(2)}, []any{uint32(3), uint32(4)}, []any{uint32(5), uint32(6), uint32(7)},
				[]any{uint32(8), uint32(9), uint32(10), uint64(11)}, []any{uint32(12), uint32(13)}, []any{uint64(1024), uint64(512)}),
			sig("TaskEnd", "done"),
			sig("ProgressEnd"),
			sig("Finished", true, ""),
		}
		c := newTestClient(t, f, rpmostree.Options{})
		var events []rpmostree.Event
		err := c.Deploy(context.Background(), digestB, rpmostree.DeployOptions{Progress: func(e rpmostree.Event) { events = append(events, e) }})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != 6 {
			t.Fatalf("events = %#v", events)
		}
		if e, ok := events[3].(rpmostree.DownloadProgress); !ok || e.Bytes != 1024 || e.BytesPerSecond != 512 || e.DeltaTotalSize != 11 {
			t.Fatalf("download event = %#v", events[3])
		}
		if e, ok := events[2].(rpmostree.PercentProgress); !ok || e.Percent != 50 {
			t.Fatalf("percent event = %#v", events[2])
		}
		if _, ok := events[5].(rpmostree.ProgressEnd); !ok {
			t.Fatalf("last event = %#v", events[5])
		}
	})

	t.Run("carries_rpm_ostree_message_on_failure", func(t *testing.T) {
		f := bootedOnly()
		f.script = []*dbus.Signal{sig("Finished", false, "Old and new refs are equal: x")}
		c := newTestClient(t, f, rpmostree.Options{})
		err := c.Rebase(context.Background(), "x", rpmostree.RebaseOptions{})
		var te *rpmostree.TxnError
		if !errors.As(err, &te) || te.Message != "Old and new refs are equal: x" || te.Method != "Rebase" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("retries_busy_with_doubling_backoff", func(t *testing.T) {
		f := bootedOnly()
		busy := dbus.Error{Name: rpmostree.ErrNameBusy, Body: []any{"Transaction in progress: other"}}
		f.txnErrs = []error{busy, busy, busy}
		f.script = []*dbus.Signal{sig("Finished", true, "")}
		clock := &fakeClock{now: time.Unix(0, 0)}
		c := newTestClient(t, f, rpmostree.Options{Clock: clock, BusyBackoff: time.Second, BusyBackoffMax: 3 * time.Second})
		if err := c.Cleanup(context.Background(), []string{rpmostree.CleanupPendingDeploy}, rpmostree.CleanupOptions{}); err != nil {
			t.Fatal(err)
		}
		want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}
		if len(clock.waits) != 3 || clock.waits[0] != want[0] || clock.waits[1] != want[1] || clock.waits[2] != want[2] {
			t.Fatalf("waits = %v, want %v", clock.waits, want)
		}
	})

	t.Run("gives_up_busy_after_the_deadline_with_ErrBusy", func(t *testing.T) {
		f := bootedOnly()
		busy := dbus.Error{Name: rpmostree.ErrNameBusy, Body: []any{"Transaction in progress: other"}}
		f.txnErrs = []error{busy, busy, busy, busy, busy, busy}
		c := newTestClient(t, f, rpmostree.Options{BusyTimeout: 4 * time.Second, BusyBackoff: time.Second})
		err := c.Rollback(context.Background(), rpmostree.RollbackOptions{})
		if !errors.Is(err, rpmostree.ErrBusy) {
			t.Fatalf("err = %v, want ErrBusy", err)
		}
		var be *rpmostree.BusyError
		if !errors.As(err, &be) || be.Message != "Transaction in progress: other" {
			t.Fatalf("busy message lost: %v", err)
		}
	})

	t.Run("maps_reboot_initiated", func(t *testing.T) {
		f := bootedOnly()
		f.txnErrs = []error{dbus.Error{Name: rpmostree.ErrNameFailed, Body: []any{"Reboot initiated, cannot start new transaction"}}}
		c := newTestClient(t, f, rpmostree.Options{})
		if err := c.Upgrade(context.Background(), rpmostree.DeployOptions{}); !errors.Is(err, rpmostree.ErrRebootInitiated) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("cancels_the_transaction_when_the_context_ends", func(t *testing.T) {
		f := bootedOnly()
		f.script = []*dbus.Signal{sig("Message", "working")}
		f.onCancel = []*dbus.Signal{sig("Finished", false, "Operation was cancelled")}
		c := newTestClient(t, f, rpmostree.Options{Clock: stillClock{}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err := c.Rebase(ctx, "x", rpmostree.RebaseOptions{Progress: func(rpmostree.Event) { cancel() }})
		var te *rpmostree.TxnError
		if !errors.Is(err, context.Canceled) || !errors.As(err, &te) || te.Message != "Operation was cancelled" {
			t.Fatalf("err = %v", err)
		}
		txn := f.txns[0]
		txn.mu.Lock()
		defer txn.mu.Unlock()
		if len(txn.calls) != 2 || txn.calls[1] != "Cancel" {
			t.Fatalf("txn calls = %v", txn.calls)
		}
	})

	t.Run("reports_daemon_lost_when_the_connection_drops", func(t *testing.T) {
		f := bootedOnly()
		f.script = []*dbus.Signal{sig("Message", "working")}
		f.dropAfterScript = true
		c := newTestClient(t, f, rpmostree.Options{})
		if err := c.Rebase(context.Background(), "x", rpmostree.RebaseOptions{}); !errors.Is(err, rpmostree.ErrDaemonLost) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("reports_daemon_lost_when_the_bus_owner_changes", func(t *testing.T) {
		f := bootedOnly()
		close(f.lost)
		c := newTestClient(t, f, rpmostree.Options{})
		if err := c.Rebase(context.Background(), "x", rpmostree.RebaseOptions{}); !errors.Is(err, rpmostree.ErrDaemonLost) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("finalize_sends_the_image_digest_as_checksum", func(t *testing.T) {
		f := bootedOnly()
		f.script = []*dbus.Signal{sig("Finished", true, "")}
		c := newTestClient(t, f, rpmostree.Options{})
		if err := c.FinalizeDeployment(context.Background(), digestB, rpmostree.FinalizeOptions{}); err != nil {
			t.Fatal(err)
		}
		opts := f.callsTo(rpmostree.OSIface + ".FinalizeDeployment")[0].Args[0].(map[string]dbus.Variant)
		if v := opts["checksum"]; v.Signature().String() != "s" || v.Value() != digestB || len(opts) != 1 {
			t.Fatalf("options = %v", opts)
		}
	})
}

func TestStageImage(t *testing.T) {
	t.Run("returns_without_a_transaction_when_the_default_already_has_the_digest", func(t *testing.T) {
		f := bootedOnly()
		c := newTestClient(t, f, rpmostree.Options{})
		res, err := c.StageImage(context.Background(), "quay.io/org/os@"+digestA, rpmostree.RebaseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Started || res.Deployment == nil || !res.Deployment.Booted {
			t.Fatalf("result = %+v", res)
		}
		if n := len(f.callsTo(rpmostree.OSIface + ".Rebase")); n != 0 {
			t.Fatalf("Rebase called %d times", n)
		}
	})

	t.Run("rebases_to_the_pinned_refspec_otherwise", func(t *testing.T) {
		f := bootedOnly()
		staged := containerDeployment(1, digestB, false, true)
		f.script = []*dbus.Signal{sig("Finished", true, "")}
		f.onTxn = func() { f.os["DefaultDeployment"] = dbus.MakeVariant(staged) }
		c := newTestClient(t, f, rpmostree.Options{})
		res, err := c.StageImage(context.Background(), "quay.io/org/os@"+digestB, rpmostree.RebaseOptions{LockFinalization: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Started || res.Deployment.ContainerImageReferenceDigest != digestB || !res.Deployment.Staged {
			t.Fatalf("result = %+v", res.Deployment)
		}
		call := f.callsTo(rpmostree.OSIface + ".Rebase")[0]
		if call.Args[1] != "ostree-unverified-registry:quay.io/org/os@"+digestB {
			t.Fatalf("refspec = %v", call.Args[1])
		}
	})

	t.Run("rejects_a_tag_only_reference", func(t *testing.T) {
		c := newTestClient(t, bootedOnly(), rpmostree.Options{})
		if _, err := c.StageImage(context.Background(), "quay.io/org/os:latest", rpmostree.RebaseOptions{}); err == nil {
			t.Fatal("no error")
		}
	})
}
