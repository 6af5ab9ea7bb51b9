package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/rpmostreed/server"
)

func TestTransactionSideEffects(t *testing.T) {
	t.Run("properties_are_current_when_finished_arrives", func(t *testing.T) {
		w := startWorld(t)
		conn := w.raw(t)
		changes := make(chan *dbus.Signal, 64)
		conn.Signal(changes)
		if err := conn.AddMatchSignal(dbus.WithMatchObjectPath(server.SysrootPath),
			dbus.WithMatchInterface("org.freedesktop.DBus.Properties"), dbus.WithMatchMember("PropertiesChanged")); err != nil {
			t.Fatal(err)
		}
		addr, err := callOS(conn, "Rebase", opts("lock-finalization", true), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		p := dialPeer(t, addr)
		p.start(t)
		if ok, _, _ := p.finished(t); !ok {
			t.Fatal("transaction failed")
		}
		// No Reload: the daemon reloaded before Finished.
		def, err := conn.Object(server.BusName, osPath).GetProperty(server.OSIface + ".DefaultDeployment")
		if err != nil {
			t.Fatal(err)
		}
		d := def.Value().(map[string]dbus.Variant)
		if d["staged"].Value() != true || d["container-image-reference-digest"].Value() != digestB {
			t.Fatalf("DefaultDeployment right after Finished = %v", d)
		}
		timeout := time.After(5 * time.Second)
		for {
			select {
			case s := <-changes:
				if s.Body[0] == server.SysrootIface {
					if _, ok := s.Body[1].(map[string]dbus.Variant)["Deployments"]; ok {
						return
					}
				}
			case <-timeout:
				t.Fatal("no PropertiesChanged for Deployments")
			}
		}
	})

	t.Run("attach_follows_another_clients_transaction", func(t *testing.T) {
		w := startWorld(t)
		w.srv.StallTransactions()
		holder := w.raw(t)
		addr, err := callOS(holder, "Rebase", opts(), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		dialPeer(t, addr).start(t)
		c := w.client(t, rpmostree.Options{})
		active, err := c.ActiveTransactionPath(context.Background())
		if err != nil || active != addr {
			t.Fatalf("ActiveTransactionPath = %q, %v", active, err)
		}
		var events int
		done := make(chan error, 1)
		go func() { done <- c.Attach(context.Background(), active, func(rpmostree.Event) { events++ }) }()
		time.Sleep(100 * time.Millisecond)
		w.srv.ReleaseTransactions()
		if err := <-done; err != nil || events == 0 {
			t.Fatalf("Attach = %v after %d events", err, events)
		}
	})

	t.Run("client_retries_calls_that_get_no_reply", func(t *testing.T) {
		w := startWorld(t)
		w.srv.FailNextCallsWithNoReply(2)
		c := w.client(t, rpmostree.Options{})
		if _, err := c.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		w.srv.FailNextCallsWithNoReply(1)
		if _, err := c.StageImage(context.Background(), "127.0.0.1:5000/os@"+digestB, rpmostree.RebaseOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("cleanup_removes_the_staged_deployment", func(t *testing.T) {
		w := startWorld(t)
		c := w.client(t, rpmostree.Options{})
		ctx := context.Background()
		if _, err := c.StageImage(ctx, "127.0.0.1:5000/os@"+digestB, rpmostree.RebaseOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.Cleanup(ctx, []string{rpmostree.CleanupPendingDeploy}, rpmostree.CleanupOptions{}); err != nil {
			t.Fatal(err)
		}
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Staged != nil || st.Default.ID != st.Booted.ID {
			t.Fatalf("staged = %+v", st.Staged)
		}
	})
}
