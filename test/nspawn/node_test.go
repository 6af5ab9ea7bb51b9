package nspawn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// bootLog records the node's boot callbacks (called from the boot loop goroutine).
type bootLog struct {
	mu        sync.Mutex
	boots     []string
	shutdowns int
}

func (b *bootLog) onBoot(id string) { b.mu.Lock(); b.boots = append(b.boots, id); b.mu.Unlock() }
func (b *bootLog) onShutdown()      { b.mu.Lock(); b.shutdowns++; b.mu.Unlock() }
func (b *bootLog) get() ([]string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.boots), b.shutdowns
}

// TestBootedNode is the booted tier's acceptance test: a cached Debian base deployed to an
// ostree sysroot boots under systemd-nspawn, a staged v2 is finalized at `systemctl reboot`
// and boots with v1 as rollback, and Stop leaves nothing behind.
func TestBootedNode(t *testing.T) {
	if err := Prerequisites(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	t0 := time.Now()
	base, err := EnsureBase(ctx, RootfsOptions{Log: t.Output()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("base %s (rootfs %s from %s) ready in %s", base.Checksum[:12], base.Rootfs.Key, base.Rootfs.Mirror, time.Since(t0).Round(time.Millisecond))

	dir := t.TempDir()
	t0 = time.Now()
	sys, v1, err := PrepareSysroot(ctx, base, filepath.Join(dir, "sysroot"), "debian")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // registered before the node's cleanup: runs after the node is stopped
		if err := sys.Remove(); err != nil {
			t.Error(err)
		}
	})
	overlay := filepath.Join(dir, "v2")
	writeFiles(t, overlay, map[string]string{"usr/etc/motd": "layerd v2 motd\n", "usr/lib/layerd-test/v2": "added in v2\n"})
	v2, err := CommitOverlay(ctx, sys, BaseRef, overlay, "nspawn/v2", map[string]string{"version": "2"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sysroot with v1 %s deployed and v2 %s committed in %s", v1.Checksum[:12], v2[:12], time.Since(t0).Round(time.Millisecond))

	var boots bootLog
	t0 = time.Now()
	node, err := Start(ctx, Options{
		Sysroot: sys.Path, OSName: "debian", WorkDir: filepath.Join(dir, "work"), Hostname: "node-a",
		OnBoot: boots.onBoot, OnShutdown: boots.onShutdown,
	})
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
	fmt.Printf("BENCH booted-node-start: %.2fs\n", time.Since(t0).Seconds())
	firstBoot := node.BootID()

	t.Run("systemd runs journald, dbus and logind without failed units", func(t *testing.T) {
		if st, err := node.SystemState(ctx); st != "running" {
			failed, _ := node.Exec(ctx, "systemctl", "--failed", "--no-legend")
			t.Errorf("system state %q (%v); failed units:\n%s", st, err, failed)
		}
		for _, unit := range []string{"systemd-journald.service", "dbus.service", "systemd-logind.service", "ostree-finalize-staged.service"} {
			if out, err := node.Exec(ctx, "systemctl", "is-active", unit); err != nil {
				t.Errorf("%s: %s %v", unit, out, err)
			}
		}
		if out, err := node.Exec(ctx, "hostname"); err != nil || strings.TrimSpace(string(out)) != "node-a" {
			t.Errorf("hostname = %q, %v", out, err)
		}
		if out, err := node.Exec(ctx, "cat", "/etc/machine-id"); err != nil || strings.TrimSpace(string(out)) != node.MachineID() {
			t.Errorf("machine-id = %q, %v; want %s", out, err, node.MachineID())
		}
	})
	t.Run("boot ID is the container's own and the journal shows the boot", func(t *testing.T) {
		host, _ := readTrimmed("/proc/sys/kernel/random/boot_id")
		if firstBoot == "" || firstBoot == host {
			t.Fatalf("boot ID %q (host %q)", firstBoot, host)
		}
		if b, _ := boots.get(); !slices.Equal(b, []string{firstBoot}) {
			t.Errorf("OnBoot calls %v, want [%s]", b, firstBoot)
		}
		out, err := node.Journal(ctx, "--list-boots")
		if err != nil || !strings.Contains(out, strings.ReplaceAll(firstBoot, "-", "")) {
			t.Errorf("journalctl --list-boots lacks %s: %s %v", firstBoot, out, err)
		}
		out, err = node.Journal(ctx, "-b", "-o", "cat", "_PID=1")
		i := strings.Index(out, "Startup finished")
		if err != nil || i < 0 {
			t.Fatalf("journal of this boot lacks \"Startup finished\" (%v):\n%s", err, lastLines(out, 15))
		}
		t.Logf("PID 1: %s", strings.SplitN(out[i:], "\n", 2)[0])
	})
	t.Run("the host's ostree inside sees the booted deployment", func(t *testing.T) {
		out, err := node.ExecOstree(ctx, "admin", "status")
		if err != nil || !strings.Contains(string(out), "* debian "+v1.Checksum+".0") {
			t.Errorf("ostree admin status (%v):\n%s", err, out)
		}
	})
	t.Run("the system bus is reachable from the host", func(t *testing.T) {
		conn, err := dbus.Connect(node.BusAddress())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var names []string
		if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.ListNames", 0).Store(&names); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(names, "org.freedesktop.login1") {
			t.Errorf("bus names %v lack org.freedesktop.login1", names)
		}
	})
	if !t.Run("a staged v2 boots after systemctl reboot with v1 as rollback", func(t *testing.T) {
		testStagedReboot(ctx, t, node, v1.Checksum, v2, firstBoot)
	}) {
		return
	}
	t.Run("a crash boots the default again and drops a staged deployment", func(t *testing.T) {
		if out, err := node.ExecOstree(ctx, "admin", "deploy", "--stage", BaseRef); err != nil {
			t.Fatalf("deploy --stage: %v\n%s", err, out)
		}
		before := node.BootID()
		if err := node.Crash(ctx); err != nil {
			t.Fatal(err)
		}
		if id := node.BootID(); id == before || node.Reboots() != 2 {
			t.Errorf("after the crash: boot ID %s (before %s), Reboots() = %d, want a new ID and 2", id, before, node.Reboots())
		}
		out, err := node.ExecOstree(ctx, "admin", "status")
		if err != nil || !strings.Contains(string(out), "* debian "+v2+".0") || strings.Contains(string(out), "staged") {
			t.Errorf("after the crash, ostree admin status (%v):\n%s", err, out)
		}
	})
	t.Run("stop leaves no process, mount or socket behind", func(t *testing.T) {
		pids := node.allPIDs()
		t0 := time.Now()
		if err := node.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("stopped in %s", time.Since(t0).Round(time.Millisecond))
		for _, pid := range pids {
			if processAlive(pid) {
				t.Errorf("process %d of the node is still alive", pid)
			}
		}
		if err := Leftovers(dir); err != nil {
			t.Error(err)
		}
		if ents, err := os.ReadDir("/run/systemd/nspawn"); err == nil && len(ents) > 0 {
			t.Errorf("/run/systemd/nspawn on the host is not empty: %v", ents)
		}
		if b, s := boots.get(); len(b) != 3 || s != 3 {
			t.Errorf("OnBoot calls %v and %d OnShutdown calls, want 3 and 3", b, s)
		}
	})
}

// testStagedReboot stages v2 inside the node, edits /etc after staging, reboots and checks
// that v2 is booted with v1 as rollback and that the finalize unit merged /etc.
func testStagedReboot(ctx context.Context, t *testing.T, node *Node, v1, v2, firstBoot string) {
	if out, err := node.ExecOstree(ctx, "admin", "deploy", "--stage", "nspawn/v2"); err != nil {
		t.Fatalf("deploy --stage: %v\n%s", err, out)
	}
	if out, err := node.ExecOstree(ctx, "admin", "status"); err != nil || !strings.Contains(string(out), v2+".0 (staged)") {
		t.Fatalf("after staging, ostree admin status (%v):\n%s", err, out)
	}
	if _, err := node.Exec(ctx, "sh", "-c", "echo local edit > /etc/layerd-local.conf"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := node.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BENCH booted-node-reboot: %.2fs\n", time.Since(t0).Seconds())

	if id := node.BootID(); id == firstBoot || id == "" {
		t.Errorf("boot ID after reboot %q, before %q", id, firstBoot)
	}
	if r := node.Reboots(); r != 1 {
		t.Errorf("Reboots() = %d, want 1", r)
	}
	if !strings.HasSuffix(node.Deployment(), "/"+v2+".0") {
		t.Errorf("booted %s, want the v2 deployment %s.0", node.Deployment(), v2)
	}
	out, err := node.ExecOstree(ctx, "admin", "status")
	if err != nil || !strings.Contains(string(out), "* debian "+v2+".0") || !strings.Contains(string(out), v1+".0 (rollback)") {
		t.Errorf("after reboot, ostree admin status (%v):\n%s", err, out)
	}
	for file, want := range map[string]string{
		"/etc/motd":               "layerd v2 motd\n",
		"/etc/layerd-local.conf":  "local edit\n",
		"/usr/lib/layerd-test/v2": "added in v2\n",
	} {
		if got, err := node.Exec(ctx, "cat", file); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", file, got, err, want)
		}
	}
	j, err := node.Journal(ctx, "-b", "-1", "-u", "ostree-finalize-staged.service", "-o", "cat")
	if err != nil || !strings.Contains(j, "Copying /etc changes") {
		t.Errorf("journal of the previous boot lacks the finalize step (%v):\n%s", err, j)
	}
}

// writeFiles creates files (root-relative name → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
