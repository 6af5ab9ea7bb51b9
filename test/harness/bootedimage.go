package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"layerd.dev/layerd/test/nspawn"
	"layerd.dev/layerd/test/osimage"
)

// BootedBaseRepo is the repository of the booted tier's base image in the world's registry.
const BootedBaseRepo = "debian/os"

// epoch is the timestamp of configs and history entries: digests do not depend on the run.
var epoch = time.Unix(0, 0).UTC()

// buildBootedBase makes the booted tier's base OS image: the cached bootable Debian tree of
// test/nspawn (systemd, dbus, logind, the finalize unit, rpm-ostree's bus policy) exported by
// ostree as one layer (/etc at the top level, as bootc images ship it), with the bootc labels,
// pushed as debian/os:base and signed. The layer is compressed by gzip(1): compressing 150 MB
// in Go under -race takes minutes. It returns the image and a registry-backed handle for
// layering on it (World.BootedImage).
func buildBootedBase(ctx context.Context, registry string, keys *osimage.Keys, base *nspawn.Base, logf func(string, ...any)) (*osimage.Image, v1.Image, error) {
	t0 := time.Now()
	layer, err := cachedBaseLayer(ctx, base)
	if err != nil {
		return nil, nil, fmt.Errorf("booted base image: %w", err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "ostree export " + nspawn.BaseRef}})
	if err != nil {
		return nil, nil, fmt.Errorf("booted base image: %w", err)
	}
	labels := map[string]string{osimage.LabelBootc: "1", osimage.LabelBootable: "true", osimage.LabelVersion: "1.0"}
	t1 := time.Now()
	out, err := pushImage(ctx, registry, BootedBaseRepo, "base", img, runtime.GOARCH, labels)
	if err != nil {
		return nil, nil, fmt.Errorf("booted base image: %w", err)
	}
	t2 := time.Now()
	defer func() {
		logf("booted base image %s: layer %v, push %v, sign %v", out.Ref, t1.Sub(t0).Round(time.Millisecond),
			t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
	}()
	if err := osimage.Sign(ctx, out.Pinned, keys); err != nil {
		return nil, nil, fmt.Errorf("booted base image: signing: %w", err)
	}
	ref, err := name.NewDigest(out.Pinned, name.Insecure)
	if err != nil {
		return nil, nil, fmt.Errorf("booted base image: %w", err)
	}
	// Not bound to ctx: the handle reads the registry lazily whenever BootedImage layers on
	// it, long after the start (whose context ends with it).
	remoteImg, err := remote.Image(ref)
	if err != nil {
		return nil, nil, fmt.Errorf("booted base image: %w", err)
	}
	return out, remoteImg, nil
}

// BootedImage builds and pushes a layered image on BootedBase, as osimage's Builder.Layered
// does on Base: one layer with s.Files, whiteouts for s.Remove and opaque markers for s.Opaque;
// labels are the base's plus s.Labels, the version label is s.Version (default s.Tag). Sign it
// with osimage.Sign. It fails without booted nodes.
func (w *World) BootedImage(ctx context.Context, s osimage.Spec) (*osimage.Image, error) {
	if w.bootedImg == nil {
		return nil, errors.New("booted image: the world has no booted nodes (Options.Booted)")
	}
	if s.Repo == "" || s.Tag == "" {
		return nil, fmt.Errorf("booted image: spec needs Repo and Tag (got %q:%q)", s.Repo, s.Tag)
	}
	if s.Version == "" {
		s.Version = s.Tag
	}
	data, err := layerTar(s)
	if err != nil {
		return nil, fmt.Errorf("booted image %s:%s: %w", s.Repo, s.Tag, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("booted image %s:%s: %w", s.Repo, s.Tag, err)
	}
	img, err := mutate.Append(w.bootedImg, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "layer " + s.Repo + ":" + s.Tag}})
	if err != nil {
		return nil, fmt.Errorf("booted image %s:%s: %w", s.Repo, s.Tag, err)
	}
	labels := maps.Clone(w.BootedBase.Labels)
	maps.Copy(labels, s.Labels)
	labels[osimage.LabelVersion] = s.Version
	out, err := pushImage(ctx, w.Registry.Addr(), s.Repo, s.Tag, img, w.BootedBase.Arch, labels)
	if err != nil {
		return nil, fmt.Errorf("booted image %s:%s: %w", s.Repo, s.Tag, err)
	}
	return out, nil
}

// pushImage sets the config (platform, labels, init command), pushes img as repo:tag and
// describes it.
func pushImage(ctx context.Context, registry, repo, tag string, img v1.Image, arch string, labels map[string]string) (*osimage.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = arch, "linux", v1.Time{Time: epoch}
	cf.Config.Labels, cf.Config.Cmd, cf.Config.StopSignal = labels, []string{"/sbin/init"}, "SIGRTMIN+3"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("setting the config: %w", err)
	}
	t, err := name.NewTag(registry+"/"+repo+":"+tag, name.StrictValidation, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("image reference: %w", err)
	}
	if err := remote.Write(t, img, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("pushing %s: %w", t, err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	out := &osimage.Image{
		Ref: t.String(), Repo: t.RepositoryStr(), Tag: t.TagStr(), Digest: digest.Digest(d.String()),
		Pinned: t.Context().Digest(d.String()).String(), Arch: arch, Version: labels[osimage.LabelVersion],
		Config: digest.Digest(m.Config.Digest.String()), Labels: labels,
	}
	for _, l := range m.Layers {
		out.Layers = append(out.Layers, digest.Digest(l.Digest.String()))
	}
	cf, err = img.ConfigFile()
	if err != nil {
		return nil, err
	}
	for _, id := range cf.RootFS.DiffIDs {
		out.DiffIDs = append(out.DiffIDs, digest.Digest(id.String()))
	}
	return out, nil
}

// baseLayerVersion versions the layer's making (part of its cache key).
const baseLayerVersion = "booted-base-layer-v1"

// cachedBaseLayer returns the base commit's layer from the cache (next to the base itself,
// keyed by its commit), exporting it first when missing. The export is deterministic, so
// concurrent test binaries may both write it: each renames its own complete file into place.
func cachedBaseLayer(ctx context.Context, base *nspawn.Base) (*fileLayer, error) {
	dir := filepath.Join(filepath.Dir(filepath.Dir(base.Repo)), baseLayerVersion)
	file := filepath.Join(dir, base.Checksum+".tar.gz")
	if l, err := openCachedLayer(file); err == nil {
		return l, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("caching the base layer: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp.%d", file, os.Getpid())
	defer os.Remove(tmp)
	defer os.Remove(tmp + ".diffid")
	l, err := exportTree(ctx, base.Repo, nspawn.BaseRef, tmp)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(tmp+".diffid", []byte(l.diffID.String()), 0o644); err != nil {
		return nil, fmt.Errorf("caching the base layer: %w", err)
	}
	// The diff ID first: a layer file without it is not used.
	if err := errors.Join(os.Rename(tmp+".diffid", file+".diffid"), os.Rename(tmp, file)); err != nil {
		return nil, fmt.Errorf("caching the base layer: %w", err)
	}
	l.path = file
	return l, nil
}

// openCachedLayer opens a cached layer file and its diff ID, hashing the file for its digest.
func openCachedLayer(file string) (*fileLayer, error) {
	id, err := os.ReadFile(file + ".diffid")
	if err != nil {
		return nil, err
	}
	diffID, err := v1.NewHash(strings.TrimSpace(string(id)))
	if err != nil {
		return nil, err
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sum := sha256.New()
	size, err := io.Copy(sum, f)
	if err != nil {
		return nil, err
	}
	return &fileLayer{path: file, size: size, diffID: diffID,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum.Sum(nil))}}, nil
}

// exportTree writes `ostree export` of rev, with usr/etc renamed to etc (the image convention,
// which ostree's import reverses), through `gzip -1` to dst and returns it as a layer.
func exportTree(ctx context.Context, repo, rev, dst string) (*fileLayer, error) {
	f, err := os.Create(dst)
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", rev, err)
	}
	defer f.Close()
	var exportErr, gzipErr strings.Builder
	export := exec.CommandContext(ctx, "ostree", "export", "--repo="+repo, rev)
	export.Stderr = &exportErr
	gz := exec.CommandContext(ctx, "gzip", "-1", "-n")
	gz.Stdout, gz.Stderr = f, &gzipErr
	out, err := export.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", rev, err)
	}
	in, err := gz.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", rev, err)
	}
	if err := gz.Start(); err != nil {
		return nil, fmt.Errorf("exporting %s: gzip: %w", rev, err)
	}
	if err := export.Start(); err != nil {
		in.Close()
		_ = gz.Wait()
		return nil, fmt.Errorf("exporting %s: %w", rev, err)
	}
	diff := sha256.New()
	rerr := retarEtc(tar.NewReader(out), tar.NewWriter(io.MultiWriter(in, diff)))
	_, _ = io.Copy(io.Discard, out)
	rerr = errors.Join(rerr, in.Close(), export.Wait(), gz.Wait())
	if rerr != nil {
		return nil, fmt.Errorf("exporting %s: %w: %s %s", rev, rerr, strings.TrimSpace(exportErr.String()), strings.TrimSpace(gzipErr.String()))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("exporting %s: %w", rev, err)
	}
	sum := sha256.New()
	size, err := io.Copy(sum, f)
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", rev, err)
	}
	return &fileLayer{path: dst, size: size,
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diff.Sum(nil))}}, nil
}

// retarEtc copies a tar stream, renaming usr/etc to etc.
func retarEtc(tr *tar.Reader, tw *tar.Writer) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		n := strings.TrimPrefix(hdr.Name, "./")
		if n == "usr/etc" || n == "usr/etc/" || strings.HasPrefix(n, "usr/etc/") {
			hdr.Name = strings.TrimPrefix(n, "usr/")
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}

// layerTar is the tar of a layered image's Files, Remove (whiteouts) and Opaque markers, with
// implicit parents (root-owned 0755 directories), sorted, timestamps at the epoch.
func layerTar(s osimage.Spec) ([]byte, error) {
	entries := map[string]osimage.File{}
	add := func(p string, f osimage.File) error {
		c := strings.TrimPrefix(path.Clean("/"+p), "/")
		if c == "" || c == "." {
			return fmt.Errorf("invalid tree path %q", p)
		}
		entries[c] = f
		for d := path.Dir(c); d != "."; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = osimage.File{Dir: true}
			}
		}
		return nil
	}
	for p, f := range s.Files {
		if err := add(p, f); err != nil {
			return nil, err
		}
	}
	for _, p := range s.Remove {
		if err := add(path.Join(path.Dir(p), ".wh."+path.Base(p)), osimage.File{}); err != nil {
			return nil, err
		}
	}
	for _, p := range s.Opaque {
		if err := add(path.Join(p, ".wh..wh..opq"), osimage.File{}); err != nil {
			return nil, err
		}
	}
	var buf strings.Builder
	tw := tar.NewWriter(&buf)
	for _, p := range sortedKeys(entries) {
		f := entries[p]
		h := &tar.Header{Name: p, Uid: f.Uid, Gid: f.Gid, ModTime: epoch, Mode: int64(f.Mode.Perm()), Typeflag: tar.TypeReg, Size: int64(len(f.Content))}
		switch {
		case f.Symlink != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, f.Symlink, 0
		case f.Dir:
			h.Typeflag, h.Name, h.Size = tar.TypeDir, p+"/", 0
		}
		if h.Mode == 0 {
			h.Mode = map[byte]int64{tar.TypeReg: 0o644, tar.TypeDir: 0o755, tar.TypeSymlink: 0o777}[h.Typeflag]
		}
		for bit, v := range map[os.FileMode]int64{os.ModeSetuid: 0o4000, os.ModeSetgid: 0o2000, os.ModeSticky: 0o1000} {
			if f.Mode&bit != 0 {
				h.Mode |= v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, f.Content); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return []byte(buf.String()), nil
}
