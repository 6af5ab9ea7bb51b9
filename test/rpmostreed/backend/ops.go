package backend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// Finalize checks and unlocks the staged deployment (reference §10.3); the
// server then requests the reboot.
func (b *Backend) Finalize(ctx context.Context, req FinalizeRequest) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	st, err := b.read()
	if err != nil {
		return err
	}
	staged := st.staged()
	if staged == nil {
		return errors.New("No pending staged deployment found")
	}
	if staged.OSName != b.opts.OSName {
		return fmt.Errorf("Staged deployment is not for osname '%s'", b.opts.OSName)
	}
	found := staged.Checksum
	if staged.Origin.ContainerImageReference != "" {
		found = deploymentDigest(*staged)
	}
	if req.Checksum == "" && !req.AllowMissingChecksum {
		return errors.New("Missing expected checksum")
	}
	if req.Checksum != "" && req.Checksum != found {
		return fmt.Errorf("Expected staged base checksum %s, but found %s", req.Checksum, found)
	}
	if !staged.Locked {
		if req.AllowUnlocked {
			return nil
		}
		return errors.New("Staged deployment already unlocked")
	}
	b.diskMu.Lock()
	defer b.diskMu.Unlock()
	if err := setFinalizationLock(b.opts.RunDir, false); err != nil {
		return fmt.Errorf("unlocking staged deployment: %w", err)
	}
	return nil
}

// Cleanup elements (reference §4.3).
const (
	CleanupBase          = "base"
	CleanupPendingDeploy = "pending-deploy"
	CleanupRollback      = "rollback-deploy"
	CleanupRepomd        = "repomd"
)

// ValidateCleanup returns rpm-ostree's method-call error for an unknown
// element.
func ValidateCleanup(elements []string) error {
	for _, e := range elements {
		switch e {
		case CleanupBase, CleanupPendingDeploy, CleanupRollback, CleanupRepomd:
		default:
			return fmt.Errorf("Invalid cleanup type: %s", e)
		}
	}
	return nil
}

// Cleanup removes the pending (staged or not) and/or rollback deployment of
// this OS with `ostree admin undeploy` in the fake boot; "base" prunes the
// repository (`ostree admin cleanup`); "repomd" has nothing to clean here.
func (b *Backend) Cleanup(ctx context.Context, elements []string) error {
	if err := ValidateCleanup(elements); err != nil {
		return err
	}
	b.opMu.Lock()
	defer b.opMu.Unlock()
	want := map[string]bool{}
	for _, e := range elements {
		want[e] = true
	}
	if want[CleanupPendingDeploy] {
		if err := b.undeploy(ctx, true); err != nil {
			return err
		}
	}
	if want[CleanupRollback] {
		if err := b.undeploy(ctx, false); err != nil {
			return err
		}
	}
	if want[CleanupBase] {
		st, err := b.read()
		if err != nil {
			return err
		}
		if _, err := b.execBooted(ctx, st, "ostree", "admin", "cleanup"); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	return nil
}

// undeploy removes this OS's pending (or rollback) deployment, if any.
func (b *Backend) undeploy(ctx context.Context, pending bool) error {
	st, err := b.read()
	if err != nil {
		return err
	}
	p, r := st.pendingRollback(b.opts.OSName)
	target := r
	if pending {
		target = p
	}
	if target == nil {
		return nil
	}
	idx := -1
	for i := range st.Deployments {
		if &st.Deployments[i] == target {
			idx = i
		}
	}
	if _, err := b.execBooted(ctx, st, "ostree", "admin", "undeploy", strconv.Itoa(idx)); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if target.Staged {
		b.diskMu.Lock()
		defer b.diskMu.Unlock()
		if err := setFinalizationLock(b.opts.RunDir, false); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	return nil
}

// Rollback makes the rollback deployment the default (or, with no rollback
// but a pending deployment, the booted one again), as rpm-ostree's rollback
// transaction does; see writeBootOrder for how the boot order is rewritten.
func (b *Backend) Rollback(ctx context.Context, p Progress) error {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	st, err := b.read()
	if err != nil {
		return err
	}
	booted := st.booted()
	if booted == nil {
		return errors.New("Not currently booted into an OSTree system")
	}
	pending, rollback := st.pendingRollback(b.opts.OSName)
	if pending == nil && rollback == nil {
		return errors.New("No rollback deployment found")
	}
	if st.staged() != nil {
		return errors.New("Staged deployment (remove with cleanup -p)")
	}
	target := rollback
	if target == nil {
		target = booted
	}
	order := []deployment{*target}
	for _, d := range st.Deployments {
		if d.name() != target.name() || d.OSName != target.OSName {
			order = append(order, d)
		}
	}
	p.Message(fmt.Sprintf("Moving '%s.%d' to be first deployment", target.Checksum, target.Serial))
	b.diskMu.Lock()
	defer b.diskMu.Unlock()
	unlock, err := lockSysroot(b.opts.Sysroot)
	if err != nil {
		return err
	}
	defer unlock()
	if err := writeBootOrder(b.opts.Sysroot, st.BootVersion, order); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}
