package hostfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"layerd.dev/layerd/pkg/hostfs"
)

func winsV1(tree string) {
	mustWrite(filepath.Join(tree, "usr/etc/app.conf"), "level=1\n")
	mustWrite(filepath.Join(tree, "usr/etc/owner.conf"), "o1\n")
	mustDo(os.Symlink("app.conf", filepath.Join(tree, "usr/etc/current")))
}

func winsV2(tree string) {
	mustWrite(filepath.Join(tree, "usr/etc/app.conf"), "level=2\n")
	mustWrite(filepath.Join(tree, "usr/etc/owner.conf"), "o2\n")
	mustWrite(filepath.Join(tree, "usr/etc/new.conf"), "new default\n")
	mustDo(os.Symlink("owner.conf", filepath.Join(tree, "usr/etc/current")))
}

func TestImageWinsBacksUpAndRestores(t *testing.T) {
	t.Parallel()
	n, ctx := newNode(t, winsV1)
	etc := filepath.Join(n.booted.Path, "etc")
	write(t, etc, "app.conf", "level=local\n", 0o600)
	must(t, unix.Setxattr(filepath.Join(etc, "app.conf"), "user.layerd", []byte("label"), 0))
	must(t, os.Chown(filepath.Join(etc, "owner.conf"), 1000, 1000))
	write(t, etc, "new.conf", "mine\n", 0o644)
	must(t, os.Remove(filepath.Join(etc, "current")))
	must(t, os.Symlink("/etc/elsewhere", filepath.Join(etc, "current")))
	staged := n.stage(t, ctx, winsV2)
	h := n.host(t, hostfs.Limits{})
	rep, err := h.PreviewEtc(ctx, ref(n.booted), ref(staged))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(rep.Conflicts()); got != 4 {
		t.Fatalf("%d conflicts, want 4: %+v", got, rep.Entries)
	}
	digest := "sha256:" + strings.Repeat("d", 64)
	backupDir := filepath.Join(n.s.StaterootVar(), hostfs.BackupDir, digest)
	apply := func(t *testing.T) {
		t.Helper()
		if _, err := h.EtcBackupAndApply(ctx, rep, digest); err != nil {
			t.Fatal(err)
		}
	}
	assertLocal := func(t *testing.T) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(etc, "app.conf"))
		if err != nil || fi.Mode().Perm() != 0o600 || readString(t, filepath.Join(etc, "app.conf")) != "level=local\n" {
			t.Errorf("app.conf: %v %v", fi, err)
		}
		if v, err := getxattr(filepath.Join(etc, "app.conf"), "user.layerd"); err != nil || v != "label" {
			t.Errorf("app.conf xattr %q %v", v, err)
		}
		if st := stat(t, filepath.Join(etc, "owner.conf")); st.Uid != 1000 {
			t.Errorf("owner.conf uid %d", st.Uid)
		}
		if got := readString(t, filepath.Join(etc, "new.conf")); got != "mine\n" {
			t.Errorf("new.conf %q", got)
		}
		if got, _ := os.Readlink(filepath.Join(etc, "current")); got != "/etc/elsewhere" {
			t.Errorf("current -> %q", got)
		}
	}

	t.Run("puts the booted defaults back and keeps the edits in the backup", func(t *testing.T) {
		apply(t)
		if got := readString(t, filepath.Join(etc, "app.conf")); got != "level=1\n" {
			t.Errorf("app.conf %q", got)
		}
		if v, err := getxattr(filepath.Join(etc, "app.conf"), "user.layerd"); err != nil || v != "label" {
			t.Errorf("live xattr not kept: %q %v", v, err)
		}
		if _, err := os.Lstat(filepath.Join(etc, "new.conf")); !os.IsNotExist(err) {
			t.Errorf("new.conf (no booted default) still there: %v", err)
		}
		if got := readString(t, filepath.Join(backupDir, "files/app.conf")); got != "level=local\n" {
			t.Errorf("backup app.conf %q", got)
		}
		bs, err := h.EtcBackups()
		if err != nil || len(bs) != 1 || bs[0].Digest != digest || bs[0].Booted != ref(n.booted) || len(bs[0].Files) != 4 {
			t.Errorf("EtcBackups %+v, %v; want the one backup of %s made from the booted deployment", bs, err, digest)
		}
		again, err := h.PreviewEtc(ctx, ref(n.booted), ref(staged))
		if err != nil {
			t.Fatal(err)
		}
		if len(again.Conflicts()) != 0 {
			t.Errorf("conflicts left: %+v", again.Conflicts())
		}
	})

	t.Run("restore puts the local files back with owner, mode and xattrs", func(t *testing.T) {
		if _, err := h.RestoreEtc(ctx, digest); err != nil {
			t.Fatal(err)
		}
		assertLocal(t)
		if _, err := os.Stat(backupDir); !os.IsNotExist(err) {
			t.Errorf("backup not retired after restore: %v", err)
		}
		if bs, err := h.EtcBackups(); err != nil || len(bs) != 0 {
			t.Errorf("EtcBackups after restore %+v, %v; want none (retired)", bs, err)
		}
	})

	t.Run("a file edited after the backup is left alone", func(t *testing.T) {
		apply(t)
		write(t, etc, "app.conf", "edited again\n", 0o644)
		if _, err := h.EtcBackupAndApply(ctx, rep, digest); !errors.Is(err, hostfs.ErrEditedSinceBackup) {
			t.Errorf("re-apply over a new edit: %v", err)
		}
		if got := readString(t, filepath.Join(etc, "app.conf")); got != "edited again\n" {
			t.Errorf("app.conf %q", got)
		}
		b, err := h.RestoreEtc(ctx, digest)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Kept) != 1 || b.Kept[0] != "app.conf" {
			t.Errorf("kept %q", b.Kept)
		}
		if got := readString(t, filepath.Join(etc, "app.conf")); got != "edited again\n" {
			t.Errorf("restore overwrote the new edit: %q", got)
		}
		write(t, etc, "app.conf", "level=local\n", 0o600)
		must(t, unix.Setxattr(filepath.Join(etc, "app.conf"), "user.layerd", []byte("label"), 0))
		assertLocal(t)
	})

	t.Run("after finalize the new defaults are in etc and the edits in the backup", func(t *testing.T) {
		apply(t) // a second application reuses the recorded backup
		if _, err := n.s.ExecBooted(ctx, n.booted.Path, n.runDir, "ostree", "admin", "finalize-staged"); err != nil {
			t.Fatal(err)
		}
		newEtc := filepath.Join(staged.Path, "etc")
		for name, want := range map[string]string{"app.conf": "level=2\n", "owner.conf": "o2\n", "new.conf": "new default\n"} {
			if got := readString(t, filepath.Join(newEtc, name)); got != want {
				t.Errorf("%s after finalize: %q, want %q", name, got, want)
			}
		}
		if got, _ := os.Readlink(filepath.Join(newEtc, "current")); got != "owner.conf" {
			t.Errorf("current -> %q after finalize", got)
		}
		if got := readString(t, filepath.Join(backupDir, "files/new.conf")); got != "mine\n" {
			t.Errorf("backup new.conf %q", got)
		}
	})
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}
