package image

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"

	"layerd.dev/layerd/pkg/reason"
)

// Labels layerd reads.
const (
	LabelBootc          = "containers.bootc" // "1" on bootc images
	LabelOSTreeBootable = "ostree.bootable"  // present on ostree-native container images
	LabelOCIVersion     = "org.opencontainers.image.version"
	LabelVersion        = "version"
)

// Info is what Validate learned from the per-arch manifest and the image config.
type Info struct {
	Platform Platform          `json:"platform"`
	Labels   map[string]string `json:"labels"`
	// Version is org.opencontainers.image.version, else version, else "".
	Version string `json:"version,omitempty"`
	// Bootable names the label that made the image bootable.
	Bootable string `json:"bootable,omitempty"`
	// Size is the config plus all layers as listed in the manifest (compressed bytes).
	Size         int64         `json:"size"`
	Layers       int           `json:"layers"`
	ConfigDigest digest.Digest `json:"configDigest"`
	MediaType    string        `json:"mediaType"`
}

// Validate fetches the per-arch manifest and the image config (never a layer) and checks that
// the image is a bootable OS image for this node. Info is returned with NotBootable and
// ArchMismatch errors too, so callers can show what the image is.
func (c *Client) Validate(ctx context.Context, r *Resolved) (*Info, error) {
	if r == nil || r.Repo == "" || r.ManifestDigest == "" {
		return nil, newError(reason.InvalidReference, "", errNilResolved)
	}
	named, err := pinnedRef(r.Repo, r.ManifestDigest)
	if err != nil {
		return nil, newError(reason.InvalidReference, r.Pinned, err)
	}
	img := named.String()
	sys := c.opts.systemContext()
	var info *Info
	err = c.retry(ctx, img, reason.RegistryUnavailable, func(ctx context.Context) error {
		src, err := openSource(ctx, sys, named)
		if err != nil {
			return err
		}
		defer src.Close()
		info, err = c.readImage(ctx, src, img, r.ManifestDigest)
		return err
	})
	if err != nil {
		return nil, err
	}
	if code, err := c.check(info); err != nil {
		return info, newError(code, img, err)
	}
	return info, nil
}

func (c *Client) readImage(ctx context.Context, src types.ImageSource, img string, want digest.Digest) (*Info, error) {
	raw, mime, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching manifest: %w", err)
	}
	if int64(len(raw)) > c.opts.MaxManifestSize {
		return nil, newError(reason.NotBootable, img, fmt.Errorf("manifest is %d bytes, limit %d", len(raw), c.opts.MaxManifestSize))
	}
	if err := checkManifestDigest(img, raw, want); err != nil {
		return nil, err
	}
	mime = manifest.NormalizedMIMEType(mime)
	if manifest.MIMETypeIsMultiImage(mime) {
		return nil, newError(reason.NotBootable, img, fmt.Errorf("%s is an index, not a single image", want))
	}
	m, err := manifest.FromBlob(raw, mime)
	if err != nil {
		return nil, newError(reason.NotBootable, img, fmt.Errorf("parsing %s manifest: %w", mime, err))
	}
	cfg := m.ConfigInfo()
	if cfg.Digest == "" {
		return nil, newError(reason.NotBootable, img, fmt.Errorf("%s manifests carry no image config", mime))
	}
	if cfg.Size > c.opts.MaxConfigSize {
		return nil, newError(reason.NotBootable, img, fmt.Errorf("config is %d bytes, limit %d", cfg.Size, c.opts.MaxConfigSize))
	}
	blob, err := c.fetchConfig(ctx, src, img, cfg)
	if err != nil {
		return nil, err
	}
	info, err := parseConfig(blob)
	if err != nil {
		return nil, newError(reason.NotBootable, img, err)
	}
	info.ConfigDigest, info.MediaType = cfg.Digest, mime
	info.Size = cfg.Size
	for _, l := range m.LayerInfos() {
		info.Size += l.Size
		info.Layers++
	}
	return info, nil
}

func (c *Client) fetchConfig(ctx context.Context, src types.ImageSource, img string, cfg types.BlobInfo) ([]byte, error) {
	if err := cfg.Digest.Validate(); err != nil {
		return nil, newError(reason.NotBootable, img, fmt.Errorf("config digest: %w", err))
	}
	rc, _, err := src.GetBlob(ctx, types.BlobInfo{Digest: cfg.Digest, Size: cfg.Size}, none.NoCache)
	if err != nil {
		return nil, fmt.Errorf("fetching config %s: %w", cfg.Digest, err)
	}
	defer rc.Close()
	blob, err := io.ReadAll(io.LimitReader(rc, c.opts.MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", cfg.Digest, err)
	}
	if int64(len(blob)) > c.opts.MaxConfigSize {
		return nil, newError(reason.NotBootable, img, fmt.Errorf("config is larger than %d bytes", c.opts.MaxConfigSize))
	}
	if got := cfg.Digest.Algorithm().FromBytes(blob); got != cfg.Digest {
		return nil, newError(reason.DigestMismatch, img, fmt.Errorf("config served for %s hashes to %s", cfg.Digest, got))
	}
	return blob, nil
}

// imageConfig is the part of an OCI / Docker image config layerd reads.
type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	Config       struct {
		Labels map[string]string `json:"Labels"`
	} `json:"config"`
}

// parseConfig reads platform and labels from an image config.
func parseConfig(blob []byte) (*Info, error) {
	var cfg imageConfig
	if err := json.Unmarshal(blob, &cfg); err != nil {
		return nil, fmt.Errorf("parsing image config: %w", err)
	}
	labels := cfg.Config.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	info := &Info{
		Platform: Platform{OS: cfg.OS, Arch: NormalizeArch(cfg.Architecture), Variant: cfg.Variant},
		Labels:   labels,
		Version:  versionOf(labels),
		Bootable: bootableLabel(labels),
	}
	return info, nil
}

// bootableLabel returns the label that marks a bootable image the way bootc and ostree-ext
// decide: containers.bootc=1, or the presence of ostree.bootable.
func bootableLabel(labels map[string]string) string {
	if labels[LabelBootc] == "1" {
		return LabelBootc + "=1"
	}
	if _, ok := labels[LabelOSTreeBootable]; ok {
		return LabelOSTreeBootable
	}
	return ""
}

func versionOf(labels map[string]string) string {
	if v := labels[LabelOCIVersion]; v != "" {
		return v
	}
	return labels[LabelVersion]
}

// check compares what the config says with the node.
func (c *Client) check(info *Info) (reason.Code, error) {
	node := c.nodePlatform()
	if info.Platform.OS != node.OS || info.Platform.Arch != node.Arch ||
		(node.Variant != "" && info.Platform.Variant != "" && info.Platform.Variant != node.Variant) {
		return reason.ArchMismatch, fmt.Errorf("image is for %s, node is %s", info.Platform, node)
	}
	if info.Bootable == "" {
		return reason.NotBootable, fmt.Errorf("no %s=1 or %s label (labels: %s)",
			LabelBootc, LabelOSTreeBootable, labelKeys(info.Labels))
	}
	return "", nil
}

func labelKeys(labels map[string]string) string {
	if len(labels) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return fmt.Sprint(keys)
}
