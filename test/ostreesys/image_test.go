package ostreesys

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	imgspec "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/types"
)

// ociDir writes blobs of an OCI image layout.
type ociDir struct {
	t   *testing.T
	dir string
}

func newOCIDir(t *testing.T) *ociDir {
	d := &ociDir{t: t, dir: filepath.Join(t.TempDir(), "oci")}
	if err := os.MkdirAll(filepath.Join(d.dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d.dir, "oci-layout"), `{"imageLayoutVersion":"1.0.0"}`)
	return d
}

func (d *ociDir) blob(mediaType string, data []byte) v1.Descriptor {
	dg := digest.FromBytes(data)
	writeFile(d.t, filepath.Join(d.dir, "blobs", "sha256", dg.Encoded()), string(data))
	return v1.Descriptor{MediaType: mediaType, Digest: dg, Size: int64(len(data))}
}

func (d *ociDir) json(mediaType string, v any) v1.Descriptor {
	b, err := json.Marshal(v)
	if err != nil {
		d.t.Fatal(err)
	}
	return d.blob(mediaType, b)
}

// image writes one image; each layer tar is compressed with algos[i].
func (d *ociDir) image(arch string, algos []compression.Algorithm, layers ...[]byte) v1.Descriptor {
	cfg := v1.Image{Platform: v1.Platform{OS: "linux", Architecture: arch}, RootFS: v1.RootFS{Type: "layers"}}
	m := v1.Manifest{Versioned: imgspec.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest}
	for i, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(l))
		var buf bytes.Buffer
		w, err := compression.CompressStream(&buf, algos[i], nil)
		if err != nil {
			d.t.Fatal(err)
		}
		if _, err := w.Write(l); err != nil {
			d.t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			d.t.Fatal(err)
		}
		mt := v1.MediaTypeImageLayerGzip
		if algos[i].Name() == compression.Zstd.Name() {
			mt = v1.MediaTypeImageLayerZstd
		}
		m.Layers = append(m.Layers, d.blob(mt, buf.Bytes()))
	}
	m.Config = d.json(v1.MediaTypeImageConfig, cfg)
	desc := d.json(v1.MediaTypeImageManifest, m)
	desc.Platform = &v1.Platform{OS: "linux", Architecture: arch}
	return desc
}

// tag writes index.json naming desc as tag and returns the reference.
func (d *ociDir) tag(tag string, desc v1.Descriptor) types.ImageReference {
	desc.Annotations = map[string]string{v1.AnnotationRefName: tag}
	idx := v1.Index{Versioned: imgspec.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex,
		Manifests: []v1.Descriptor{desc}}
	b, _ := json.Marshal(idx)
	writeFile(d.t, filepath.Join(d.dir, "index.json"), string(b))
	ref, err := layout.ParseReference(d.dir + ":" + tag)
	if err != nil {
		d.t.Fatal(err)
	}
	return ref
}

var gzZstd = []compression.Algorithm{compression.Gzip, compression.Zstd}

// bootcLayers is a bootc-style image: /etc at the top level, a whiteout in
// the second layer.
func bootcLayers(t *testing.T, version string) [][]byte {
	return [][]byte{
		layer(t, ent{"usr/lib/os-release", "ID=layerdtest\nVERSION_ID=" + version + "\n"},
			ent{"usr/lib/modules/6.1.0/vmlinuz", "k"}, ent{"etc/motd", "motd " + version + "\n"},
			ent{"etc/obsolete.conf", "old"}),
		layer(t, ent{"etc/.wh.obsolete.conf", ""}, ent{"etc/app.conf", "level=" + version + "\n"},
			ent{"usr/bin/layerd-marker", version}),
	}
}

func TestFlattenImage(t *testing.T) {
	ctx := context.Background()

	t.Run("layers are decompressed, verified and applied", func(t *testing.T) {
		d := newOCIDir(t)
		desc := d.image("amd64", gzZstd, bootcLayers(t, "1")...)
		dst := filepath.Join(t.TempDir(), "tree")
		got, err := FlattenImage(ctx, &types.SystemContext{}, d.tag("v1", desc), dst)
		if err != nil {
			t.Fatal(err)
		}
		if got != desc.Digest.String() {
			t.Errorf("manifest digest = %s, want %s", got, desc.Digest)
		}
		if s := readFile(t, filepath.Join(dst, "usr/etc/motd")); s != "motd 1\n" {
			t.Errorf("usr/etc/motd = %q", s)
		}
		assertMissing(t, filepath.Join(dst, "usr/etc/obsolete.conf"))
		assertMissing(t, filepath.Join(dst, "etc"))
		if s := readFile(t, filepath.Join(dst, "usr/bin/layerd-marker")); s != "1" {
			t.Errorf("zstd layer content = %q", s)
		}
	})

	t.Run("manifest list resolves to the requested architecture", func(t *testing.T) {
		d := newOCIDir(t)
		amd := d.image("amd64", gzZstd, bootcLayers(t, "amd")...)
		arm := d.image("arm64", gzZstd, bootcLayers(t, "arm")...)
		list := d.json(v1.MediaTypeImageIndex, v1.Index{Versioned: imgspec.Versioned{SchemaVersion: 2},
			MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{amd, arm}})
		dst := filepath.Join(t.TempDir(), "tree")
		got, err := FlattenImage(ctx, &types.SystemContext{OSChoice: "linux", ArchitectureChoice: "arm64"}, d.tag("multi", list), dst)
		if err != nil {
			t.Fatal(err)
		}
		if got != arm.Digest.String() {
			t.Errorf("manifest digest = %s, want the arm64 instance %s", got, arm.Digest)
		}
		if s := readFile(t, filepath.Join(dst, "usr/bin/layerd-marker")); s != "arm" {
			t.Errorf("marker = %q, want arm", s)
		}
	})

	t.Run("corrupted blob is rejected", func(t *testing.T) {
		d := newOCIDir(t)
		desc := d.image("amd64", gzZstd, bootcLayers(t, "1")...)
		var m v1.Manifest
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(d.dir, "blobs/sha256", desc.Digest.Encoded()))), &m); err != nil {
			t.Fatal(err)
		}
		// Same bytes, recompressed differently: valid zstd, wrong digest.
		p := filepath.Join(d.dir, "blobs/sha256", m.Layers[1].Digest.Encoded())
		var buf bytes.Buffer
		w, _ := compression.CompressStream(&buf, compression.Zstd, nil)
		_, _ = w.Write(bootcLayers(t, "1")[1])
		_, _ = w.Write(make([]byte, 1024))
		_ = w.Close()
		writeFile(t, p, buf.String())
		_, err := FlattenImage(ctx, &types.SystemContext{}, d.tag("v1", desc), filepath.Join(t.TempDir(), "tree"))
		if err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("err = %v, want a digest mismatch", err)
		}
	})

	t.Run("diff ID mismatch is rejected", func(t *testing.T) {
		d := newOCIDir(t)
		good := bootcLayers(t, "1")
		desc := d.image("amd64", gzZstd, good...)
		var m v1.Manifest
		_ = json.Unmarshal([]byte(readFile(t, filepath.Join(d.dir, "blobs/sha256", desc.Digest.Encoded()))), &m)
		var cfg v1.Image
		_ = json.Unmarshal([]byte(readFile(t, filepath.Join(d.dir, "blobs/sha256", m.Config.Digest.Encoded()))), &cfg)
		cfg.RootFS.DiffIDs[0] = digest.FromString("something else")
		m.Config = d.json(v1.MediaTypeImageConfig, cfg)
		desc = d.json(v1.MediaTypeImageManifest, m)
		_, err := FlattenImage(ctx, &types.SystemContext{}, d.tag("v1", desc), filepath.Join(t.TempDir(), "tree"))
		if err == nil || !strings.Contains(err.Error(), "diff ID") {
			t.Fatalf("err = %v, want a diff ID mismatch", err)
		}
	})
}

func TestFlattenedImageDeploys(t *testing.T) {
	t.Parallel()
	s, ctx := newSysroot(t, "tos")
	d := newOCIDir(t)
	desc := d.image("amd64", gzZstd, bootcLayers(t, "7")...)
	tree := filepath.Join(t.TempDir(), "tree")
	var mdigest, csum string
	timed(t, "flatten image", func() (err error) {
		mdigest, err = FlattenImage(ctx, &types.SystemContext{}, d.tag("v7", desc), tree)
		return err
	})
	timed(t, "commit", func() (err error) {
		csum, err = s.CommitTree(ctx, tree, "ostree/container/image/v7", map[string]string{
			MetaVersion: "7", MetaManifestDigest: mdigest})
		return err
	})
	var dep Deployment
	timed(t, "deploy", func() (err error) {
		o := ContainerOrigin("localhost:5000/os@" + mdigest)
		dep, err = s.Deploy(ctx, csum, DeployOptions{Origin: &o})
		return err
	})
	if dep.ManifestDigest != desc.Digest.String() || dep.Version != "7" {
		t.Errorf("deployment metadata: digest %q version %q", dep.ManifestDigest, dep.Version)
	}
	if got := readFile(t, filepath.Join(dep.Path, "etc/app.conf")); got != "level=7\n" {
		t.Errorf("deployed /etc/app.conf = %q", got)
	}
	assertMissing(t, filepath.Join(dep.Path, "etc/obsolete.conf"))
}
