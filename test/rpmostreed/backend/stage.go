package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.podman.io/image/v5/types"

	"layerd.dev/layerd/test/ostreesys"
)

// Messages rpm-ostree sends when a deploy-family transaction changes nothing.
const (
	msgNoUpgrade  = "No upgrade available."
	msgNoChange   = "No change."
	msgPinned     = "Pinned to commit; no upgrade available"
	msgDownloaded = "Update downloaded."
)

// Stage runs a deploy-family transaction: resolve the target (pull it unless
// cache-only), commit it and stage it as the new default with
// `ostree admin deploy --stage` in the node's fake boot.
func (b *Backend) Stage(ctx context.Context, req StageRequest, p Progress) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	if req.CacheOnly && req.DownloadOnly {
		return errors.New("Can't specify cache-only and download-only")
	}
	st, err := b.read()
	if err != nil {
		return err
	}
	booted := st.booted()
	if booted == nil {
		return errors.New("Not currently booted into an OSTree system")
	}
	// rpm-ostree's origin merge deployment: the pending/staged one of this
	// OS when present, else the booted one.
	merge, _ := st.pendingRollback(b.opts.OSName)
	if merge == nil {
		merge = booted
	}
	current := merge.Origin.ContainerImageReference
	if current == "" {
		current = merge.Origin.Refspec
	}
	refspec := req.Refspec
	switch {
	case refspec != "" && refspec == current:
		return fmt.Errorf("Old and new refs are equal: %s", refspec)
	case refspec == "":
		refspec = current
	}
	if refspec == "" {
		return fmt.Errorf("deployment %s has no origin refspec", merge.name())
	}
	if !isContainerRefspec(refspec) {
		return b.stageOstreeRef(ctx, st, merge, refspec, req, p)
	}
	cref, err := parseContainerRefspec(refspec)
	if err != nil {
		return err
	}
	pin := req.Revision
	override := merge.Origin.Extra["origin"]["override-commit"]
	if pin == "" && req.Refspec == "" && override != "" {
		p.Message(msgPinned)
		return nil
	}
	csum, digest, err := b.importImage(ctx, cref, pin, req.CacheOnly, booted.Dir, p)
	if err != nil {
		return err
	}
	if refspec == current && digest == deploymentDigest(*merge) {
		if req.Revision == "" {
			p.Message(msgNoUpgrade)
		} else {
			p.Message(msgNoChange)
		}
		return nil
	}
	if req.DownloadOnly {
		p.Message(msgDownloaded)
		return nil
	}
	origin := ostreesys.Origin{ContainerImageReference: refspec}
	if req.Revision != "" {
		origin.Extra = map[string]map[string]string{"origin": {"override-commit": req.Revision}}
	}
	return b.deployStaged(ctx, st, csum, origin, req.LockFinalization, p)
}

// deploymentDigest is the image digest a container deployment runs.
func deploymentDigest(d deployment) string {
	if o := d.Origin.Extra["origin"]["override-commit"]; o != "" {
		return o
	}
	return d.Commit.metaString(metaManifestDigest)
}

// importImage makes the image available as an ostree commit under
// ostree-ext's ref and returns the commit and manifest digest. A commit of
// the same manifest already in the repo is reused (layers are not
// re-imported), as ostree-ext does.
func (b *Backend) importImage(ctx context.Context, cref containerRef, pin string, cacheOnly bool, bootedDir string, p Progress) (string, string, error) {
	ref := imageRefName(cref)
	cached := func() (string, string) {
		csum, err := b.sys.RevParse(ctx, ref)
		if err != nil {
			return "", ""
		}
		c, err := b.reader.commits.read(csum)
		if err != nil {
			return "", ""
		}
		return csum, c.metaString(metaManifestDigest)
	}
	if cacheOnly {
		csum, digest := cached()
		if csum == "" || (pin != "" && digest != pin) {
			return "", "", fmt.Errorf("Image %s is not cached (cache-only)", cref.Refspec)
		}
		return csum, digest, nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(b.opts.Sysroot, "ostree", "repo", "tmp"), "layerd-import-")
	if err != nil {
		return "", "", fmt.Errorf("import: %w", err)
	}
	defer os.RemoveAll(tmp)
	p.Message("Pulling manifest: " + cref.Refspec)
	img, err := b.pull(ctx, cref, pin, bootedDir, filepath.Join(tmp, "oci"), p)
	if err != nil {
		return "", "", err
	}
	if pin != "" && img.ManifestDigest != pin {
		return "", "", fmt.Errorf("Expected manifest digest %s, but found %s", pin, img.ManifestDigest)
	}
	p.Message(fmt.Sprintf("Importing: %s (digest: %s)", cref.Refspec, img.ManifestDigest))
	if csum, digest := cached(); csum != "" && digest == img.ManifestDigest {
		return csum, digest, nil
	}
	p.TaskBegin("Importing image layers")
	tree := filepath.Join(tmp, "tree")
	if _, err := ostreesys.FlattenImage(ctx, &types.SystemContext{}, img.Ref, tree); err != nil {
		return "", "", fmt.Errorf("import %s: %w", cref.Refspec, err)
	}
	meta := map[string]string{
		metaManifestDigest: img.ManifestDigest,
		metaManifest:       string(img.Manifest),
		metaImageConfig:    string(img.Config),
	}
	if img.Version != "" {
		meta[metaVersion] = img.Version
	}
	csum, err := b.sys.CommitTree(ctx, tree, ref, meta)
	if err != nil {
		return "", "", fmt.Errorf("import %s: %w", cref.Refspec, err)
	}
	p.TaskEnd("done")
	return csum, img.ManifestDigest, nil
}

// stageOstreeRef stages a plain ostree ref or checksum that is already in
// the local repository (the stand-in pulls nothing from ostree remotes).
func (b *Backend) stageOstreeRef(ctx context.Context, st state, merge *deployment, refspec string, req StageRequest, p Progress) error {
	rev := refspec
	if req.Revision != "" {
		rev = req.Revision
	}
	local := rev
	if _, after, ok := strings.Cut(rev, ":"); ok { // remote:ref → the local ref
		local = after
	}
	csum, err := b.sys.RevParse(ctx, local)
	if err != nil {
		return fmt.Errorf("%s: pulling from ostree remotes is %w: %v", refspec, errUnsupported, err)
	}
	if csum == merge.Checksum && refspec == merge.Origin.Refspec {
		p.Message(msgNoUpgrade)
		return nil
	}
	if req.DownloadOnly {
		p.Message(msgDownloaded)
		return nil
	}
	origin := ostreesys.Origin{Refspec: refspec}
	if req.Revision != "" {
		origin.Extra = map[string]map[string]string{"origin": {"override-commit": csum}}
	}
	return b.deployStaged(ctx, st, csum, origin, req.LockFinalization, p)
}

// deployStaged runs `ostree admin deploy --stage` in the fake boot with the
// given origin. lock-finalization uses libostree 2022.7's lock file, which
// `ostree admin finalize-staged` honours ("Not finalizing; found …").
func (b *Backend) deployStaged(ctx context.Context, st state, csum string, origin ostreesys.Origin, lock bool, p Progress) error {
	p.TaskBegin("Staging deployment")
	tmpDir := filepath.Join(b.opts.Sysroot, "ostree", "repo", "tmp")
	f, err := os.CreateTemp(tmpDir, "layerd-origin-")
	if err != nil {
		return fmt.Errorf("staging: origin file: %w", err)
	}
	defer os.Remove(f.Name())
	_, werr := f.Write(origin.Marshal())
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("staging: origin file: %w", werr)
	}
	// The lock exists before the staged deployment appears, so no moment
	// exists in which a reboot would finalize a deployment meant to be locked.
	wasLocked, _ := readFinalizationLock(b.opts.RunDir)
	if lock && !wasLocked {
		if err := setFinalizationLock(b.opts.RunDir, true); err != nil {
			return fmt.Errorf("staging: %w", err)
		}
	}
	inBoot := b.sysrootPathInBoot(f.Name())
	if _, err := b.execBooted(ctx, st, "ostree", "admin", "deploy", "--stage",
		"--os="+b.opts.OSName, "--origin-file="+inBoot, csum); err != nil {
		if lock && !wasLocked {
			_ = setFinalizationLock(b.opts.RunDir, false)
		}
		return fmt.Errorf("staging deployment: %w", err)
	}
	if lock {
		// A legacy file somebody else created is now ours.
		if err := setFinalizationLock(b.opts.RunDir, true); err != nil {
			return fmt.Errorf("staging: %w", err)
		}
	} else if wasLocked {
		if err := setFinalizationLock(b.opts.RunDir, false); err != nil {
			return fmt.Errorf("staging: %w", err)
		}
	}
	p.TaskEnd("done")
	return nil
}
