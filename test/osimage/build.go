package osimage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Builder builds images and pushes them to one registry.
type Builder struct {
	// Registry is the registry host, e.g. "127.0.0.1:5000" (plain HTTP).
	Registry string
}

// Image is a pushed image or index.
type Image struct {
	Ref    string        // host/repo:tag
	Repo   string        // repository without host, e.g. "fcos/os"
	Tag    string        // "" for index members
	Digest digest.Digest // manifest (or index) digest
	Pinned string        // host/repo@sha256:...
	// Arch and Version of an image; "" for an index.
	Arch, Version string
	Config        digest.Digest     // config blob ("" for an index)
	Layers        []digest.Digest   // compressed layer digests, lowest first
	DiffIDs       []digest.Digest   // uncompressed layer digests
	Labels        map[string]string // config labels
	// Manifests are the members of an index, in index order.
	Manifests []*Image

	img v1.Image
	idx v1.ImageIndex
}

// OCIImage is the in-memory ggcr image (nil for an index).
func (i *Image) OCIImage() v1.Image { return i.img }

// OCIIndex is the in-memory ggcr index (nil for an image).
func (i *Image) OCIIndex() v1.ImageIndex { return i.idx }

func (b *Builder) tag(repo, tag string) (name.Tag, error) {
	if b.Registry == "" {
		return name.Tag{}, errors.New("builder has no Registry")
	}
	t, err := name.NewTag(b.Registry+"/"+repo+":"+tag, name.StrictValidation, name.Insecure)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %s/%s:%s: %w", b.Registry, repo, tag, err)
	}
	return t, nil
}

// Base builds and pushes a base OS image: three layers (root tree, kernel,
// /etc defaults plus var/) with bootc labels unless s.NotBootable.
func (b *Builder) Base(ctx context.Context, s Spec) (*Image, error) {
	s, err := s.withDefaults("amd64")
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	tree := baseTree(s)
	for p, f := range s.Files {
		cp, err := clean(p)
		if err != nil {
			return nil, fmt.Errorf("base image: %w", err)
		}
		tree[cp] = f
	}
	for _, p := range s.Remove {
		cp, err := clean(p)
		if err != nil {
			return nil, fmt.Errorf("base image: %w", err)
		}
		for q := range tree {
			if q == cp || strings.HasPrefix(q, cp+"/") {
				delete(tree, q)
			}
		}
	}
	parts := []struct {
		what  string
		files map[string]File
	}{{"root", map[string]File{}}, {"kernel", map[string]File{}}, {"config", map[string]File{}}}
	for p, f := range tree {
		switch {
		case strings.HasPrefix(p, "usr/lib/modules/"):
			parts[1].files[p] = f
		case strings.HasPrefix(p, "etc/") || strings.HasPrefix(p, "var/"):
			parts[2].files[p] = f
		default:
			parts[0].files[p] = f
		}
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, part := range parts {
		if img, err = appendLayer(img, layerContent{files: part.files}, "osimage base "+part.what); err != nil {
			return nil, fmt.Errorf("base image %s: %w", part.what, err)
		}
	}
	labels := map[string]string{LabelBootc: "1", LabelBootable: "true"}
	return b.finish(ctx, img, s, labels)
}

// Layered builds and pushes an image with one layer on top of base: s.Files,
// whiteouts for s.Remove, opaque markers for s.Opaque. Labels are the base's
// plus s.Labels; Arch defaults to the base's.
func (b *Builder) Layered(ctx context.Context, base *Image, s Spec) (*Image, error) {
	if base == nil || base.img == nil {
		return nil, errors.New("layered image: base must be an image built by this package")
	}
	s, err := s.withDefaults(base.Arch)
	if err != nil {
		return nil, fmt.Errorf("layered image: %w", err)
	}
	img, err := appendLayer(base.img, layerContent{files: s.Files, whiteouts: s.Remove, opaque: s.Opaque},
		"osimage layer "+s.Repo+":"+s.Tag)
	if err != nil {
		return nil, fmt.Errorf("layered image %s:%s: %w", s.Repo, s.Tag, err)
	}
	return b.finish(ctx, img, s, maps.Clone(base.Labels))
}

func appendLayer(img v1.Image, c layerContent, createdBy string) (v1.Image, error) {
	l, err := tarLayer(c)
	if err != nil {
		return nil, err
	}
	out, err := mutate.Append(img, mutate.Addendum{
		Layer:     l,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: createdBy},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	return out, nil
}

// finish sets the config (platform, labels, version), pushes and describes.
func (b *Builder) finish(ctx context.Context, img v1.Image, s Spec, labels map[string]string) (*Image, error) {
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, s.Labels)
	labels[LabelVersion] = s.Version
	if s.NotBootable {
		delete(labels, LabelBootc)
		delete(labels, LabelBootable)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.Variant, cf.OS = s.Arch, variant(s.Arch), "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config.Labels = labels
	cf.Config.Cmd = []string{"/sbin/init"}
	cf.Config.StopSignal = "SIGRTMIN+3"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	tag, err := b.tag(s.Repo, s.Tag)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("push %s: %w", tag, err)
	}
	return describe(tag, img)
}

func describe(tag name.Tag, img v1.Image) (*Image, error) {
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("digest of %s: %w", tag, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", tag, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", tag, err)
	}
	out := &Image{
		Ref: tag.String(), Repo: tag.RepositoryStr(), Tag: tag.TagStr(),
		Digest: digest.Digest(d.String()), Pinned: tag.Context().Digest(d.String()).String(),
		Arch: cf.Architecture, Version: cf.Config.Labels[LabelVersion],
		Config: digest.Digest(m.Config.Digest.String()), Labels: maps.Clone(cf.Config.Labels), img: img,
	}
	for _, l := range m.Layers {
		out.Layers = append(out.Layers, digest.Digest(l.Digest.String()))
	}
	for _, id := range cf.RootFS.DiffIDs {
		out.DiffIDs = append(out.DiffIDs, digest.Digest(id.String()))
	}
	return out, nil
}

// Index pushes an OCI image index of imgs (one entry per image, platform
// from its config) under repo:tag. Member manifests are pushed to repo too.
func (b *Builder) Index(ctx context.Context, repo, tag string, imgs ...*Image) (*Image, error) {
	if len(imgs) == 0 {
		return nil, errors.New("index: no images")
	}
	t, err := b.tag(repo, tag)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range imgs {
		if img == nil || img.img == nil {
			return nil, errors.New("index: members must be images built by this package")
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img.img,
			Descriptor: v1.Descriptor{
				MediaType: types.OCIManifestSchema1,
				Platform:  &v1.Platform{OS: "linux", Architecture: img.Arch, Variant: variant(img.Arch)},
			},
		})
	}
	if err := remote.WriteIndex(t, idx, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("push index %s: %w", t, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return nil, fmt.Errorf("index digest: %w", err)
	}
	out := &Image{
		Ref: t.String(), Repo: t.RepositoryStr(), Tag: t.TagStr(), Digest: digest.Digest(d.String()),
		Pinned: t.Context().Digest(d.String()).String(), idx: idx,
	}
	for _, img := range imgs {
		m := *img
		m.Repo, m.Tag = out.Repo, ""
		m.Pinned = t.Context().Digest(img.Digest.String()).String()
		m.Ref = m.Pinned
		out.Manifests = append(out.Manifests, &m)
	}
	return out, nil
}

// MoveTag points tag (in img's repository) at img, as a registry user
// re-tagging would, and returns img as seen through that tag.
func (b *Builder) MoveTag(ctx context.Context, tag string, img *Image) (*Image, error) {
	t, err := b.tag(img.Repo, tag)
	if err != nil {
		return nil, err
	}
	var taggable remote.Taggable = img.img
	if img.idx != nil {
		taggable = img.idx
	}
	if taggable == nil {
		return nil, errors.New("move tag: image was not built by this package")
	}
	if err := remote.Tag(t, taggable, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("move tag %s to %s: %w", t, img.Digest, err)
	}
	out := *img
	out.Ref, out.Tag = t.String(), t.TagStr()
	return &out, nil
}
