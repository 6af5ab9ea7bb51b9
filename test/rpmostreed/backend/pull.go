package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
)

// pulledImage is a container image copied into a local OCI layout.
type pulledImage struct {
	Ref            types.ImageReference // the OCI layout copy
	ManifestDigest string
	Manifest       []byte
	Config         []byte
	Version        string
	Created        time.Time
}

// errInsecureDefault is ostree-ext's refusal for ostree-image-signed when
// the policy's default accepts anything.
var errInsecureDefault = errors.New("containers-policy.json specifies a default of `insecureAcceptAnything`; refusing usage")

// policyContext returns the signature policy for a refspec. Every container pull consults the
// node's containers-policy.json (reference §9.1: "unverified" only means no signature is
// required by the refspec, so a restrictive default policy also blocks unverified pulls);
// ostree-image-signed additionally refuses a policy whose default is insecureAcceptAnything,
// as ostree-ext does.
func (b *Backend) policyContext(r containerRef) (*signature.PolicyContext, error) {
	path := b.opts.PolicyPath
	if path == "" {
		path = "/etc/containers/policy.json"
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading containers policy: %w", err)
	}
	if r.SigVerify == sigPolicy {
		var head struct {
			Default []struct {
				Type string `json:"type"`
			} `json:"default"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
		if len(head.Default) > 0 && head.Default[0].Type == "insecureAcceptAnything" {
			return nil, errInsecureDefault
		}
	}
	policy, err := signature.NewPolicyFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return nil, fmt.Errorf("containers policy: %w", err)
	}
	return pc, nil
}

// systemContext is the source-side containers/image configuration of the
// node: its registries.conf and registries.d, and ostree's auth file
// lookup (reference §9.4); nothing of the host's own container setup.
func (b *Backend) systemContext(bootedDir string) *types.SystemContext {
	auth := filepath.Join(b.opts.RunDir, "ostree", "auth.json")
	if _, err := os.Stat(auth); err != nil && bootedDir != "" {
		for _, p := range []string{"etc/ostree/auth.json", "usr/lib/ostree/auth.json"} {
			if _, err := os.Stat(filepath.Join(bootedDir, p)); err == nil {
				auth = filepath.Join(bootedDir, p)
				break
			}
		}
	}
	sys := &types.SystemContext{
		RegistriesDirPath:        b.opts.RegistriesD,
		SystemRegistriesConfPath: b.opts.RegistriesConf,
		BlobInfoCacheDir:         b.opts.BlobInfoCacheDir,
		AuthFilePath:             auth,
	}
	if b.opts.RegistriesConf != "" {
		// The drop-in directory belongs to the registries.conf given, as
		// /etc/containers/registries.conf.d belongs to the default one.
		sys.SystemRegistriesConfDirPath = b.opts.RegistriesConf + ".d"
	}
	return sys
}

// pull copies the image into an OCI layout under dir, enforcing the
// refspec's signature policy and reporting progress.
func (b *Backend) pull(ctx context.Context, r containerRef, pinDigest, bootedDir, dir string, p Progress) (pulledImage, error) {
	var img pulledImage
	src, err := r.imageReference(pinDigest)
	if err != nil {
		return img, err
	}
	pc, err := b.policyContext(r)
	if err != nil {
		return img, err
	}
	defer pc.Destroy()
	dest, err := layout.NewReference(dir, "image")
	if err != nil {
		return img, fmt.Errorf("local image store: %w", err)
	}
	events := make(chan types.ProgressProperties, 16)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		reportCopyProgress(events, p)
	}()
	raw, err := copy.Image(ctx, pc, dest, src, &copy.Options{
		SourceCtx:          b.systemContext(bootedDir),
		DestinationCtx:     &types.SystemContext{},
		RemoveSignatures:   true, // verified on the source; an OCI layout cannot store them
		PreserveDigests:    true, // the deployment records the manifest digest the registry serves
		ImageListSelection: copy.CopySystemImage,
		Progress:           events,
		ProgressInterval:   200 * time.Millisecond,
	})
	close(events)
	<-reported
	if err != nil {
		return img, err
	}
	dg, err := manifest.Digest(raw)
	if err != nil {
		return img, fmt.Errorf("manifest digest: %w", err)
	}
	img.Ref, img.ManifestDigest, img.Manifest = dest, dg.String(), raw
	local, err := dest.NewImage(ctx, &types.SystemContext{})
	if err != nil {
		return img, fmt.Errorf("open pulled image: %w", err)
	}
	defer local.Close()
	if img.Config, err = local.ConfigBlob(ctx); err != nil {
		return img, fmt.Errorf("image config: %w", err)
	}
	cfg, err := local.OCIConfig(ctx)
	if err != nil {
		return img, fmt.Errorf("image config: %w", err)
	}
	if cfg.Created != nil {
		img.Created = *cfg.Created
	}
	img.Version = cfg.Config.Labels["org.opencontainers.image.version"]
	if img.Version == "" {
		img.Version = cfg.Config.Labels["version"]
	}
	return img, nil
}

// reportCopyProgress turns containers/image copy events into rpm-ostree
// transaction progress: a task per layer, DownloadProgress with byte counts
// and PercentProgress over all layers.
func reportCopyProgress(events <-chan types.ProgressProperties, p Progress) {
	start := time.Now()
	var total, done uint64         // bytes of all known blobs / fetched
	var nBlobs, nDone uint32       // blobs seen / finished
	partial := map[string]uint64{} // blob digest → bytes read so far
	for ev := range events {
		key := ev.Artifact.Digest.String()
		switch ev.Event {
		case types.ProgressEventNewArtifact:
			nBlobs++
			if ev.Artifact.Size > 0 {
				total += uint64(ev.Artifact.Size)
			}
			p.TaskBegin(fmt.Sprintf("Fetching %s", key))
		case types.ProgressEventRead:
			done += ev.OffsetUpdate
			partial[key] = ev.Offset
		case types.ProgressEventDone, types.ProgressEventSkipped:
			nDone++
			if ev.Artifact.Size > 0 && partial[key] < uint64(ev.Artifact.Size) {
				done += uint64(ev.Artifact.Size) - partial[key]
			}
			p.TaskEnd("done")
		default:
			continue
		}
		elapsed := time.Since(start)
		p.DownloadProgress(DownloadProgress{
			Start: uint64(start.Unix()), Elapsed: uint64(elapsed.Seconds()),
			OutstandingFetches: nBlobs - nDone,
			ContentFetched:     nDone, ContentRequested: nBlobs,
			Bytes: done, BytesPerSecond: uint64(float64(done) / max(elapsed.Seconds(), 0.001)),
		})
		if total > 0 {
			p.PercentProgress("Receiving objects", uint32(min(100, done*100/total)))
		}
	}
	p.ProgressEnd()
}
