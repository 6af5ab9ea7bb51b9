package ostreesys

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/types"
)

// FlattenImage reads the image at ref through go.podman.io/image (a
// manifest list resolves to the instance sys selects), applies its layers
// bottom-first to dst with FlattenLayers, and runs PrepareTree. Every blob
// is verified against its manifest digest and, when the config lists them,
// its uncompressed stream against the diff ID. It returns the digest of the
// image manifest whose layers were applied (what ostree-ext records as
// ostree.manifest-digest).
//
// If FlattenImage creates dst, it removes it again on failure.
func FlattenImage(ctx context.Context, sys *types.SystemContext, ref types.ImageReference, dst string) (_ string, err error) {
	cleanup, err := ensureDir(dst)
	if err != nil {
		return "", fmt.Errorf("ostreesys: flatten image: %w", err)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return "", fmt.Errorf("ostreesys: open image %s: %w", ref.StringWithinTransport(), err)
	}
	defer src.Close()

	unparsed := image.UnparsedInstance(src, nil)
	raw, mime, err := unparsed.Manifest(ctx)
	if err != nil {
		return "", fmt.Errorf("ostreesys: manifest of %s: %w", ref.StringWithinTransport(), err)
	}
	if manifest.MIMETypeIsMultiImage(mime) {
		list, err := manifest.ListFromBlob(raw, mime)
		if err != nil {
			return "", fmt.Errorf("ostreesys: parse manifest list: %w", err)
		}
		inst, err := list.ChooseInstance(sys)
		if err != nil {
			return "", fmt.Errorf("ostreesys: choose instance: %w", err)
		}
		unparsed = image.UnparsedInstance(src, &inst)
		if raw, _, err = unparsed.Manifest(ctx); err != nil {
			return "", fmt.Errorf("ostreesys: manifest instance %s: %w", inst, err)
		}
	}
	mdigest, err := manifest.Digest(raw)
	if err != nil {
		return "", fmt.Errorf("ostreesys: manifest digest: %w", err)
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return "", fmt.Errorf("ostreesys: image %s: %w", ref.StringWithinTransport(), err)
	}
	var diffIDs []digest.Digest
	if cfg, err := img.OCIConfig(ctx); err == nil && cfg != nil {
		diffIDs = cfg.RootFS.DiffIDs
	}
	layers := img.LayerInfos()
	if len(diffIDs) > 0 && len(diffIDs) != len(layers) {
		return "", fmt.Errorf("ostreesys: image has %d layers but %d diff IDs", len(layers), len(diffIDs))
	}
	for i, li := range layers {
		var diffID digest.Digest
		if len(diffIDs) > 0 {
			diffID = diffIDs[i]
		}
		if err := applyBlob(ctx, src, li, diffID, dst); err != nil {
			return "", fmt.Errorf("ostreesys: layer %d (%s) of %s: %w", i, li.Digest, ref.StringWithinTransport(), err)
		}
	}
	if err := PrepareTree(dst); err != nil {
		return "", err
	}
	return mdigest.String(), nil
}

// applyBlob streams one layer blob: digest check on the raw bytes,
// decompression (gzip, zstd, … detected), diff-ID check on the tar.
func applyBlob(ctx context.Context, src types.ImageSource, li types.BlobInfo, diffID digest.Digest, dst string) error {
	rc, _, err := src.GetBlob(ctx, li, none.NoCache)
	if err != nil {
		return fmt.Errorf("get blob: %w", err)
	}
	defer rc.Close()
	if err := li.Digest.Validate(); err != nil {
		return fmt.Errorf("layer digest: %w", err)
	}
	blobVerifier := li.Digest.Verifier()
	teed := io.TeeReader(rc, blobVerifier)
	decomp, r, err := compression.DetectCompression(teed)
	if err != nil {
		return fmt.Errorf("detect compression: %w", err)
	}
	var tarStream io.Reader = r
	if decomp != nil {
		d, err := decomp(r)
		if err != nil {
			return fmt.Errorf("decompress: %w", err)
		}
		defer d.Close()
		tarStream = d
	}
	var diffVerifier digest.Verifier
	if diffID != "" {
		if err := diffID.Validate(); err != nil {
			return fmt.Errorf("diff ID: %w", err)
		}
		diffVerifier = diffID.Verifier()
		tarStream = io.TeeReader(tarStream, diffVerifier)
	}
	if err := FlattenLayers(dst, []io.Reader{tarStream}); err != nil {
		return err
	}
	// Drain: tar readers stop at the end-of-archive marker; the digests
	// cover every byte (padding, compression trailer).
	if _, err := io.Copy(io.Discard, tarStream); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	if _, err := io.Copy(io.Discard, teed); err != nil {
		return fmt.Errorf("read blob: %w", err)
	}
	if !blobVerifier.Verified() {
		return fmt.Errorf("blob digest mismatch: want %s", li.Digest)
	}
	if diffVerifier != nil && !diffVerifier.Verified() {
		return fmt.Errorf("uncompressed layer does not match diff ID %s", diffID)
	}
	return nil
}
