package image

import (
	"context"
	"errors"
	"fmt"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/reason"
)

// Resolved is an image reference pinned to the digest that will be deployed.
type Resolved struct {
	// Input is the reference as given.
	Input string
	// Name is the fully qualified reference before pinning (registry/repo:tag or @digest).
	Name string
	// Repo is registry/repo.
	Repo string
	// Pinned is Repo@ManifestDigest: what is verified, validated and staged.
	Pinned string
	// ManifestDigest is the per-arch manifest digest (rpm-ostree reports it back).
	ManifestDigest digest.Digest
	// IndexDigest is the digest of the manifest list / OCI index the reference named; empty for
	// a single-arch image.
	IndexDigest digest.Digest
	// Platform is the index entry chosen for the node; empty for a single-arch image.
	Platform Platform
}

// Platform is an OS/architecture pair.
type Platform struct {
	OS      string `json:"os"`
	Arch    string `json:"architecture"`
	Variant string `json:"variant,omitempty"`
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Resolve pins ref: it fetches the manifest the reference names (through the mirrors of
// registries.conf) and, for a manifest list or OCI index, the entry for the node's platform.
func (c *Client) Resolve(ctx context.Context, ref string) (*Resolved, error) {
	sys := c.opts.systemContext()
	sysregistriesv2.InvalidateCache() // see the host's current registries.conf, as rpm-ostree will
	named, err := c.qualify(sys, ref)
	if err != nil {
		return nil, err
	}
	if err := checkBlocked(sys, ref, named); err != nil {
		return nil, err
	}
	var res *Resolved
	err = c.retry(ctx, ref, reason.RegistryUnavailable, func(ctx context.Context) error {
		var err error
		res, err = c.resolveOnce(ctx, sys, ref, named)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.log.Debug("resolved", zap.String("image", ref), zap.String("digest", res.ManifestDigest.String()),
		zap.String("indexDigest", res.IndexDigest.String()))
	return res, nil
}

func (c *Client) resolveOnce(ctx context.Context, sys *types.SystemContext, input string, named reference.Named) (*Resolved, error) {
	src, err := openSource(ctx, sys, named)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	raw, mime, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching manifest: %w", err)
	}
	if d, ok := named.(reference.Digested); ok {
		if err := checkManifestDigest(input, raw, d.Digest()); err != nil {
			return nil, err
		}
	}
	top, err := manifest.Digest(raw)
	if err != nil {
		return nil, fmt.Errorf("digesting manifest: %w", err)
	}
	repo := reference.TrimNamed(named)
	res := &Resolved{Input: input, Name: named.String(), Repo: repo.Name(), ManifestDigest: top}
	if manifest.MIMETypeIsMultiImage(manifest.NormalizedMIMEType(mime)) {
		if err := c.chooseInstance(ctx, sys, src, input, raw, mime, res); err != nil {
			return nil, err
		}
	}
	pinned, err := reference.WithDigest(repo, res.ManifestDigest)
	if err != nil {
		return nil, err
	}
	res.Pinned = pinned.String()
	return res, nil
}

// chooseInstance picks the node's entry from an index the way copy.Image does for one system
// image, then fetches that manifest to check it exists and matches its digest.
func (c *Client) chooseInstance(ctx context.Context, sys *types.SystemContext, src types.ImageSource, input string,
	raw []byte, mime string, res *Resolved,
) error {
	list, err := manifest.ListFromBlob(raw, manifest.NormalizedMIMEType(mime))
	if err != nil {
		return newError(reason.NotBootable, input, fmt.Errorf("parsing manifest list: %w", err))
	}
	inst, err := list.ChooseInstance(sys)
	if err != nil {
		return newError(reason.ArchMismatch, input, fmt.Errorf("no manifest for %s in index %s (has %s)",
			c.nodePlatform(), res.ManifestDigest, strings.Join(listPlatforms(list), ", ")))
	}
	res.IndexDigest = res.ManifestDigest
	res.ManifestDigest = inst
	if u, err := list.Instance(inst); err == nil && u.ReadOnly.Platform != nil {
		p := u.ReadOnly.Platform
		res.Platform = Platform{OS: p.OS, Arch: p.Architecture, Variant: p.Variant}
	}
	instRaw, instMIME, err := src.GetManifest(ctx, &inst)
	if err != nil {
		return fmt.Errorf("fetching manifest %s from index: %w", inst, err)
	}
	if err := checkManifestDigest(input, instRaw, inst); err != nil {
		return err
	}
	if manifest.MIMETypeIsMultiImage(manifest.NormalizedMIMEType(instMIME)) {
		return newError(reason.NotBootable, input, fmt.Errorf("index entry %s is itself an index", inst))
	}
	return nil
}

func (c *Client) nodePlatform() Platform {
	return Platform{OS: c.opts.OS, Arch: c.opts.Arch, Variant: c.opts.Variant}
}

func listPlatforms(list manifest.List) []string {
	var out []string
	for _, d := range list.Instances() {
		u, err := list.Instance(d)
		if err != nil || u.ReadOnly.Platform == nil {
			out = append(out, "unknown")
			continue
		}
		p := u.ReadOnly.Platform
		out = append(out, Platform{OS: p.OS, Arch: p.Architecture, Variant: p.Variant}.String())
	}
	if len(out) == 0 {
		return []string{"no entries"}
	}
	return out
}

// openSource opens a docker transport source; the library honours registries.conf (mirrors,
// insecure) and auth. Opening fetches the manifest the reference names.
func openSource(ctx context.Context, sys *types.SystemContext, named reference.Named) (types.ImageSource, error) {
	ref, err := docker.NewReference(named)
	if err != nil {
		return nil, newError(reason.InvalidReference, named.String(), err)
	}
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", named, err)
	}
	return src, nil
}

// checkManifestDigest reports DigestMismatch when raw does not hash to want.
func checkManifestDigest(input string, raw []byte, want digest.Digest) error {
	ok, err := manifest.MatchesDigest(raw, want)
	if err != nil {
		return newError(reason.DigestMismatch, input, fmt.Errorf("checking manifest against %s: %w", want, err))
	}
	if !ok {
		return newError(reason.DigestMismatch, input, fmt.Errorf("manifest served for %s hashes to %s", want,
			want.Algorithm().FromBytes(raw)))
	}
	return nil
}

// pinnedRef parses a Resolved field back into a reference.
func pinnedRef(repo string, d digest.Digest) (reference.Named, error) {
	n, err := reference.ParseNormalizedNamed(repo)
	if err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return reference.WithDigest(reference.TrimNamed(n), d)
}

var errNilResolved = errors.New("nil or empty Resolved")
