package ostreesys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Top-level links and directories of an FCOS-like ostree tree (notes §2).
var (
	treeLinks = [][2]string{
		{"bin", "usr/bin"}, {"lib", "usr/lib"}, {"lib64", "usr/lib64"}, {"sbin", "usr/sbin"},
		{"ostree", "sysroot/ostree"}, {"home", "var/home"}, {"root", "var/roothome"},
	}
	treeDirs = []string{"sysroot", "var", "boot", "dev", "proc", "run", "sys", "tmp",
		"usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/etc"}
)

// PrepareTree turns a flattened image root into an ostree-committable tree:
// the top-level etc/ moves into usr/etc/ (merged, etc/ winning, when both
// exist) and the top-level directories and FCOS-like symlinks are created
// when missing. Existing entries are left alone.
func PrepareTree(dst string) error {
	etc, usrEtc := filepath.Join(dst, "etc"), filepath.Join(dst, "usr", "etc")
	if fi, err := os.Lstat(etc); err == nil && fi.IsDir() {
		if err := os.MkdirAll(filepath.Join(dst, "usr"), 0o755); err != nil {
			return fmt.Errorf("ostreesys: prepare tree: %w", err)
		}
		if _, err := os.Lstat(usrEtc); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(etc, usrEtc); err != nil {
				return fmt.Errorf("ostreesys: prepare tree: move etc: %w", err)
			}
		} else if err := mergeInto(etc, usrEtc); err != nil {
			return fmt.Errorf("ostreesys: prepare tree: merge etc into usr/etc: %w", err)
		}
	} else if err == nil {
		return fmt.Errorf("ostreesys: prepare tree: top-level etc is not a directory")
	}
	for _, d := range treeDirs {
		p := filepath.Join(dst, d)
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return fmt.Errorf("ostreesys: prepare tree: %w", err)
			}
		}
	}
	if err := os.Chmod(filepath.Join(dst, "tmp"), 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("ostreesys: prepare tree: %w", err)
	}
	for _, l := range treeLinks {
		p := filepath.Join(dst, l[0])
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(l[1], p); err != nil {
				return fmt.Errorf("ostreesys: prepare tree: %w", err)
			}
		}
	}
	return nil
}

// mergeInto moves every entry of src into dst (src wins), then removes src.
func mergeInto(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		di, err := os.Lstat(d)
		if err == nil && di.IsDir() && e.IsDir() {
			if err := mergeInto(s, d); err != nil {
				return err
			}
			continue
		}
		if err == nil {
			if err := os.RemoveAll(d); err != nil {
				return err
			}
		}
		if err := os.Rename(s, d); err != nil {
			return err
		}
	}
	return os.Remove(src)
}

// TreeOptions describes a tiny bootable-looking OS tree for tests.
type TreeOptions struct {
	OSID    string            // os-release ID= (default "layerdtest")
	Version string            // os-release VERSION_ID= (default "1")
	Kernel  string            // kernel version under usr/lib/modules (default "6.1.0-layerd")
	Etc     map[string]string // default /etc files (written to usr/etc), relative name → content
	Files   map[string]string // any other files, root-relative name → content
}

// BuildTree writes a minimal tree that `ostree admin deploy` accepts:
// usr/lib/os-release with ID=, a placeholder kernel
// usr/lib/modules/<k>/vmlinuz, usr/etc defaults (no SELinux config), and the
// PrepareTree layout.
func BuildTree(dir string, o TreeOptions) error {
	if o.OSID == "" {
		o.OSID = "layerdtest"
	}
	if o.Version == "" {
		o.Version = "1"
	}
	if o.Kernel == "" {
		o.Kernel = "6.1.0-layerd"
	}
	files := map[string]string{
		"usr/lib/os-release": fmt.Sprintf("ID=%s\nNAME=%q\nVERSION_ID=%s\nPRETTY_NAME=\"%s %s\"\n",
			o.OSID, o.OSID, o.Version, o.OSID, o.Version),
		"usr/lib/modules/" + o.Kernel + "/vmlinuz":       "placeholder kernel " + o.Kernel + "\n",
		"usr/lib/modules/" + o.Kernel + "/initramfs.img": "placeholder initramfs\n",
		"usr/etc/os-release":                             "",
	}
	for k, v := range o.Etc {
		files["usr/etc/"+k] = v
	}
	for k, v := range o.Files {
		files[k] = v
	}
	names := make([]string, 0, len(files))
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("ostreesys: build tree: %w", err)
		}
		if n == "usr/etc/os-release" {
			if _, ok := o.Etc["os-release"]; !ok {
				if err := os.Symlink("../usr/lib/os-release", p); err != nil && !errors.Is(err, os.ErrExist) {
					return fmt.Errorf("ostreesys: build tree: %w", err)
				}
				continue
			}
		}
		if err := os.WriteFile(p, []byte(files[n]), 0o644); err != nil {
			return fmt.Errorf("ostreesys: build tree: %w", err)
		}
	}
	return PrepareTree(dir)
}
