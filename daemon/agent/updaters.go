package agent

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/pkg/updaters"
)

// UnpackFactor is how much sysroot space staging is assumed to take per byte of compressed
// image: rpm-ostree unpacks the layers into the ostree repository (files stored uncompressed)
// and deploys a checkout of hardlinks; OS trees compress about 2.5:1 with gzip.
const UnpackFactor = 3

// StagingSpace is the free sysroot space the free-space check asks for an image of compressed
// size bytes.
func StagingSpace(compressed int64) uint64 { return uint64(compressed) * UnpackFactor }

// driverName is the update-driver name Stage registers with rpm-ostree ("" when off).
func (a *Agent) driverName() string {
	if !a.cfg.RegisterDriver {
		return ""
	}
	return updaters.Self
}

// checkUpdaters refuses to stage (ConflictingUpdater) while another updater owns the host and
// the pool policy does not allow it (docs/updaters.md). A source that cannot be checked (no
// systemd on the bus) is logged, not a conflict; a failed check is an error the loop retries.
func (a *Agent) checkUpdaters(ctx context.Context, log *zap.Logger) error {
	node, err := a.d.Kube.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s for its pool: %w", a.cfg.NodeName, err)
	}
	cfg, err := a.d.Slots.Config(ctx)
	if err != nil {
		return fmt.Errorf("reading the pool policy: %w", err)
	}
	pool := nodestatus.PoolOf(node)
	pol, err := updaters.ParsePolicy(cfg.Pool(pool).Raw)
	if err != nil {
		return coded(reason.ConflictingUpdater, fmt.Errorf("pool %s: %w", pool, err))
	}
	rep, err := a.d.Updaters.Check(ctx, pol)
	if err != nil {
		return fmt.Errorf("checking for other updaters: %w", err)
	}
	for _, u := range rep.Unchecked {
		log.Info("other updaters: source not checked", zap.String("source", u.Source), zap.Error(u.Err))
	}
	for _, u := range rep.Allowed {
		log.Info("other updater allowed by the pool policy", zap.String("updater", u.String()), zap.String("pool", pool))
	}
	for _, u := range rep.Ignored {
		log.Debug("other updater ignored: it no longer runs", zap.String("updater", u.String()))
	}
	if len(rep.Conflicts) > 0 {
		return coded(reason.ConflictingUpdater, errors.New(rep.Message()))
	}
	return nil
}

// previousBootError reads the previous boot's finalize error from the journal when the node
// came back from the update's reboot on another image than desired-digest (the evidence for
// BootedWrongImage). It is read once per agent process: the previous boot does not change.
func (a *Agent) previousBootError(ctx context.Context, obs daemon.Observed) string {
	s := obs.Node.Status
	rebooted := s.RebootBootID != "" && obs.Node.BootID != "" && s.RebootBootID != obs.Node.BootID
	if !rebooted || (s.Phase != nodestatus.PhaseRebooting && s.Phase != nodestatus.PhaseConfirming) ||
		obs.Host.BootedDigest == s.DesiredDigest {
		return ""
	}
	a.mu.Lock()
	read, cached := a.finalizeRead, a.finalizeErr
	a.mu.Unlock()
	if read {
		return cached
	}
	msg, err := a.d.Finalize.PreviousBootFinalizeError(ctx) // journalctl: not under a.mu
	if err != nil {
		a.log.Warn("reading the previous boot's finalization from the journal", zap.Error(err))
		return ""
	}
	a.mu.Lock()
	a.finalizeRead, a.finalizeErr = true, msg
	a.mu.Unlock()
	if msg != "" {
		a.log.Warn("the previous boot's finalization failed", zap.String("error", msg))
	}
	return msg
}
