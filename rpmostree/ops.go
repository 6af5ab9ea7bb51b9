package rpmostree

import (
	"context"
	"fmt"
	"slices"
)

// Rebase switches the origin to refspec (reference §3.1) and follows the transaction. Rebasing
// to the refspec the default deployment already has fails with "Old and new refs are equal";
// StageImage avoids that.
func (c *Client) Rebase(ctx context.Context, refspec string, opts RebaseOptions) error {
	if err := c.runTxn(ctx, "Rebase", opts.Progress, opts.vardict(), refspec, []string{}); err != nil {
		return fmt.Errorf("rebasing to %s: %w", refspec, err)
	}
	return nil
}

// Deploy deploys revision (commit, version, or sha256: digest) of the current origin.
func (c *Client) Deploy(ctx context.Context, revision string, opts DeployOptions) error {
	if err := c.runTxn(ctx, "Deploy", opts.Progress, revision, opts.vardict()); err != nil {
		return fmt.Errorf("deploying %s: %w", revision, err)
	}
	return nil
}

// Upgrade pulls the newest content of the current origin.
func (c *Client) Upgrade(ctx context.Context, opts DeployOptions) error {
	if err := c.runTxn(ctx, "Upgrade", opts.Progress, opts.vardict()); err != nil {
		return fmt.Errorf("upgrading: %w", err)
	}
	return nil
}

// UpdateDeployment is the general form behind Rebase, Deploy and Upgrade.
func (c *Client) UpdateDeployment(ctx context.Context, mods Modifiers, opts DeployOptions) error {
	if err := c.runTxn(ctx, "UpdateDeployment", opts.Progress, mods.vardict(), opts.vardict()); err != nil {
		return fmt.Errorf("updating deployment (refspec %q, revision %q): %w", mods.SetRefspec, mods.SetRevision, err)
	}
	return nil
}

// Rollback makes the rollback deployment boot next (it fails while one is staged: clean up
// pending-deploy first).
func (c *Client) Rollback(ctx context.Context, opts RollbackOptions) error {
	vd := DeployOptions{Reboot: opts.Reboot}.vardict()
	if err := c.runTxn(ctx, "Rollback", opts.Progress, vd); err != nil {
		return fmt.Errorf("rolling back: %w", err)
	}
	return nil
}

// Cleanup removes deployments or caches: CleanupPendingDeploy, CleanupRollbackDeploy, ….
func (c *Client) Cleanup(ctx context.Context, elements []string, opts CleanupOptions) error {
	if elements == nil {
		elements = []string{}
	}
	if err := c.runTxn(ctx, "Cleanup", opts.Progress, elements); err != nil {
		return fmt.Errorf("cleaning up %v: %w", elements, err)
	}
	return nil
}

// FinalizeDeployment unlocks the finalization-locked staged deployment and lets the daemon
// reboot the machine. checksum is the staged image's manifest digest (sha256:…) for a
// container deployment, or the base commit for an ostree one (reference §4.4, §10.3).
func (c *Client) FinalizeDeployment(ctx context.Context, checksum string, opts FinalizeOptions) error {
	if err := c.runTxn(ctx, "FinalizeDeployment", opts.Progress, opts.vardict(checksum)); err != nil {
		return fmt.Errorf("finalizing deployment %s: %w", checksum, err)
	}
	return nil
}

// StageResult tells what StageImage found or did.
type StageResult struct {
	// Deployment is the default deployment now carrying the image.
	Deployment *Deployment
	// Started is true when a transaction ran; false when the default deployment already was
	// the image (nothing was called).
	Started bool
}

// StageImage stages pinnedRef (repo@sha256:…) idempotently: when the default deployment
// (staged, pending, else booted) already carries that digest it returns without a
// transaction; otherwise it rebases to ContainerRefspec(pinnedRef) and checks the result.
func (c *Client) StageImage(ctx context.Context, pinnedRef string, opts RebaseOptions) (*StageResult, error) {
	refspec, err := ContainerRefspec(pinnedRef)
	if err != nil {
		return nil, err
	}
	digest := DigestOf(refspec)
	st, err := c.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("staging %s: %w", pinnedRef, err)
	}
	if carries(st.Default, refspec, digest) {
		return &StageResult{Deployment: st.Default}, nil
	}
	if err := c.Rebase(ctx, refspec, opts); err != nil {
		return nil, fmt.Errorf("staging %s: %w", pinnedRef, err)
	}
	st, err = c.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("staging %s: %w", pinnedRef, err)
	}
	if !opts.DownloadOnly && !carries(st.Default, refspec, digest) {
		return nil, fmt.Errorf("staging %s: transaction succeeded but the default deployment is %s", pinnedRef, describe(st.Default))
	}
	return &StageResult{Deployment: st.Default, Started: true}, nil
}

func carries(d *Deployment, refspec, digest string) bool {
	if d == nil {
		return false
	}
	return d.ContainerImageReferenceDigest == digest || d.ContainerImageReference == refspec
}

func describe(d *Deployment) string {
	if d == nil {
		return "none"
	}
	return fmt.Sprintf("%s (image %q, digest %q)", d.ID, d.ContainerImageReference, d.ContainerImageReferenceDigest)
}

// validCleanup lists the elements the daemon accepts.
var validCleanup = []string{CleanupBase, CleanupPendingDeploy, CleanupRollbackDeploy, CleanupRepomd}

// IsCleanupElement reports whether e is a known Cleanup element.
func IsCleanupElement(e string) bool { return slices.Contains(validCleanup, e) }
