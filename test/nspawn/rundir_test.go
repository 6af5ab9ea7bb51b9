package nspawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunDirIsAHostDirectory boots a node whose /run is a host directory (Options.RunDir, a
// fresh tmpfs per boot): systemd runs normally on it, the host sees the node's bus socket
// there, every boot starts with it empty, the journal still persists, and nothing stays
// mounted after Stop.
func TestRunDirIsAHostDirectory(t *testing.T) {
	if err := Prerequisites(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	base, err := EnsureBase(ctx, RootfsOptions{Log: t.Output()})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sys, _, err := PrepareSysroot(ctx, base, filepath.Join(dir, "sysroot"), "debian")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Remove(); err != nil {
			t.Error(err)
		}
	})
	run := filepath.Join(dir, "run")
	writeFiles(t, run, map[string]string{"hidden-by-the-tmpfs": "x"})
	t0 := time.Now()
	node, err := Start(ctx, Options{Sysroot: sys.Path, OSName: "debian", WorkDir: filepath.Join(dir, "work"), RunDir: run})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := node.Stop(context.Background()); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("console tail:\n%s", node.consoleTail())
		}
	})
	if err := node.WaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BENCH booted-node-start-host-run: %.2fs\n", time.Since(t0).Seconds())

	t.Run("systemd runs without failed units on a host directory /run", func(t *testing.T) {
		if st, err := node.SystemState(ctx); st != "running" {
			failed, _ := node.Exec(ctx, "systemctl", "--failed", "--no-legend")
			t.Errorf("system state %q (%v); failed units:\n%s", st, err, failed)
		}
		if node.RunDir() != run {
			t.Errorf("RunDir() = %q, want %q", node.RunDir(), run)
		}
	})
	t.Run("the host sees the node's run files at RunDir", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(run, "hidden-by-the-tmpfs")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the node's /run is not a fresh tmpfs: %v", err)
		}
		if fi, err := os.Stat(filepath.Join(run, "dbus", "system_bus_socket")); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("no bus socket in the host directory: %v", err)
		}
		if _, err := node.Exec(ctx, "sh", "-c", "echo inside > /run/made-inside"); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(run, "made-inside")); err != nil || strings.TrimSpace(string(b)) != "inside" {
			t.Errorf("file written inside: %q, %v", b, err)
		}
	})
	t.Run("a reboot starts with an empty run directory", func(t *testing.T) {
		if err := node.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(run, "made-inside")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/run kept a file across the reboot: %v", err)
		}
		if _, err := os.Stat(filepath.Join(run, "dbus", "system_bus_socket")); err != nil {
			t.Errorf("no bus socket after the reboot: %v", err)
		}
		// The first boot's journal was flushed to /var and survives /run being emptied.
		j, err := node.Journal(ctx, "-b", "-1", "-o", "cat", "_PID=1")
		if err != nil || !strings.Contains(j, "Startup finished") || !strings.Contains(j, "Reached target reboot.target") {
			jd, _ := node.Journal(ctx, "-u", "systemd-journald.service")
			t.Errorf("the previous boot's journal is incomplete (%v):\n%s\njournald:\n%s", err, lastLines(j, 10), jd)
		}
	})
	t.Run("stop leaves nothing behind", func(t *testing.T) {
		if err := node.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := Leftovers(dir); err != nil {
			t.Error(err)
		}
	})
}
