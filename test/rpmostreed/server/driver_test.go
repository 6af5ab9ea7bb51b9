package server_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/rpmostreed/server"
)

// driverFile is the world's update driver file (the run dir is the transaction socket's).
func (w *world) driverFile() string {
	return filepath.Join(filepath.Dir(w.socket), server.DriverFile)
}

func (w *world) stageCount() int {
	w.backend.mu.Lock()
	defer w.backend.mu.Unlock()
	return len(w.backend.stages)
}

// ownUnit is the unit rpm-ostreed would derive for this test process.
func ownUnit(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return server.UnitOfCgroup(data)
}

// register-driver through the bus, with the production client.
func TestRegisterDriver(t *testing.T) {
	ctx := context.Background()

	t.Run("a_rebase_records_the_driver_and_stages", func(t *testing.T) {
		w := startWorld(t)
		c := w.client(t, rpmostree.Options{})
		if err := c.Rebase(ctx, refspec(digestB), rpmostree.RebaseOptions{RegisterDriver: "zincati"}); err != nil {
			t.Fatal(err)
		}
		d, err := rpmostree.ReadUpdateDriver(w.driverFile())
		if err != nil || d == nil {
			t.Fatalf("driver %+v, err %v", d, err)
		}
		if d.Name != "zincati" || d.Unit != ownUnit(t) {
			t.Fatalf("driver = %+v, want zincati in unit %q", *d, ownUnit(t))
		}
		if w.stageCount() != 1 {
			t.Fatalf("stages = %d, want 1", w.stageCount())
		}
	})

	t.Run("an_empty_revision_only_registers", func(t *testing.T) {
		w := startWorld(t)
		c := w.client(t, rpmostree.Options{})
		var messages []string
		err := c.Deploy(ctx, "", rpmostree.DeployOptions{RegisterDriver: "layerd", Reboot: true,
			Progress: func(e rpmostree.Event) {
				if m, ok := e.(rpmostree.Message); ok {
					messages = append(messages, m.Text)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		if d, err := rpmostree.ReadUpdateDriver(w.driverFile()); err != nil || d == nil || d.Name != "layerd" {
			t.Fatalf("driver %+v, err %v", d, err)
		}
		if w.stageCount() != 0 || w.srv.Reboots() != 0 {
			t.Fatalf("stages = %d, reboots = %d; want none", w.stageCount(), w.srv.Reboots())
		}
		if len(messages) != 1 || messages[0] != "Empty string revision found; registering update driver only" {
			t.Fatalf("messages = %q", messages)
		}
	})

	t.Run("the_latest_registration_wins", func(t *testing.T) {
		w := startWorld(t)
		c := w.client(t, rpmostree.Options{})
		for _, name := range []string{"zincati", "layerd"} {
			if err := c.Deploy(ctx, "", rpmostree.DeployOptions{RegisterDriver: name}); err != nil {
				t.Fatal(err)
			}
		}
		if d, err := rpmostree.ReadUpdateDriver(w.driverFile()); err != nil || d == nil || d.Name != "layerd" {
			t.Fatalf("driver %+v, err %v", d, err)
		}
		if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(w.driverFile()), ".update-driver-*")); len(leftovers) != 0 {
			t.Fatalf("temporary files left: %v", leftovers)
		}
	})

	t.Run("without_the_option_nothing_is_recorded", func(t *testing.T) {
		w := startWorld(t)
		c := w.client(t, rpmostree.Options{})
		if err := c.Rebase(ctx, refspec(digestB), rpmostree.RebaseOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(w.driverFile()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("driver file: %v, want none", err)
		}
	})

	t.Run("a_refused_transaction_records_nothing", func(t *testing.T) {
		w := startWorld(t)
		c := w.client(t, rpmostree.Options{})
		err := c.Rebase(ctx, refspec(digestB), rpmostree.RebaseOptions{RegisterDriver: "zincati", CacheOnly: true, DownloadOnly: true})
		var te *rpmostree.TxnError
		if !errors.As(err, &te) || te.Message != "Can't specify cache-only and download-only" {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(w.driverFile()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("driver file: %v, want none", err)
		}
	})
}

func TestUnitOfCgroup(t *testing.T) {
	for _, tc := range []struct{ name, cgroup, want string }{
		{"a_system_service", "0::/system.slice/zincati.service\n", "zincati.service"},
		{"a_pod_container_scope_under_the_systemd_driver",
			"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crio-abc.scope\n", "crio-abc.scope"},
		{"a_user_unit_wins_over_user_at_service",
			"0::/user.slice/user-1000.slice/user@1000.service/app.slice/tool.service\n", "tool.service"},
		{"user_at_service_alone", "0::/user.slice/user-1000.slice/user@1000.service\n", "user@1000.service"},
		{"a_login_session_scope", "0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope"},
		{"the_root_cgroup_is_no_unit", "0::/\n", ""},
		{"a_cgroupfs_driver_pod_is_no_unit", "0::/kubepods/besteffort/pod1/abc\n", ""},
		{"a_unit_below_a_non_unit_does_not_count", "0::/machine/x/foo.service\n", ""},
		{"cgroup_v1_reads_the_named_systemd_hierarchy",
			"11:memory:/system.slice/a.service\n1:name=systemd:/system.slice/zincati.service\n0::/\n", "zincati.service"},
		{"garbage_is_no_unit", "nonsense\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := server.UnitOfCgroup([]byte(tc.cgroup)); got != tc.want {
				t.Fatalf("unit = %q, want %q", got, tc.want)
			}
		})
	}
}
