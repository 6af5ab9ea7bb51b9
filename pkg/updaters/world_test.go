package updaters_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/pkg/updaters"
	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/systemd"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/rpmostreed/server"
)

// helperEnv makes the test binary a registering client instead of running the tests: copied
// into a booted node and started there as a systemd unit, it registers as an update driver the
// way zincati does (`rpm-ostree deploy --register-driver Zincati ""`).
const helperEnv = "LAYERD_UPDATERS_TEST_REGISTER"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(registerDriver(name))
	}
	os.Exit(m.Run())
}

func registerDriver(name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := rpmostree.NewWithAddress(ctx, "unix:path=/run/dbus/system_bus_socket", rpmostree.Options{ClientID: "zincati"})
	if err == nil {
		err = c.Deploy(ctx, "", rpmostree.DeployOptions{RegisterDriver: name})
		_ = c.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "registering the update driver:", err)
		return 1
	}
	return 0
}

// nodeDetector is a Detector on a node of the world, looking at it as the agent's pod does: the
// node's /run (its driver file), its system bus, its booted deployment as the host root.
func nodeDetector(t *testing.T, n *harness.Node) *updaters.Detector {
	t.Helper()
	conn, err := systemd.ConnectSystemBus(n.BusAddress())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	units, err := systemd.NewSystemdUnits(conn)
	if err != nil {
		t.Fatal(err)
	}
	booted, err := n.Booted()
	if err != nil {
		t.Fatal(err)
	}
	d, err := updaters.New(updaters.Options{DriverFile: filepath.Join(n.RunDir, server.DriverFile), HostRoot: booted.Dir, Units: units})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func check(t *testing.T, d *updaters.Detector, p updaters.Policy) updaters.Report {
	t.Helper()
	r, err := d.Check(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The driver file through the stand-in on the directory tier (no systemd on its bus).
func TestDetectorOnDirectoryTier(t *testing.T) {
	w := harness.Start(t, harness.Options{})
	n := w.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := nodeDetector(t, n)

	t.Run("a_fresh_node_has_no_conflicts_and_its_units_are_unchecked", func(t *testing.T) {
		r := check(t, d, updaters.Policy{})
		if len(r.Conflicts) != 0 || len(r.Unchecked) != 1 || r.Unchecked[0].Source != "systemd units" || !errors.Is(r.Unchecked[0].Err, systemd.ErrNoSystemd) {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("zincati_registered_with_rpm-ostree_conflicts_unless_allowed", func(t *testing.T) {
		other, err := rpmostree.NewWithAddress(ctx, n.BusAddress(), rpmostree.Options{ClientID: "zincati", Dial: n.DialTxn})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if err := other.Deploy(ctx, "", rpmostree.DeployOptions{RegisterDriver: "Zincati"}); err != nil {
			t.Fatal(err)
		}
		r := check(t, d, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].Name != "Zincati" || !strings.HasPrefix(r.Conflicts[0].Evidence, "registered as rpm-ostree's update driver") {
			t.Fatalf("report = %+v", r)
		}
		if !strings.Contains(r.Message(), "Zincati (registered as rpm-ostree's update driver") {
			t.Errorf("message = %q", r.Message())
		}
		if r := check(t, d, updaters.Policy{Allowed: []string{"zincati"}}); len(r.Conflicts) != 0 || len(r.Allowed) != 1 {
			t.Fatalf("allowed: report = %+v", r)
		}
	})

	t.Run("layerd_registered_by_its_own_rebase_is_no_conflict", func(t *testing.T) {
		img, err := w.Images.Layered(ctx, w.Base, osimage.Spec{Repo: "fcos/os", Tag: "updaters", Version: "2.0",
			Files: map[string]osimage.File{"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho 2.0\n"}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
			t.Fatal(err)
		}
		c, err := rpmostree.NewWithAddress(ctx, n.BusAddress(), rpmostree.Options{ClientID: "layerd", Dial: n.DialTxn})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		res, err := c.StageImage(ctx, img.Pinned, rpmostree.RebaseOptions{LockFinalization: true, RegisterDriver: updaters.Self})
		if err != nil || !res.Started {
			t.Fatalf("staging: %+v, %v", res, err)
		}
		drv, err := rpmostree.ReadUpdateDriver(filepath.Join(n.RunDir, server.DriverFile))
		if err != nil || drv == nil || drv.Name != "layerd" {
			t.Fatalf("driver %+v, %v", drv, err)
		}
		if r := check(t, d, updaters.Policy{}); len(r.Conflicts) != 0 {
			t.Fatalf("conflicts = %+v", r.Conflicts)
		}
	})

	t.Run("the_machine_config_daemon's_file_on_the_host_root_conflicts", func(t *testing.T) {
		booted, err := n.Booted()
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(booted.Dir, "etc", "machine-config-daemon")
		writeFile(t, filepath.Join(dir, "currentconfig"), []byte(`{"kind":"MachineConfig"}`))
		defer os.RemoveAll(dir)
		r := check(t, d, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].String() != "machine-config-daemon (/etc/machine-config-daemon/currentconfig exists)" {
			t.Fatalf("report = %+v", r)
		}
	})
}

// Units through a booted node's real systemd.
func TestDetectorOnBootedTier(t *testing.T) {
	w := harness.Start(t, harness.Options{Booted: 1})
	n := w.Nodes[0]
	nsp := n.Nspawn()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	exec := func(t *testing.T, args ...string) {
		t.Helper()
		if out, err := nsp.Exec(ctx, args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	d := nodeDetector(t, n)

	t.Run("a_clean_node_has_no_conflicts_and_every_source_is_checked", func(t *testing.T) {
		if r := check(t, d, updaters.Policy{}); len(r.Conflicts)+len(r.Unchecked)+len(r.Ignored) != 0 {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("a_running_zincati_conflicts_until_stopped", func(t *testing.T) {
		exec(t, "systemd-run", "--unit=zincati.service", "sleep", "infinity")
		r := check(t, d, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].String() != "zincati (zincati.service is active (running) and transient)" {
			t.Fatalf("report = %+v", r)
		}
		exec(t, "systemctl", "stop", "zincati.service")
		if r := check(t, d, updaters.Policy{}); len(r.Conflicts) != 0 {
			t.Fatalf("after stop: %+v", r.Conflicts)
		}
	})

	t.Run("an_enabled_bootc_timer_conflicts_until_disabled", func(t *testing.T) {
		exec(t, "sh", "-c", `cat >/etc/systemd/system/bootc-fetch-apply-updates.service <<'EOF'
[Unit]
Description=stand-in for bootc's update service
[Service]
Type=oneshot
ExecStart=/bin/true
EOF
cat >/etc/systemd/system/bootc-fetch-apply-updates.timer <<'EOF'
[Unit]
Description=stand-in for bootc's update timer
[Timer]
OnCalendar=yearly
[Install]
WantedBy=timers.target
EOF
systemctl daemon-reload && systemctl enable bootc-fetch-apply-updates.timer`)
		defer exec(t, "sh", "-c", "rm -f /etc/systemd/system/bootc-fetch-apply-updates.* && systemctl daemon-reload")
		r := check(t, d, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].String() != "bootc (bootc-fetch-apply-updates.timer is inactive (dead) and enabled)" {
			t.Fatalf("report = %+v", r)
		}
		if r := check(t, d, updaters.Policy{Allowed: []string{"bootc"}}); len(r.Conflicts) != 0 || len(r.Allowed) != 1 {
			t.Fatalf("allowed: %+v", r)
		}
		exec(t, "systemctl", "disable", "bootc-fetch-apply-updates.timer")
		if r := check(t, d, updaters.Policy{}); len(r.Conflicts) != 0 {
			t.Fatalf("after disable: %+v", r.Conflicts)
		}
	})

	t.Run("a_driver_registered_from_its_unit_counts_while_the_unit_runs", func(t *testing.T) {
		// the test binary, inside the node, registers from a transient zincati.service
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		copyFile(t, self, filepath.Join(n.RunDir, "updaters-register"))
		exec(t, "systemd-run", "--unit=zincati.service", "--wait", "--collect", "--quiet",
			"--setenv="+helperEnv+"=Zincati", "/run/updaters-register")
		drv, err := rpmostree.ReadUpdateDriver(filepath.Join(n.RunDir, server.DriverFile))
		if err != nil || drv == nil || *drv != (rpmostree.UpdateDriver{Name: "Zincati", Unit: "zincati.service"}) {
			t.Fatalf("driver %+v, %v; want Zincati in zincati.service", drv, err)
		}
		// the registering unit has ended: the driver is stale, as rpm-ostree's CLI sees it
		r := check(t, d, updaters.Policy{})
		if len(r.Conflicts) != 0 || len(r.Ignored) != 1 || r.Ignored[0].Name != "Zincati" {
			t.Fatalf("report = %+v", r)
		}
		exec(t, "systemd-run", "--unit=zincati.service", "sleep", "infinity")
		defer exec(t, "systemctl", "stop", "zincati.service")
		r = check(t, d, updaters.Policy{})
		want := []string{
			"Zincati (registered as rpm-ostree's update driver by zincati.service, which is active (running) and transient)",
			"zincati (zincati.service is active (running) and transient)",
		}
		if len(r.Conflicts) != 2 || r.Conflicts[0].String() != want[0] || r.Conflicts[1].String() != want[1] {
			t.Fatalf("conflicts = %+v", r.Conflicts)
		}
	})
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
