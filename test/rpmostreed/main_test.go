package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/dbusd"
	"layerd.dev/layerd/test/ostreesys"
	"layerd.dev/layerd/test/rpmostreed/backend"
)

// TestMain lets the test binary run as the command (re-exec with RPMOSTREED_TEST_MAIN=1).
func TestMain(m *testing.M) {
	if os.Getenv("RPMOSTREED_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// The command serves a real sysroot on a private bus, obeys the control file on SIGUSR1 and
// exits on SIGTERM.
func TestCommandServesASysroot(t *testing.T) {
	if err := ostreesys.Prerequisites(); err != nil {
		t.Fatalf("needs root and the Debian ostree tools: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "rpmostreed-cmd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	runDir := filepath.Join(dir, "run")
	sys, err := ostreesys.Init(ctx, filepath.Join(dir, "sysroot"), "fcos")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Remove() })
	tree := filepath.Join(dir, "tree")
	if err := ostreesys.BuildTree(tree, ostreesys.TreeOptions{Version: "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.CommitTree(ctx, tree, "fcos/stable", map[string]string{"version": "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Deploy(ctx, "fcos/stable", ostreesys.DeployOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Boot(ctx, sys.Path, runDir); err != nil {
		t.Fatal(err)
	}
	bus, err := dbusd.Start(filepath.Join(dir, "bus"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })

	cmd := exec.Command(os.Args[0], "--bus-address", bus.Address(), "--sysroot", sys.Path,
		"--txn-socket", filepath.Join(runDir, "rpm-ostree-transaction.sock"))
	cmd.Env = append(os.Environ(), "RPMOSTREED_TEST_MAIN=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	var c *rpmostree.Client
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err = rpmostree.NewWithAddress(ctx, bus.Address(), rpmostree.Options{}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("stand-in did not come up: %v", err)
		}
	}
	defer c.Close()

	t.Run("reports_the_booted_deployment", func(t *testing.T) {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Booted == nil || st.Booted.OSName != "fcos" || st.Booted.Version != "1" || st.Path != sys.Path {
			t.Fatalf("status = %+v booted = %+v", st, st.Booted)
		}
	})

	t.Run("applies_the_control_file_on_sigusr1", func(t *testing.T) {
		control := filepath.Join(runDir, "rpm-ostreed.control")
		if err := os.WriteFile(control, []byte("fail-next injected failure\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		err := c.Upgrade(ctx, rpmostree.DeployOptions{})
		var te *rpmostree.TxnError
		if !errors.As(err, &te) || te.Message != "injected failure" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("exits_cleanly_on_sigterm", func(t *testing.T) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still running after SIGTERM")
		}
	})
}
