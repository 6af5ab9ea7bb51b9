package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/systemd"
)

// start executes effects in order in the background, stopping at the first that does not
// succeed; the run's done channel receives the Outcome of the last effect executed.
func (a *Agent) start(ctx context.Context, st daemon.State, effects []daemon.Effect) *run {
	rctx, cancel := context.WithCancel(ctx)
	r := &run{cancel: cancel, done: make(chan daemon.Outcome, 1)}
	log := a.log.With(zap.String("phase", string(st.Phase)), zap.String("image", st.Target.Image),
		zap.String("digest", st.Target.Digest))
	go func() {
		defer cancel()
		var out daemon.Outcome
		for _, e := range effects {
			r.mu.Lock()
			r.cur = e.Name()
			r.mu.Unlock()
			out = a.execute(rctx, log, e)
			if out.Err != "" || out.Busy {
				break
			}
		}
		r.mu.Lock()
		r.cur = ""
		r.mu.Unlock()
		r.done <- out
	}()
	return r
}

// execute runs one effect against its owner and returns its Outcome.
func (a *Agent) execute(ctx context.Context, log *zap.Logger, e daemon.Effect) daemon.Outcome {
	log = log.With(zap.String("effect", e.Name()))
	log.Debug("effect")
	var out daemon.Outcome
	switch e := e.(type) {
	case daemon.Resolve:
		out = a.resolve(ctx, e)
	case daemon.Validate:
		out = a.validate(ctx, e)
	case daemon.AcquireSlot:
		out = a.acquire(ctx, e)
	case daemon.PreviewHost:
		out = a.previewHost(ctx, log, e)
	case daemon.CreateMissingVar:
		out = a.createMissingVar(ctx, log, e)
	default:
		out = daemon.OutcomeOf(e, a.do(ctx, log, e))
	}
	switch {
	case out.Interrupted:
		log.Info("effect interrupted", zap.String("error", out.Err))
	case out.Err != "":
		log.Warn("effect failed", zap.String("error", out.Err), zap.String("reason", string(out.Code)))
	}
	return out
}

// do runs the effects whose Outcome carries nothing but success or failure.
func (a *Agent) do(ctx context.Context, log *zap.Logger, e daemon.Effect) error {
	w := a.d.Status
	switch e := e.(type) {
	case daemon.Verify:
		return a.verify(ctx, e)
	case daemon.Stage:
		return a.stage(ctx, log, e)
	case daemon.AttachTxn:
		log.Info("re-attaching to the running transaction", zap.String("txn", e.Path))
		if err := a.d.Host.Attach(ctx, e.Path, a.progress(log)); err != nil {
			return stageError("following transaction "+e.Path, err)
		}
		return nil
	case daemon.CancelTxn:
		return a.cancelTxn(ctx, log, e)
	case daemon.Interrupt:
		return nil // the loop cancels the effect in flight
	case daemon.CleanupPending:
		if err := a.d.Host.Cleanup(ctx, []string{rpmostree.CleanupPendingDeploy}, rpmostree.CleanupOptions{}); err != nil {
			return fmt.Errorf("cleaning up the staged deployment: %w", err)
		}
		return nil
	case daemon.ClearStaged:
		return w.ClearStaged(ctx)
	case daemon.RecordDigest:
		return w.SetDesiredDigest(ctx, nodestatus.Resolved{Image: e.Target.Image, Digest: e.Target.Digest, IndexDigest: e.Target.IndexDigest})
	case daemon.ClearDigest:
		return w.ClearDesiredDigest(ctx)
	case daemon.AckRetry:
		return w.AckRetry(ctx, e.Value)
	case daemon.ReleaseSlot:
		return a.release(ctx)
	case daemon.Cordon:
		return a.cordon(ctx)
	case daemon.Uncordon:
		if err := a.d.Drainer.Uncordon(ctx); err != nil {
			return fmt.Errorf("uncordoning: %w", err)
		}
		return w.ClearCordonedBy(ctx)
	case daemon.Drain:
		if err := a.d.Drainer.Drain(ctx); err != nil {
			return drainError(err)
		}
		return nil
	case daemon.CheckInhibitors:
		return a.checkInhibitors(ctx, log)
	case daemon.RecordBootID:
		return w.RecordRebootBootID(ctx, e.BootID)
	case daemon.Finalize:
		return a.finalize(ctx, log, e)
	case daemon.Report:
		return a.report(ctx, e)
	case daemon.ApplyEtcPolicy:
		return a.applyEtcPolicy(ctx, log, e)
	case daemon.RestoreEtc:
		return a.restoreEtc(ctx, log, e)
	case daemon.Warn:
		a.d.Metrics.Error(e.Code)
		return w.Warn(ctx, e.Code, e.Message)
	}
	return fmt.Errorf("unknown effect %s", e.Name())
}

func (a *Agent) resolve(ctx context.Context, e daemon.Resolve) daemon.Outcome {
	r, err := a.d.Images.Resolve(ctx, e.Ref())
	out := daemon.OutcomeOf(e, err)
	if err != nil {
		return out
	}
	a.mu.Lock()
	a.resolved[r.Pinned] = r
	a.mu.Unlock()
	out.Target = &daemon.Target{Image: e.Image, Repo: r.Repo, Pinned: r.Pinned,
		Digest: r.ManifestDigest.String(), IndexDigest: r.IndexDigest.String()}
	return out
}

// resolvedFor is what Resolve returned for t, or t rebuilt when this process did not resolve it.
func (a *Agent) resolvedFor(t daemon.Target) *image.Resolved {
	a.mu.Lock()
	r := a.resolved[t.Pinned]
	a.mu.Unlock()
	if r != nil {
		return r
	}
	rb := &image.Resolved{Input: t.Image, Name: t.Image, Repo: t.Repo, Pinned: t.Pinned}
	rb.ManifestDigest = digestValue(t.Digest)
	rb.IndexDigest = digestValue(t.IndexDigest)
	return rb
}

func (a *Agent) verify(ctx context.Context, e daemon.Verify) error {
	v, err := a.d.Images.Verify(ctx, a.resolvedFor(e.Target))
	if err != nil {
		return err
	}
	if v == nil || !v.Accepted {
		return coded(reason.SignatureRejected, fmt.Errorf("the signature policy rejects %s", e.Target.Pinned))
	}
	return nil
}

func (a *Agent) validate(ctx context.Context, e daemon.Validate) daemon.Outcome {
	info, err := a.d.Images.Validate(ctx, a.resolvedFor(e.Target))
	out := daemon.OutcomeOf(e, err)
	if err == nil && info != nil {
		out.Size = info.Size
	}
	return out
}

func (a *Agent) acquire(ctx context.Context, e daemon.AcquireSlot) daemon.Outcome {
	gate, err := a.slotGate(ctx, e)
	if err != nil {
		return daemon.OutcomeOf(e, err)
	}
	if gate != "" {
		return daemon.Outcome{Effect: e.Name(), Busy: true, Gate: gate}
	}
	slot, err := a.d.Slots.Acquire(ctx, a.cfg.NodeName, e.Pool)
	var busy *coord.BusyError
	if errors.As(err, &busy) {
		return daemon.Outcome{Effect: e.Name(), Busy: true, Holders: append([]string(nil), busy.Holders...)}
	}
	if err != nil {
		return daemon.OutcomeOf(e, fmt.Errorf("acquiring a reboot slot of pool %s: %w", e.Pool, err))
	}
	a.keep(slot)
	return daemon.OutcomeOf(e, nil)
}

// slotGate says why the pool policy holds the node back from taking a slot ("" when it does
// not): the pool is paused, or its rebootPolicy is Manual and the Node does not carry
// layerd.dev/approve-reboot=<the update's digest>.
func (a *Agent) slotGate(ctx context.Context, e daemon.AcquireSlot) (string, error) {
	cfg, err := a.d.Slots.Config(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the pool policy: %w", err)
	}
	p := cfg.Pool(e.Pool)
	if p.Err != nil {
		return "the pool policy is not understood (" + p.Err.Error() + "); fix " + coord.ConfigMapName, nil
	}
	if p.Paused {
		return "the pool is paused (paused: true in " + coord.ConfigMapName + ")", nil
	}
	if p.RebootPolicy != coord.RebootManual {
		return "", nil
	}
	node, err := a.d.Kube.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading node %s for its reboot approval: %w", a.cfg.NodeName, err)
	}
	if nodestatus.Read(node).ApproveReboot == e.Digest {
		return "", nil
	}
	return "rebootPolicy is Manual: waiting for " + nodestatus.AnnotationApproveReboot + "=" + e.Digest, nil
}

// cordon records cordoned-by, then cordons; when someone else cordoned in between, the record is
// taken back so their cordon is never lifted by the agent.
func (a *Agent) cordon(ctx context.Context) error {
	if err := a.d.Status.SetCordonedBy(ctx); err != nil {
		return err
	}
	ours, err := a.d.Drainer.Cordon(ctx)
	if err != nil {
		return fmt.Errorf("cordoning: %w", err)
	}
	if !ours {
		return a.d.Status.ClearCordonedBy(ctx)
	}
	return nil
}

func (a *Agent) checkInhibitors(ctx context.Context, log *zap.Logger) error {
	list, err := a.d.Inhibitors.BlockingShutdown(ctx)
	if errors.Is(err, systemd.ErrNoLogind) {
		log.Warn("logind is not on the system bus; no inhibitor can block the reboot")
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing shutdown inhibitors: %w", err)
	}
	if len(list) == 0 {
		return nil
	}
	who := make([]string, 0, len(list))
	for _, in := range list {
		who = append(who, fmt.Sprintf("%s (%s)", in.Who, in.Why))
	}
	return coded(reason.RebootInhibited, fmt.Errorf("the reboot is blocked by inhibitors held by %s", strings.Join(who, ", ")))
}

func (a *Agent) finalize(ctx context.Context, log *zap.Logger, e daemon.Finalize) error {
	log.Info("finalizing the staged deployment; rpm-ostree reboots the node")
	err := a.d.Host.FinalizeDeployment(ctx, e.Digest, rpmostree.FinalizeOptions{InitiatingCommandLine: a.cfg.Initiator})
	var te *rpmostree.TxnError
	switch {
	case errors.As(err, &te):
		// rpm-ostree ran the transaction and it failed: the deployment stays staged.
		return coded(reason.FinalizeFailed, fmt.Errorf("finalizing %s: %w", e.Digest, err))
	case err != nil && !errors.Is(err, rpmostree.ErrRebootInitiated) && !errors.Is(err, rpmostree.ErrDaemonLost):
		return fmt.Errorf("finalizing %s: %w", e.Digest, err)
	}
	a.d.Metrics.Rebooted()
	return nil
}

func (a *Agent) report(ctx context.Context, e daemon.Report) error {
	w := a.d.Status
	switch {
	case e.State == nodestatus.StateDone && e.CurrentImage == "":
		return w.SetDoneOnRef(ctx, e.BootedRef)
	case e.State == nodestatus.StateDone:
		return w.SetDone(ctx, e.CurrentImage)
	case e.State == nodestatus.StateDegraded:
		a.d.Metrics.Error(e.Reason)
		return w.SetDegraded(ctx, e.Reason, e.Message)
	case e.Phase == nodestatus.PhaseStaged:
		return w.SetStaged(ctx, e.StagedImage, e.Message)
	}
	return w.SetWorking(ctx, e.Phase, e.Message)
}

// drainError gives the drain's typed failures their reason code.
func drainError(err error) error {
	var te *drain.TimeoutError
	var re *drain.RefusedError
	if errors.As(err, &te) || errors.As(err, &re) {
		return coded(reason.DrainTimeout, err)
	}
	return fmt.Errorf("draining: %w", err)
}

// stageError gives a failed rpm-ostree transaction the StageFailed code; other errors (the bus,
// a busy daemon) stay infrastructure errors, retried in place.
func stageError(what string, err error) error {
	var te *rpmostree.TxnError
	if errors.As(err, &te) {
		return coded(reason.StageFailed, fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// codedError is an error carrying a reason code (reason.Coded).
type codedError struct {
	code reason.Code
	err  error
}

func coded(c reason.Code, err error) error    { return &codedError{code: c, err: err} }
func (e *codedError) Error() string           { return e.err.Error() }
func (e *codedError) Unwrap() error           { return e.err }
func (e *codedError) ReasonCode() reason.Code { return e.code }

var _ reason.Coded = (*codedError)(nil)
