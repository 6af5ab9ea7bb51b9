package nspawn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildTree(t *testing.T) {
	if _, err := hostLibDir(); err != nil {
		t.Fatal(err)
	}
	rootfs := t.TempDir()
	for name, content := range map[string]string{
		"etc/hostname": "buildhost\n", "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
		"etc/motd": "hello\n", "var/lib/dpkg/status": "x", "usr/bin/true": "bin", "dev/null": "",
	} {
		p := filepath.Join(rootfs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree := filepath.Join(t.TempDir(), "tree")
	if err := BuildTree(rootfs, tree); err != nil {
		t.Fatal(err)
	}
	t.Run("etc moves to usr/etc and state directories are empty", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(tree, "usr/etc/motd")); err != nil {
			t.Error(err)
		}
		if _, err := os.Lstat(filepath.Join(tree, "etc")); err == nil {
			t.Error("tree still has a top-level etc")
		}
		for _, d := range []string{"var", "dev", "run", "tmp", "boot", "sysroot"} {
			ents, err := os.ReadDir(filepath.Join(tree, d))
			if err != nil || len(ents) != 0 {
				t.Errorf("%s: want an empty directory, got %d entries, err %v", d, len(ents), err)
			}
		}
		if l, err := os.Readlink(filepath.Join(tree, "ostree")); err != nil || l != "sysroot/ostree" {
			t.Errorf("ostree symlink = %q, %v", l, err)
		}
	})
	t.Run("ostree and boot files are added", func(t *testing.T) {
		for _, f := range []string{
			"usr/lib/modules/" + KernelVersion + "/vmlinuz",
			"usr/lib/tmpfiles.d/ostree-booted.conf",
			"usr/etc/dbus-1/system.d/org.projectatomic.rpmostree1.conf",
			"usr/etc/systemd/system/multi-user.target.wants/ostree-finalize-staged.service",
		} {
			if _, err := os.Stat(filepath.Join(tree, f)); err != nil {
				t.Error(err)
			}
		}
		unit, err := os.ReadFile(filepath.Join(tree, "usr/etc/systemd/system/ostree-finalize-staged.service"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(unit), "@HOSTLIB@") || !strings.Contains(string(unit), "LD_LIBRARY_PATH=/run/host-usr/lib/") {
			t.Errorf("finalize unit library path not filled in:\n%s", unit)
		}
	})
	t.Run("identity comes from nspawn, not the build host", func(t *testing.T) {
		if id, err := os.ReadFile(filepath.Join(tree, "usr/etc/machine-id")); err != nil || len(id) != 0 {
			t.Errorf("machine-id = %q, %v; want empty", id, err)
		}
		if _, err := os.Lstat(filepath.Join(tree, "usr/etc/hostname")); err == nil {
			t.Error("tree keeps the build host's hostname")
		}
	})
	t.Run("the rootfs is left untouched", func(t *testing.T) {
		for name, want := range map[string]string{
			"etc/hostname": "buildhost\n", "etc/machine-id": "0123456789abcdef0123456789abcdef\n", "var/lib/dpkg/status": "x",
		} {
			got, err := os.ReadFile(filepath.Join(rootfs, name))
			if err != nil || string(got) != want {
				t.Errorf("rootfs %s = %q, %v; want %q", name, got, err, want)
			}
		}
	})
}
