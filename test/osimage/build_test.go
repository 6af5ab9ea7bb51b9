package osimage_test

import (
	"archive/tar"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"layerd.dev/layerd/test/osimage"
)

func TestBase(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	base, err := w.b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "v1", Version: "41.1",
		Files: map[string]osimage.File{"var/lib/base/seed": {Content: "seed\n"}}})
	if err != nil {
		t.Fatalf("base: %v", err)
	}
	layers := layerEntries(t, base.Ref)
	tree := merged(layers)

	t.Run("describes the pushed image", func(t *testing.T) {
		if base.Ref != w.reg.Addr()+"/fcos/os:v1" || base.Pinned != w.reg.Addr()+"/fcos/os@"+base.Digest.String() {
			t.Fatalf("Ref %q Pinned %q", base.Ref, base.Pinned)
		}
		ref, _ := name.ParseReference(base.Ref, name.Insecure)
		desc, err := remote.Head(ref, remote.WithContext(ctx))
		if err != nil {
			t.Fatalf("head: %v", err)
		}
		if desc.Digest.String() != base.Digest.String() || string(desc.MediaType) != "application/vnd.oci.image.manifest.v1+json" {
			t.Fatalf("registry has %s %s, image says %s", desc.MediaType, desc.Digest, base.Digest)
		}
		if len(base.Layers) != 3 || len(base.DiffIDs) != 3 || len(layers) != 3 {
			t.Fatalf("layers %v diffids %v", base.Layers, base.DiffIDs)
		}
	})

	t.Run("tree has os-release, kernel, top-level etc and var content", func(t *testing.T) {
		want := map[string]string{
			"usr/lib/os-release":                                "VERSION_ID=41.1\n",
			"usr/lib/modules/6.8.0-layerd.x86_64/vmlinuz":       "placeholder kernel",
			"usr/lib/modules/6.8.0-layerd.x86_64/initramfs.img": "placeholder initramfs",
			"etc/motd":          "41.1",
			"etc/app.conf":      "level=1",
			"etc/hostname":      "localhost",
			"var/lib/base/seed": "seed",
		}
		for p, sub := range want {
			e, ok := tree[p]
			if !ok || e.hdr.Typeflag != tar.TypeReg || !strings.Contains(e.content, sub) {
				t.Errorf("%s: present %v, content %q, want a file containing %q", p, ok, e.content, sub)
			}
		}
		if !strings.Contains(tree["usr/lib/os-release"].content, "\nID=fedora\n") {
			t.Errorf("os-release lacks ID=: %q", tree["usr/lib/os-release"].content)
		}
	})

	t.Run("has FCOS-like symlinks and empty top-level dirs", func(t *testing.T) {
		links := map[string]string{"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin",
			"ostree": "sysroot/ostree", "home": "var/home", "root": "var/roothome", "etc/os-release": "../usr/lib/os-release"}
		for p, target := range links {
			if e := tree[p]; e.hdr == nil || e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != target {
				t.Errorf("%s: want symlink to %s, got %+v", p, target, e.hdr)
			}
		}
		for _, d := range []string{"sysroot", "var", "boot", "dev", "proc", "run", "sys", "tmp"} {
			if e := tree[d+"/"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeDir {
				t.Errorf("%s/: want a directory", d)
			}
		}
		for p := range tree {
			if strings.HasPrefix(p, "boot/") && p != "boot/" || strings.HasPrefix(p, "usr/etc") {
				t.Errorf("unexpected %s", p)
			}
		}
	})

	t.Run("has no SELinux config or grub config", func(t *testing.T) {
		for p := range tree {
			if strings.Contains(p, "selinux") || strings.Contains(p, "grub") {
				t.Errorf("unexpected %s", p)
			}
		}
	})

	t.Run("tar headers are reproducible", func(t *testing.T) {
		for p, e := range tree {
			if !e.hdr.AccessTime.IsZero() || !e.hdr.ChangeTime.IsZero() || len(e.hdr.PAXRecords) != 0 || e.hdr.ModTime.Unix() != 0 {
				t.Errorf("%s: atime %v ctime %v mtime %v pax %v", p, e.hdr.AccessTime, e.hdr.ChangeTime, e.hdr.ModTime, e.hdr.PAXRecords)
			}
		}
		again, err := w.b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "v1-again", Version: "41.1",
			Files: map[string]osimage.File{"var/lib/base/seed": {Content: "seed\n"}}})
		if err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		if again.Digest != base.Digest {
			t.Fatalf("same spec gave %s then %s", base.Digest, again.Digest)
		}
	})

	t.Run("config has bootc labels and platform", func(t *testing.T) {
		cf, err := fetch(t, base.Pinned).ConfigFile()
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		l := cf.Config.Labels
		if cf.OS != "linux" || cf.Architecture != "amd64" || l["containers.bootc"] != "1" ||
			l["ostree.bootable"] != "true" || l["org.opencontainers.image.version"] != "41.1" {
			t.Fatalf("config os %s arch %s labels %v", cf.OS, cf.Architecture, l)
		}
	})

	t.Run("not bootable and arm64 options", func(t *testing.T) {
		nb, err := w.b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "plain", Arch: "arm64", NotBootable: true})
		if err != nil {
			t.Fatalf("build: %v", err)
		}
		cf, err := fetch(t, nb.Ref).ConfigFile()
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		if _, ok := cf.Config.Labels["containers.bootc"]; ok || cf.Architecture != "arm64" || cf.Variant != "v8" {
			t.Fatalf("labels %v arch %s/%s", cf.Config.Labels, cf.Architecture, cf.Variant)
		}
		if _, ok := merged(layerEntries(t, nb.Ref))["usr/lib/modules/6.8.0-layerd.aarch64/vmlinuz"]; !ok {
			t.Fatal("arm64 image lacks an aarch64 kernel")
		}
	})
}

func TestLayered(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	base, err := w.b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "v1", Version: "1"})
	if err != nil {
		t.Fatalf("base: %v", err)
	}
	driver, err := w.b.Layered(ctx, base, osimage.Spec{Repo: "fcos/os", Tag: "v1-driver", Version: "1.d",
		Files: map[string]osimage.File{
			"usr/bin/mytool":                {Mode: 0o755, Content: "#!/bin/sh\necho mytool\n"},
			"usr/lib/modules-load.d/x.conf": {Content: "x\n"},
			"etc/app.conf":                  {Content: "# layered\nlevel=2\n"},
			"var/lib/agent/state":           {Content: "fresh\n", Uid: 1000, Gid: 1000},
		},
		Remove: []string{"etc/motd"},
		Opaque: []string{"usr/share/layerd"},
		Labels: map[string]string{"com.example.layer": "driver"},
	})
	if err != nil {
		t.Fatalf("layered: %v", err)
	}

	t.Run("shares the base layers and adds one", func(t *testing.T) {
		if len(driver.Layers) != len(base.Layers)+1 || !slices.Equal(driver.Layers[:len(base.Layers)], base.Layers) {
			t.Fatalf("base layers %v, layered %v", base.Layers, driver.Layers)
		}
	})

	t.Run("top layer has files, changed etc defaults and whiteouts", func(t *testing.T) {
		layers := layerEntries(t, driver.Ref)
		top := layers[len(layers)-1]
		checks := map[string]func(entry) bool{
			"usr/bin/mytool":                func(e entry) bool { return e.hdr.Mode == 0o755 && strings.Contains(e.content, "mytool") },
			"etc/app.conf":                  func(e entry) bool { return strings.Contains(e.content, "level=2") },
			"etc/.wh.motd":                  func(e entry) bool { return e.hdr.Typeflag == tar.TypeReg && e.hdr.Size == 0 },
			"usr/share/layerd/.wh..wh..opq": func(e entry) bool { return e.hdr.Typeflag == tar.TypeReg },
			"var/lib/agent/state":           func(e entry) bool { return e.hdr.Uid == 1000 && e.hdr.Gid == 1000 },
			"usr/lib/modules-load.d/x.conf": func(e entry) bool { return e.content == "x\n" },
			"usr/bin/":                      func(e entry) bool { return e.hdr.Typeflag == tar.TypeDir },
		}
		for p, ok := range checks {
			e, present := top[p]
			if !present || !ok(e) {
				t.Errorf("%s: present %v, header %+v content %q", p, present, e.hdr, e.content)
			}
		}
		if _, ok := top["etc/motd"]; ok {
			t.Error("etc/motd must be whited out, not shipped")
		}
	})

	t.Run("labels merge over the base's", func(t *testing.T) {
		l := driver.Labels
		if l["containers.bootc"] != "1" || l["com.example.layer"] != "driver" || l["org.opencontainers.image.version"] != "1.d" || driver.Arch != "amd64" {
			t.Fatalf("labels %v arch %s", l, driver.Arch)
		}
	})

	t.Run("chains and can drop bootability", func(t *testing.T) {
		agent, err := w.b.Layered(ctx, driver, osimage.Spec{Repo: "apps/agent", Tag: "v1", NotBootable: true,
			Files: map[string]osimage.File{"usr/libexec/agent": {Mode: 0o755, Content: "agent"}}})
		if err != nil {
			t.Fatalf("layered: %v", err)
		}
		if len(agent.Layers) != 5 || agent.Labels["ostree.bootable"] != "" || agent.Labels["com.example.layer"] != "driver" {
			t.Fatalf("layers %d labels %v", len(agent.Layers), agent.Labels)
		}
	})
}

func TestIndexAndTags(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	amd, err := w.b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "v2-amd64", Version: "2"})
	if err != nil {
		t.Fatalf("amd64: %v", err)
	}
	arm, err := w.b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "v2-arm64", Version: "2", Arch: "arm64"})
	if err != nil {
		t.Fatalf("arm64: %v", err)
	}
	idx, err := w.b.Index(ctx, "fcos/multi", "v2", amd, arm)
	if err != nil {
		t.Fatalf("index: %v", err)
	}

	t.Run("index has one entry per arch under one tag", func(t *testing.T) {
		ref, _ := name.ParseReference(idx.Ref, name.Insecure)
		ii, err := remote.Index(ref, remote.WithContext(ctx))
		if err != nil {
			t.Fatalf("fetch index: %v", err)
		}
		d, _ := ii.Digest()
		im, err := ii.IndexManifest()
		if err != nil || d.String() != idx.Digest.String() || len(im.Manifests) != 2 {
			t.Fatalf("index %s (want %s): %+v %v", d, idx.Digest, im, err)
		}
		for i, want := range []*osimage.Image{amd, arm} {
			m := im.Manifests[i]
			if m.Digest.String() != want.Digest.String() || m.Platform.Architecture != want.Arch || m.Platform.OS != "linux" {
				t.Errorf("entry %d: %+v, want %s %s", i, m, want.Arch, want.Digest)
			}
		}
		for _, m := range idx.Manifests {
			fetch(t, m.Pinned) // members are pullable from the index repo
		}
	})

	t.Run("MoveTag points a tag at another image", func(t *testing.T) {
		moved, err := w.b.MoveTag(ctx, "stable", arm)
		if err != nil {
			t.Fatalf("move tag: %v", err)
		}
		if moved.Ref != w.reg.Addr()+"/fcos/os:stable" {
			t.Fatalf("ref %s", moved.Ref)
		}
		for _, target := range []*osimage.Image{arm, amd, idx} {
			if _, err := w.b.MoveTag(ctx, "stable", target); err != nil {
				t.Fatalf("move tag: %v", err)
			}
			ref, _ := name.ParseReference(target.Repo+":stable", name.WithDefaultRegistry(w.reg.Addr()), name.Insecure)
			desc, err := remote.Head(ref, remote.WithContext(ctx))
			if err != nil || desc.Digest.String() != target.Digest.String() {
				t.Fatalf("stable -> %v (%v), want %s", desc, err, target.Digest)
			}
		}
	})
}
