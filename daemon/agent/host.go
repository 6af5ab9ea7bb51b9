package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/rpmostree"
)

// stage checks the sysroot's free space against the image size, then stages the pinned
// reference locked for finalization, following the transaction's progress.
func (a *Agent) stage(ctx context.Context, log *zap.Logger, e daemon.Stage) error {
	if err := a.checkUpdaters(ctx, log); err != nil {
		return err
	}
	if e.Size > 0 {
		free, err := a.d.Disk.Free(ctx)
		if err != nil {
			return fmt.Errorf("reading the sysroot's free space: %w", err)
		}
		if need := StagingSpace(e.Size); free < need {
			return coded(reason.InsufficientDisk, fmt.Errorf("staging %s needs about %d bytes (%d compressed × %d), the sysroot has %d free",
				e.Pinned, need, e.Size, UnpackFactor, free))
		}
	}
	a.mu.Lock()
	a.stagedAt = 0
	a.mu.Unlock()
	log.Info("staging", zap.String("image", e.Pinned))
	res, err := a.d.Host.StageImage(ctx, e.Pinned, rpmostree.RebaseOptions{
		LockFinalization: e.LockFinalization, InitiatingCommandLine: a.cfg.Initiator, Progress: a.progress(log),
		RegisterDriver: a.driverName(),
	})
	if err != nil {
		return stageError("staging "+e.Pinned, err)
	}
	if res != nil && res.Deployment != nil {
		log.Info("staged", zap.String("image", e.Pinned), zap.Bool("transaction", res.Started),
			zap.String("deployment", res.Deployment.ID))
	}
	return nil
}

// progress logs a transaction's messages and counts downloaded bytes.
func (a *Agent) progress(log *zap.Logger) rpmostree.ProgressFunc {
	return func(ev rpmostree.Event) {
		switch ev := ev.(type) {
		case rpmostree.Message:
			log.Info("rpm-ostree: " + ev.Text)
		case rpmostree.DownloadProgress:
			a.mu.Lock()
			var delta uint64
			if ev.Bytes > a.stagedAt {
				delta, a.stagedAt = ev.Bytes-a.stagedAt, ev.Bytes
			}
			a.mu.Unlock()
			if delta > 0 {
				a.d.Metrics.AddStagingBytes(delta)
			}
		}
	}
}

// cancelTxn cancels a transaction this process does not follow: it attaches, and after
// CancelGrace ends the attachment, which makes the client send Cancel and await Finished.
func (a *Agent) cancelTxn(ctx context.Context, log *zap.Logger, e daemon.CancelTxn) error {
	log.Info("cancelling the running transaction", zap.String("txn", e.Path))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.d.Clock.After(a.cfg.CancelGrace):
			cancel()
		case <-cctx.Done():
		}
	}()
	err := a.d.Host.Attach(cctx, e.Path, nil)
	if err != nil && ctx.Err() == nil && cctx.Err() != nil {
		return nil // cancelled as asked; the next Step sees whether it ended
	}
	if err != nil {
		return fmt.Errorf("cancelling transaction %s: %w", e.Path, err)
	}
	return nil
}

// hostView is rpm-ostree's status as the state machine sees it.
func hostView(st *rpmostree.Status) daemon.HostView {
	var h daemon.HostView
	if st == nil {
		return h
	}
	if d := st.Booted; d != nil && d.IsContainer() {
		h.BootedDigest, h.BootedImage = imageOf(d)
	} else if d != nil {
		h.BootedRef = originOf(d)
	}
	if d := st.Staged; d != nil && d.IsContainer() {
		h.StagedDigest, h.StagedImage = imageOf(d)
	}
	h.ActiveTxn = st.ActiveTransactionPath
	return h
}

// imageOf is a container deployment's manifest digest and its pinned reference
// (registry/repo@sha256:…).
func imageOf(d *rpmostree.Deployment) (dig, pinned string) {
	dig = d.ContainerImageReferenceDigest
	if dig == "" {
		dig = rpmostree.DigestOf(d.ContainerImageReference)
	}
	ref, ok := rpmostree.ParseImageRefspec(d.ContainerImageReference)
	if !ok || dig == "" {
		return dig, ""
	}
	name := strings.TrimPrefix(ref.Image, "docker://")
	if i := strings.LastIndex(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return dig, name + "@" + dig
}

// originOf names a deployment that is not from a container image: its origin refspec and commit.
func originOf(d *rpmostree.Deployment) string {
	commit := d.BaseCommit()
	if len(commit) > 12 {
		commit = commit[:12]
	}
	switch {
	case d.Origin != "" && commit != "":
		return d.Origin + " (commit " + commit + ")"
	case d.Origin != "":
		return d.Origin
	case commit != "":
		return "commit " + commit
	}
	return ""
}

func digestValue(s string) digest.Digest { return digest.Digest(s) }

// restoreSlot finds the slot the node held before a restart and keeps renewing it.
func (a *Agent) restoreSlot(ctx context.Context) error {
	for {
		slot, ok, err := a.d.Slots.Held(ctx, a.cfg.NodeName)
		if err == nil {
			if ok {
				a.log.Info("holding a reboot slot from before the restart", zap.String("slot", slot.Name))
				a.keep(slot)
			}
			return nil
		}
		a.log.Warn("reading the reboot slots; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("reading the reboot slots: %w", err)
		case <-a.d.Clock.After(a.cfg.RetryInterval):
		}
	}
}

// keep records slot as held and renews it in the background until it is released or lost.
func (a *Agent) keep(slot coord.Slot) {
	a.stopKeeping()
	ctx, cancel := context.WithCancel(context.Background())
	a.mu.Lock()
	a.slot, a.stopKeep = &slot, cancel
	a.mu.Unlock()
	go func() {
		err := a.d.Slots.Keep(ctx, slot)
		if err == nil || ctx.Err() != nil {
			return
		}
		a.log.Warn("reboot slot lost", zap.String("slot", slot.Name), zap.Error(err))
		a.mu.Lock()
		if a.slot != nil && a.slot.Name == slot.Name {
			a.slot, a.stopKeep = nil, nil
		}
		a.mu.Unlock()
		cancel()
		a.poke()
	}()
}

func (a *Agent) stopKeeping() {
	a.mu.Lock()
	stop := a.stopKeep
	a.slot, a.stopKeep = nil, nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (a *Agent) slotHeld() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.slot != nil
}

// release gives the node's slot back (the one held in memory, else the one the Leases name).
func (a *Agent) release(ctx context.Context) error {
	a.mu.Lock()
	var slot coord.Slot
	held := a.slot != nil
	if held {
		slot = *a.slot
	}
	a.mu.Unlock()
	if !held {
		s, ok, err := a.d.Slots.Held(ctx, a.cfg.NodeName)
		if err != nil {
			return fmt.Errorf("finding the reboot slot to release: %w", err)
		}
		if !ok {
			return nil
		}
		slot = s
	}
	a.stopKeeping()
	if err := a.d.Slots.Release(ctx, slot); err != nil {
		a.keep(slot)
		return fmt.Errorf("releasing reboot slot %s: %w", slot.Name, err)
	}
	return nil
}

// StatfsDisk is the Disk of the filesystem holding Path (the sysroot).
type StatfsDisk struct{ Path string }

// Free implements Disk.
func (d StatfsDisk) Free(context.Context) (uint64, error) {
	if d.Path == "" {
		return 0, errors.New("no sysroot path")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.Path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", d.Path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
