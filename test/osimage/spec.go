// Package osimage builds bootable-looking OS images (bootc / rpm-ostree
// style) as real OCI images, pushes them to a registry, and signs them with
// sigstore keys.
//
// Images are tiny (KBs) and deterministic: the same Spec gives the same
// digests on every run with the same Go toolchain.
package osimage

import (
	"fmt"
	"os"
	"path"
	"strings"
	"time"
)

// Bootc labels set on bootable images.
const (
	LabelBootc    = "containers.bootc"
	LabelBootable = "ostree.bootable"
	LabelVersion  = "org.opencontainers.image.version"
)

// created is the timestamp of every tar entry and config: digests must not
// depend on when a test runs.
var created = time.Unix(0, 0).UTC()

// File is one tree entry. The zero value is an empty 0644 root-owned file.
type File struct {
	Content string
	// Mode holds the permission bits (plus os.ModeSetuid/Setgid/Sticky).
	// Zero means 0644 for files, 0755 for directories, 0777 for symlinks.
	Mode os.FileMode
	// Symlink, if set, makes the entry a symbolic link to this target.
	Symlink string
	// Dir makes the entry a directory.
	Dir      bool
	Uid, Gid int
}

// Spec describes an image to build.
type Spec struct {
	Repo string // repository in the builder's registry, e.g. "fcos/os"
	Tag  string // tag to push, e.g. "v1"
	// Arch is the GOARCH-style architecture (default amd64; arm64 gets variant v8).
	Arch string
	// Version is VERSION_ID in os-release (base only) and the
	// org.opencontainers.image.version label. Default: Tag.
	Version string
	// Kernel is the kernel version directory under usr/lib/modules (base
	// only). Default "6.8.0-layerd.<uname arch>".
	Kernel string
	// OSID is ID= in os-release (base only). Default "fedora" (with
	// VARIANT_ID=coreos).
	OSID string
	// Files are added to (base: merged over) the tree. Keys are relative
	// paths such as "usr/bin/mytool"; a leading "/" is ignored.
	Files map[string]File
	// Remove deletes paths: from the default tree for a base image, as OCI
	// whiteouts (.wh.<name>) for a layered image.
	Remove []string
	// Opaque marks directories opaque in a layered image (.wh..wh..opq):
	// lower-layer content of the directory is hidden.
	Opaque []string
	// Labels are added to the config labels (layered: over the base's).
	Labels map[string]string
	// NotBootable drops the containers.bootc and ostree.bootable labels.
	NotBootable bool
}

func (s Spec) withDefaults(arch string) (Spec, error) {
	if s.Repo == "" || s.Tag == "" {
		return s, fmt.Errorf("spec needs Repo and Tag (got %q:%q)", s.Repo, s.Tag)
	}
	if s.Arch == "" {
		s.Arch = arch
	}
	if s.Version == "" {
		s.Version = s.Tag
	}
	if s.OSID == "" {
		s.OSID = "fedora"
	}
	if s.Kernel == "" {
		s.Kernel = "6.8.0-layerd." + unameArch(s.Arch)
	}
	return s, nil
}

// unameArch maps a GOARCH to the kernel's name for it.
func unameArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "ppc64le", "s390x":
		return goarch
	}
	return goarch
}

func variant(goarch string) string {
	if goarch == "arm64" {
		return "v8"
	}
	return ""
}

// clean normalises a tree path: relative, no trailing slash, no "..".
func clean(p string) (string, error) {
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if c == "" || c == "." {
		return "", fmt.Errorf("invalid tree path %q", p)
	}
	return c, nil
}

// baseTree is the default content of a base image.
func baseTree(s Spec) map[string]File {
	dir := File{Dir: true}
	t := map[string]File{
		// FCOS-like top level.
		"bin": {Symlink: "usr/bin"}, "lib": {Symlink: "usr/lib"}, "lib64": {Symlink: "usr/lib64"},
		"sbin": {Symlink: "usr/sbin"}, "ostree": {Symlink: "sysroot/ostree"},
		"home": {Symlink: "var/home"}, "root": {Symlink: "var/roothome"},
		"sysroot": dir, "var": dir, "boot": dir, "dev": dir, "proc": dir,
		"run": dir, "sys": dir, "tmp": {Dir: true, Mode: 0o777 | os.ModeSticky},
		"usr/bin": dir, "usr/sbin": dir, "usr/lib64": dir,
		"usr/lib/os-release":            {Content: osRelease(s)},
		"usr/bin/hello":                 {Mode: 0o755, Content: "#!/bin/sh\necho hello from " + s.Version + "\n"},
		"usr/share/layerd/base-version": {Content: s.Version + "\n"},
		// Kernel: placeholder bytes that depend on the kernel version only.
		"usr/lib/modules/" + s.Kernel + "/vmlinuz":       {Mode: 0o755, Content: "placeholder kernel " + s.Kernel + "\n"},
		"usr/lib/modules/" + s.Kernel + "/initramfs.img": {Content: "placeholder initramfs " + s.Kernel + "\n"},
		// Default /etc at the top level, as bootc images ship it.
		"etc/os-release": {Symlink: "../usr/lib/os-release"},
		"etc/motd":       {Content: "Welcome to layerd test OS " + s.Version + "\n"},
		"etc/app.conf":   {Content: "# app defaults\nlevel=1\n"},
		"etc/hostname":   {Content: "localhost\n"},
	}
	return t
}

func osRelease(s Spec) string {
	return fmt.Sprintf("NAME=\"Layerd Test OS\"\nID=%s\nVARIANT_ID=coreos\nVERSION=%q\nVERSION_ID=%s\n"+
		"PRETTY_NAME=\"Layerd Test OS %s\"\nOSTREE_VERSION='%s'\n", s.OSID, s.Version, s.Version, s.Version, s.Version)
}
