package server_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/rpmostreed/server"
)

func dbusErr(t *testing.T, err error) dbus.Error {
	t.Helper()
	var de dbus.Error
	if !errors.As(err, &de) {
		t.Fatalf("err = %v (%T), want a D-Bus error", err, err)
	}
	return de
}

func TestTransactionProtocol(t *testing.T) {
	t.Run("start_returns_true_once_then_false", func(t *testing.T) {
		w := startWorld(t)
		w.srv.StallTransactions()
		conn := w.raw(t)
		addr, err := callOS(conn, "Rebase", opts(), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		a, b := dialPeer(t, addr), dialPeer(t, addr)
		if !a.start(t) || b.start(t) {
			t.Fatal("want Start true for the first peer and false for the second")
		}
		w.srv.ReleaseTransactions()
		for _, p := range []*peer{a, b} {
			if ok, msg, _ := p.finished(t); !ok || msg != "" {
				t.Fatalf("Finished(%v, %q)", ok, msg)
			}
		}
	})

	t.Run("identical_call_joins_and_different_call_is_busy", func(t *testing.T) {
		w := startWorld(t)
		w.srv.StallTransactions()
		conn, other := w.raw(t), w.raw(t)
		o := opts("initiating-command-line", "layerd: rebase "+digestB)
		addr, err := callOS(conn, "Rebase", o, refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		joined, err := callOS(other, "Rebase", o, refspec(digestB), []string{})
		if err != nil || joined != addr {
			t.Fatalf("identical call: %q, %v; want address %q", joined, err, addr)
		}
		_, err = callOS(other, "Rebase", o, refspec(digestC), []string{})
		de := dbusErr(t, err)
		want := "Transaction in progress: layerd: rebase " + digestB + "\n You can cancel the current transaction with `rpm-ostree cancel`"
		if de.Name != server.ErrNameBusy || len(de.Body) != 1 || de.Body[0] != want {
			t.Fatalf("busy error = %s %q", de.Name, de.Body)
		}
		at := sysrootProp(t, conn, "ActiveTransaction").Value().([]any)
		if at[0] != "Rebase" || at[1] != conn.Names()[0] || at[2] != string(osPath) || sysrootProp(t, conn, "ActiveTransactionPath").Value() != addr {
			t.Fatalf("ActiveTransaction = %v", at)
		}

		c := w.client(t, rpmostree.Options{BusyTimeout: -1})
		if err := c.Cleanup(context.Background(), []string{"rollback-deploy"}, rpmostree.CleanupOptions{}); !errors.Is(err, rpmostree.ErrBusy) {
			t.Fatalf("client err = %v, want ErrBusy", err)
		}
		p := dialPeer(t, addr)
		p.start(t)
		w.srv.ReleaseTransactions()
		p.finished(t)
	})

	t.Run("client_retries_busy_until_the_holder_finishes", func(t *testing.T) {
		w := startWorld(t)
		w.srv.StallTransactions()
		conn := w.raw(t)
		addr, err := callOS(conn, "Rebase", opts(), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		p := dialPeer(t, addr)
		p.start(t)
		c := w.client(t, rpmostree.Options{BusyBackoff: 20 * time.Millisecond, BusyTimeout: 10 * time.Second})
		done := make(chan error, 1)
		go func() {
			done <- c.Cleanup(context.Background(), []string{"rollback-deploy"}, rpmostree.CleanupOptions{})
		}()
		time.Sleep(100 * time.Millisecond)
		w.srv.ReleaseTransactions()
		p.finished(t)
		_ = p.conn.Close()
		if err := <-done; err != nil {
			t.Fatalf("cleanup after busy: %v", err)
		}
	})

	t.Run("caller_leaving_before_start_abandons_the_transaction", func(t *testing.T) {
		w := startWorld(t)
		caller := w.raw(t)
		addr, err := callOS(caller, "Rebase", opts(), refspec(digestB), []string{})
		if err != nil || addr == "" {
			t.Fatal(err)
		}
		watcher := w.raw(t)
		if sysrootProp(t, watcher, "ActiveTransactionPath").Value() != addr {
			t.Fatal("transaction not active")
		}
		_ = caller.Close()
		waitIdle(t, watcher)
		if _, err := os.Stat(w.socket); !os.IsNotExist(err) {
			t.Fatalf("transaction socket still there: %v", err)
		}
		if len(w.backend.stageRequests()) != 0 {
			t.Fatal("abandoned transaction ran")
		}
	})

	t.Run("late_start_replays_finished_on_that_connection_only", func(t *testing.T) {
		w := startWorld(t)
		conn := w.raw(t)
		addr, err := callOS(conn, "Rebase", opts(), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		first := dialPeer(t, addr)
		first.start(t)
		if ok, _, names := first.finished(t); !ok || len(names) == 0 {
			t.Fatalf("first peer: ok=%v signals=%v", ok, names)
		}
		late := dialPeer(t, addr)
		if late.start(t) {
			t.Fatal("late Start returned true")
		}
		if ok, msg, names := late.finished(t); !ok || msg != "" || len(names) != 0 {
			t.Fatalf("replay: ok=%v msg=%q extra signals=%v", ok, msg, names)
		}
		first.noMoreFinished(t)
	})

	t.Run("active_until_peers_leave_or_the_force_close_timer", func(t *testing.T) {
		w := startWorld(t)
		conn := w.raw(t)
		addr, err := callOS(conn, "Rebase", opts(), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		p := dialPeer(t, addr)
		p.start(t)
		p.finished(t)
		if sysrootProp(t, conn, "ActiveTransactionPath").Value() != addr || w.timers.pending() != 1 {
			t.Fatal("finished transaction with a connected peer is not kept active")
		}
		_, err = callOS(conn, "Cleanup", []string{"rollback-deploy"})
		if de := dbusErr(t, err); de.Name != server.ErrNameBusy {
			t.Fatalf("err = %v, want busy while a peer stays connected", err)
		}
		w.timers.fire()
		waitIdle(t, conn)
		select {
		case _, ok := <-p.sigs:
			for ok {
				_, ok = <-p.sigs
			}
		case <-time.After(5 * time.Second):
			t.Fatal("force-close did not close the peer")
		}
	})

	t.Run("cancel_finishes_with_operation_was_cancelled", func(t *testing.T) {
		w := startWorld(t)
		w.srv.StallTransactions()
		c := w.client(t, rpmostree.Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Rebase(ctx, refspec(digestB), rpmostree.RebaseOptions{}) }()
		conn := w.raw(t)
		deadline := time.Now().Add(5 * time.Second)
		for sysrootProp(t, conn, "ActiveTransactionPath").Value() == "" && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // let the client call Start
		cancel()
		err := <-done
		var te *rpmostree.TxnError
		if !errors.Is(err, context.Canceled) || !errors.As(err, &te) || te.Message != "Operation was cancelled" {
			t.Fatalf("err = %v", err)
		}
		waitIdle(t, conn)
		if len(w.backend.stageRequests()) != 0 {
			t.Fatal("cancelled transaction staged")
		}
	})

	t.Run("wrongly_typed_options_are_ignored", func(t *testing.T) {
		w := startWorld(t)
		conn := w.raw(t)
		o := opts("lock-finalization", "true", "reboot", int32(1), "allow-downgrade", "false")
		addr, err := callOS(conn, "Rebase", o, refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		p := dialPeer(t, addr)
		p.start(t)
		if ok, msg, _ := p.finished(t); !ok {
			t.Fatalf("Finished(false, %q)", msg)
		}
		req := w.backend.stageRequests()[0]
		if req.LockFinalization || !req.AllowDowngrade {
			t.Fatalf("request = %+v: wrongly typed options were honoured", req)
		}
		if w.srv.Rebooting() {
			t.Fatal("reboot sent as int32 was honoured")
		}
	})

	t.Run("reboot_option_records_a_reboot_and_refuses_later_calls", func(t *testing.T) {
		w := startWorld(t)
		conn := w.raw(t)
		addr, err := callOS(conn, "Rebase", opts("reboot", true), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		p := dialPeer(t, addr)
		p.start(t)
		if ok, _, _ := p.finished(t); !ok || !w.srv.Rebooting() {
			t.Fatal("reboot not recorded")
		}
		_, err = callOS(conn, "Upgrade", opts())
		if de := dbusErr(t, err); de.Name != server.ErrNameFailed || de.Body[0] != "Reboot initiated, cannot start new transaction" {
			t.Fatalf("err = %v", err)
		}
	})

	for _, tc := range []struct {
		name, method string
		args         []any
		want         string
	}{
		{"cache_only_with_download_only_fails_in_the_transaction", "Rebase",
			[]any{opts("cache-only", true, "download-only", true), refspec(digestB), []string{}}, "Can't specify cache-only and download-only"},
		{"dry_run_with_download_only_fails_in_the_transaction", "Upgrade",
			[]any{opts("dry-run", true, "download-only", true)}, "Can't specify dry-run and download-only"},
		{"skip_purge_without_a_refspec_fails", "Upgrade", []any{opts("skip-purge", true)}, "Can't specify skip-purge if not setting a new refspec"},
		{"rebase_to_the_current_refspec_fails_with_equal_refs", "Rebase",
			[]any{opts(), refspec(digestA), []string{}}, "Old and new refs are equal: " + refspec(digestA)},
		{"rollback_without_a_rollback_deployment_fails", "Rollback", []any{opts()}, "No rollback deployment found"},
		{"finalize_without_checksum_fails", "FinalizeDeployment", []any{opts()}, "No pending staged deployment found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startWorld(t)
			conn := w.raw(t)
			addr, err := callOS(conn, tc.method, tc.args...)
			if err != nil {
				t.Fatalf("the method call itself failed: %v", err)
			}
			p := dialPeer(t, addr)
			p.start(t)
			if ok, msg, _ := p.finished(t); ok || msg != tc.want {
				t.Fatalf("Finished(%v, %q), want (false, %q)", ok, msg, tc.want)
			}
		})
	}

	t.Run("unknown_cleanup_element_fails_the_call", func(t *testing.T) {
		w := startWorld(t)
		_, err := callOS(w.raw(t), "Cleanup", []string{"pending-deploy", "bogus"})
		if de := dbusErr(t, err); de.Name != server.ErrNameFailed || de.Body[0] != "Invalid cleanup type: bogus" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("get_os_finds_the_booted_and_named_os", func(t *testing.T) {
		w := startWorld(t)
		sys := w.raw(t).Object(server.BusName, server.SysrootPath)
		var path dbus.ObjectPath
		if err := sys.Call(server.SysrootIface+".GetOS", 0, "").Store(&path); err != nil || path != osPath {
			t.Fatalf("GetOS(\"\") = %q, %v", path, err)
		}
		if err := sys.Call(server.SysrootIface+".GetOS", 0, "fedora-coreos").Store(&path); err != nil || path != osPath {
			t.Fatalf("GetOS(fedora-coreos) = %q, %v", path, err)
		}
		err := sys.Call(server.SysrootIface+".GetOS", 0, "rhcos").Err
		if de := dbusErr(t, err); de.Name != server.ErrNameNotFound || de.Body[0] != `OS name "rhcos" not found` {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("failure_knob_ends_the_next_transaction_with_its_message", func(t *testing.T) {
		w := startWorld(t)
		w.srv.FailNextTransaction("error: pulling image: 500 Internal Server Error")
		err := w.client(t, rpmostree.Options{}).Rebase(context.Background(), refspec(digestB), rpmostree.RebaseOptions{})
		var te *rpmostree.TxnError
		if !errors.As(err, &te) || te.Message != "error: pulling image: 500 Internal Server Error" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("crash_knob_drops_the_daemon_mid_transaction", func(t *testing.T) {
		w := startWorld(t)
		c := w.client(t, rpmostree.Options{})
		w.srv.CrashDuringNextTransaction()
		err := c.Rebase(context.Background(), refspec(digestB), rpmostree.RebaseOptions{})
		if !errors.Is(err, rpmostree.ErrDaemonLost) {
			t.Fatalf("err = %v, want ErrDaemonLost", err)
		}
		if code := <-w.exits; code != 70 {
			t.Fatalf("exit code %d", code)
		}
	})
}
