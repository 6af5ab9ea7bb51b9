package nspawn

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Files the tree gets on top of the debootstrap rootfs.
var (
	//go:embed assets/ostree-finalize-staged.service
	finalizeUnit string
	//go:embed assets/org.projectatomic.rpmostree1.conf
	rpmostreePolicy string
)

const (
	// KernelVersion names the placeholder kernel ostree requires under usr/lib/modules.
	KernelVersion = "6.1.0-layerd"
	// treeLayout versions the conversion below; bump it when the conversion changes
	// (it is part of the cache key of the committed base tree).
	treeLayout         = "nspawn-tree-v1"
	ostreeBootedTmpfil = "f /run/ostree-booted 0644 root root -\n"
)

// hostLibDir finds the host's multiarch library directory holding libostree (e.g.
// x86_64-linux-gnu), relative to /usr/lib. Inside the container the host's /usr is at
// /run/host-usr, so the host's ostree runs with LD_LIBRARY_PATH=/run/host-usr/lib/<it>.
func hostLibDir() (string, error) {
	m, err := filepath.Glob("/usr/lib/*/libostree-1.so.1")
	if err != nil || len(m) == 0 {
		return "", fmt.Errorf("nspawn: host libostree-1.so.1 not found under /usr/lib/*/ (apt-get install -y ostree)")
	}
	return filepath.Base(filepath.Dir(m[0])), nil
}

// treeFiles are the files added to the converted tree, by root-relative path.
func treeFiles(libDir string) map[string]string {
	return map[string]string{
		"usr/lib/modules/" + KernelVersion + "/vmlinuz":             "placeholder kernel for ostree\n",
		"usr/lib/tmpfiles.d/ostree-booted.conf":                     ostreeBootedTmpfil,
		"usr/etc/systemd/system/ostree-finalize-staged.service":     strings.ReplaceAll(finalizeUnit, "@HOSTLIB@", "/run/host-usr/lib/"+libDir),
		"usr/etc/dbus-1/system.d/org.projectatomic.rpmostree1.conf": rpmostreePolicy,
		"usr/etc/machine-id":                                        "", // empty: systemd uses nspawn's --uuid
	}
}

// BuildTree turns rootfs (a debootstrap output, left untouched) into an ostree-committable,
// nspawn-bootable tree at dst (which must not exist), hardlinking rather than copying files:
// dev/ var/ run/ tmp/ boot/ emptied, etc → usr/etc, sysroot/ and ostree → sysroot/ostree, a
// placeholder kernel, /run/ostree-booted from tmpfiles, the finalize unit enabled for
// multi-user.target, rpm-ostree's bus policy, an empty machine-id and no hostname (nspawn's
// --uuid and --hostname provide them).
func BuildTree(rootfs, dst string) error {
	libDir, err := hostLibDir()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("nspawn: build tree: %s exists", dst)
	}
	// cp -al: directories are created, files and symlinks hardlinked. Every change below
	// replaces or removes entries, never writes into a file (it would write the rootfs).
	if out, err := exec.Command("cp", "-al", "--", rootfs, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("nspawn: hardlink copy of the rootfs: %w: %s", err, out)
	}
	for _, d := range []string{"dev", "var", "run", "tmp", "boot"} {
		if err := os.RemoveAll(filepath.Join(dst, d)); err != nil {
			return fmt.Errorf("nspawn: emptying %s: %w", d, err)
		}
		if err := os.Mkdir(filepath.Join(dst, d), 0o755); err != nil {
			return fmt.Errorf("nspawn: build tree: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dst, "tmp"), 0o1777); err != nil {
		return fmt.Errorf("nspawn: build tree: %w", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "usr", "etc")); err == nil {
		return fmt.Errorf("nspawn: build tree: rootfs already has usr/etc")
	}
	if err := os.Rename(filepath.Join(dst, "etc"), filepath.Join(dst, "usr", "etc")); err != nil {
		return fmt.Errorf("nspawn: moving etc to usr/etc: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dst, "sysroot"), 0o755); err != nil {
		return fmt.Errorf("nspawn: build tree: %w", err)
	}
	if err := os.Symlink("sysroot/ostree", filepath.Join(dst, "ostree")); err != nil {
		return fmt.Errorf("nspawn: build tree: %w", err)
	}
	if err := os.Remove(filepath.Join(dst, "usr", "etc", "hostname")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("nspawn: removing the rootfs hostname: %w", err)
	}
	for rel, content := range treeFiles(libDir) {
		mode := os.FileMode(0o644)
		if rel == "usr/etc/machine-id" {
			mode = 0o444
		}
		if err := replaceFile(filepath.Join(dst, rel), content, mode); err != nil {
			return fmt.Errorf("nspawn: build tree: %w", err)
		}
	}
	wants := filepath.Join(dst, "usr/etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return fmt.Errorf("nspawn: build tree: %w", err)
	}
	if err := os.Symlink("../ostree-finalize-staged.service", filepath.Join(wants, "ostree-finalize-staged.service")); err != nil {
		return fmt.Errorf("nspawn: enabling the finalize unit: %w", err)
	}
	return nil
}

// replaceFile writes a new file at path (unlinking whatever is there first, so that a
// hardlink into the cached rootfs is never written through), creating parent directories.
func replaceFile(path, content string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(path, mode) // umask-proof
}

// treeKey identifies the converted tree of a rootfs: the layout version and added files.
func treeKey(rootfsKey string) (string, error) {
	libDir, err := hostLibDir()
	if err != nil {
		return "", err
	}
	parts := []string{treeLayout, rootfsKey}
	for rel, c := range treeFiles(libDir) {
		parts = append(parts, rel+"\x01"+c)
	}
	slices.Sort(parts[2:]) // map order is random

	return shortHash(parts...), nil
}
