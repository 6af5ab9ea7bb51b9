package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/rpmostree"
)

// The hostfs effects (docs/hostfs.md): each finds the deployments it works on in rpm-ostree's
// status, so a restarted agent needs nothing remembered.

// previewHost previews /etc and /var of the staged deployment against the booted one, writes
// the host report and returns its summary. Any failure is HostPreviewFailed: a warning.
func (a *Agent) previewHost(ctx context.Context, log *zap.Logger, e daemon.PreviewHost) daemon.Outcome {
	out := daemon.Outcome{Effect: e.Name()}
	rep, err := a.preview(ctx, e.Digest)
	if err != nil {
		return daemon.OutcomeOf(e, coded(reason.HostPreviewFailed, err))
	}
	a.writeReport(log, rep)
	s := rep.Summary
	out.HostFS = &daemon.HostFSSummary{EtcConflicts: s.EtcConflicts, EtcConflictPaths: s.EtcConflictPaths,
		VarNotApplied: s.VarNotApplied, VarPaths: s.VarPaths, Limit: limitOf(rep)}
	log.Info("etc and var preview", zap.Int("etcConflicts", s.EtcConflicts), zap.Strings("etcConflictPaths", s.EtcConflictPaths),
		zap.Int("etcLocalEdits", s.EtcLocalEdits), zap.Int("varNotApplied", s.VarNotApplied), zap.Strings("varPaths", s.VarPaths),
		zap.Bool("truncated", s.Truncated), zap.String("report", a.cfg.ReportPath))
	return out
}

func (a *Agent) preview(ctx context.Context, digest string) (*hostfs.Report, error) {
	booted, staged, err := a.deployments(ctx, digest)
	if err != nil {
		return nil, err
	}
	etc, err := a.d.HostFS.PreviewEtc(ctx, booted, staged)
	if err != nil {
		return nil, err
	}
	vr, err := a.d.HostFS.PreviewVar(ctx, staged)
	if err != nil {
		return nil, err
	}
	return a.d.HostFS.NewReport(etc, vr, nil), nil
}

// applyEtcPolicy (ImageWins) previews /etc again, as it is right before finalize, and sets the
// conflicting local files aside so the merge takes the new defaults.
func (a *Agent) applyEtcPolicy(ctx context.Context, log *zap.Logger, e daemon.ApplyEtcPolicy) error {
	booted, staged, err := a.deployments(ctx, e.Digest)
	if errors.Is(err, errStatusRead) {
		return fmt.Errorf("etcPolicy ImageWins: %w", err) // D-Bus: retried in place
	}
	if err != nil {
		return coded(reason.EtcPolicyFailed, fmt.Errorf("etcPolicy ImageWins: %w", err))
	}
	rep, err := a.d.HostFS.PreviewEtc(ctx, booted, staged)
	if err != nil {
		return coded(reason.EtcPolicyFailed, fmt.Errorf("etcPolicy ImageWins: %w", err))
	}
	if rep.Truncated {
		return coded(reason.EtcPolicyFailed, fmt.Errorf("etcPolicy ImageWins: the /etc preview stopped at a limit (%s); nothing was set aside", rep.Limit))
	}
	b, err := a.d.HostFS.EtcBackupAndApply(ctx, rep, e.Digest)
	if err != nil {
		return coded(reason.EtcPolicyFailed, fmt.Errorf("etcPolicy ImageWins: %w", err))
	}
	log.Info("etcPolicy ImageWins: local /etc files set aside, the new defaults apply at the reboot",
		zap.Int("files", len(b.Files)), zap.String("backup", "/var/"+b.Dir))
	return nil
}

// restoreEtc puts the local /etc files of an ImageWins backup back.
func (a *Agent) restoreEtc(ctx context.Context, log *zap.Logger, e daemon.RestoreEtc) error {
	b, err := a.d.HostFS.RestoreEtc(ctx, e.Digest)
	if err != nil {
		return fmt.Errorf("putting the local /etc files set aside for %s back: %w", e.Digest, err)
	}
	log.Info("local /etc files put back: the update did not reach their digest", zap.String("digest", e.Digest),
		zap.Int("files", len(b.Files)), zap.Strings("keptEditedSince", b.Kept), zap.String("backup", "/var/"+b.Dir))
	return nil
}

// createMissingVar creates what the booted image ships under /var that the host lacks, and
// writes the host report with what it did.
func (a *Agent) createMissingVar(ctx context.Context, log *zap.Logger, e daemon.CreateMissingVar) daemon.Outcome {
	results, vr, err := a.createVar(ctx, e.Digest)
	if errors.Is(err, errStatusRead) {
		return daemon.OutcomeOf(e, err) // D-Bus: retried in place
	}
	if err != nil {
		return daemon.OutcomeOf(e, coded(reason.VarContentNotApplied, err))
	}
	a.writeReport(log, a.d.HostFS.NewReport(nil, vr, results))
	s := &daemon.HostFSSummary{Limit: vr.Limit}
	for _, r := range results {
		switch {
		case r.Action == hostfs.Created:
			s.VarCreated++
		case r.Action == hostfs.LeftUntouched, r.Action == hostfs.Failed,
			r.Action == hostfs.Skipped && r.Status == hostfs.VarMissing:
			s.VarNotApplied++
			if len(s.VarPaths) < hostfs.MaxSummaryPaths {
				s.VarPaths = append(s.VarPaths, r.Path)
			}
		}
	}
	log.Info("varPolicy CreateMissing", zap.Int("created", s.VarCreated), zap.Int("notApplied", s.VarNotApplied),
		zap.Strings("paths", s.VarPaths))
	return daemon.Outcome{Effect: e.Name(), HostFS: s}
}

func (a *Agent) createVar(ctx context.Context, digest string) ([]hostfs.VarResult, *hostfs.VarReport, error) {
	st, err := a.d.Host.Status(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errStatusRead, err)
	}
	if st.Booted == nil || digestOfDeployment(st.Booted) != digest {
		return nil, nil, fmt.Errorf("the booted deployment is not %s", digest)
	}
	vr, err := a.d.HostFS.PreviewVar(ctx, refOf(st.Booted))
	if err != nil {
		return nil, nil, err
	}
	results, err := a.d.HostFS.CreateMissingVar(ctx, vr)
	if err != nil {
		return nil, nil, err
	}
	return results, vr, nil
}

// deployments returns the booted deployment and the staged one, which must carry digest.
// errStatusRead marks a failed rpm-ostree Status call: an infrastructure error the loop retries
// in place, never a reason to degrade the node.
var errStatusRead = errors.New("reading rpm-ostree status")

func (a *Agent) deployments(ctx context.Context, digest string) (booted, staged hostfs.DeploymentRef, err error) {
	st, err := a.d.Host.Status(ctx)
	if err != nil {
		return booted, staged, fmt.Errorf("%w: %w", errStatusRead, err)
	}
	if st.Booted == nil {
		return booted, staged, errors.New("rpm-ostree reports no booted deployment")
	}
	if st.Staged == nil || digestOfDeployment(st.Staged) != digest {
		return booted, staged, fmt.Errorf("the staged deployment is not %s", digest)
	}
	return refOf(st.Booted), refOf(st.Staged), nil
}

func (a *Agent) writeReport(log *zap.Logger, rep *hostfs.Report) {
	if err := hostfs.WriteReport(a.cfg.ReportPath, rep); err != nil {
		log.Warn("writing the host report", zap.Error(err))
	}
}

// etcBackups are the digests of the ImageWins backups made from the booted deployment and not
// restored. Reading them never fails an observation: an error is logged and counts as none.
func (a *Agent) etcBackups(st *rpmostree.Status) []string {
	if st == nil || st.Booted == nil {
		return nil
	}
	all, err := a.d.HostFS.EtcBackups()
	if err != nil {
		a.log.Warn("listing the /etc backups of etcPolicy ImageWins", zap.Error(err))
		return nil
	}
	booted := refOf(st.Booted)
	var out []string
	for _, b := range all {
		if b.Booted == booted {
			out = append(out, b.Digest)
		}
	}
	return out
}

// policy reads the pool's etcPolicy and varPolicy. A value it does not know is logged and
// named in Policy.Problem; the default is used for it.
func (a *Agent) policy(ctx context.Context, node *corev1.Node) daemon.Policy {
	cfg, err := a.d.Slots.Config(ctx)
	if err != nil {
		a.mu.Lock()
		last := a.lastPolicy
		a.mu.Unlock()
		last.Problem = "the pool policy could not be read (" + err.Error() + "); the last one read is used"
		a.logProblem(nodestatus.PoolOf(node), last.Problem)
		return last
	}
	pool := nodestatus.PoolOf(node)
	p, perr := hostfs.PolicyFromRaw(cfg.Pool(pool).Raw)
	out := daemon.Policy{EtcImageWins: p.Etc == hostfs.EtcPolicyImageWins, VarCreateMissing: p.Var == hostfs.VarPolicyCreateMissing,
		SettleTime: cfg.Pool(pool).SettleTime}
	if perr != nil {
		out.Problem = strings.Join(strings.Split(perr.Error(), "\n"), "; ") + "; the default is used"
	}
	a.mu.Lock()
	a.lastPolicy = out
	a.mu.Unlock()
	a.logProblem(pool, out.Problem)
	return out
}

// logProblem logs a pool policy problem once, when it changes.
func (a *Agent) logProblem(pool, problem string) {
	a.mu.Lock()
	changed := problem != a.problem
	a.problem = problem
	a.mu.Unlock()
	if changed && problem != "" {
		a.log.Warn("pool policy of "+pool, zap.String("pool", pool), zap.String("problem", problem))
	}
}

// startDrift measures the /etc drift in the background (at start and after each update) unless
// a measurement is running; Run waits for it before returning.
func (a *Agent) startDrift(ctx context.Context) {
	a.driftMu.Lock()
	defer a.driftMu.Unlock()
	if a.drifting {
		return
	}
	a.drifting = true
	a.drift.Add(1)
	go func() {
		defer a.drift.Done()
		a.measureDrift(ctx)
		a.driftMu.Lock()
		a.drifting = false
		a.driftMu.Unlock()
	}()
}

// measureDrift sets layerd_etc_drift_files to the number of /etc paths that differ from the
// booted image's defaults. A failure is logged; it never degrades the node.
func (a *Agent) measureDrift(ctx context.Context) {
	st, err := a.d.Host.Status(ctx)
	if err != nil || st.Booted == nil {
		a.log.Warn("measuring the /etc drift: no booted deployment", zap.Error(err))
		return
	}
	rep, err := a.d.HostFS.EtcDrift(ctx, refOf(st.Booted))
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("measuring the /etc drift", zap.Error(err))
		}
		return
	}
	a.d.Metrics.SetEtcDriftFiles(len(rep.Entries))
	a.log.Info("/etc drift from the booted image's defaults", zap.Int("files", len(rep.Entries)),
		zap.Bool("truncated", rep.Truncated), zap.String("limit", rep.Limit))
}

func refOf(d *rpmostree.Deployment) hostfs.DeploymentRef {
	return hostfs.DeploymentRef{OSName: d.OSName, Checksum: d.Checksum, Serial: int(d.Serial)}
}

func digestOfDeployment(d *rpmostree.Deployment) string {
	dig, _ := imageOf(d)
	return dig
}

func limitOf(rep *hostfs.Report) string {
	for _, l := range []string{etcLimit(rep.Etc), varLimit(rep.Var)} {
		if l != "" {
			return l
		}
	}
	return ""
}

func etcLimit(r *hostfs.EtcReport) string {
	if r == nil {
		return ""
	}
	return r.Limit
}

func varLimit(r *hostfs.VarReport) string {
	if r == nil {
		return ""
	}
	return r.Limit
}
