// Package drain empties the agent's own Node before a reboot: cordon, evict every pod through
// the Eviction API (so PodDisruptionBudgets hold), wait for the pods to terminate within their
// grace periods, and report which pods and PDBs blocked a drain that ran out of time.
//
// The eviction itself is k8s.io/kubectl/pkg/drain (the code behind `kubectl drain`); this
// package chooses its options, never lets it fall back to plain DELETE, turns its results into
// typed errors and logs progress with zap.
//
// The layerd.dev/cordoned-by annotation is not written here: pkg/nodestatus is the Node's one
// writer. Cordon reports whether this call made the cordon, and the caller records it (see
// Cordon and docs/drain.md).
package drain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
	kdrain "k8s.io/kubectl/pkg/drain"
)

// Interface is what the update loop needs from a drainer.
type Interface interface {
	// Cordon marks the node unschedulable. cordonedByUs is false when it already was: that
	// cordon is someone else's and the caller must never lift it.
	Cordon(ctx context.Context) (cordonedByUs bool, err error)
	// Uncordon marks the node schedulable. Call it only for a cordon the agent made.
	Uncordon(ctx context.Context) error
	// Drain evicts the node's pods; *TimeoutError and *RefusedError are the typed failures.
	Drain(ctx context.Context) error
}

var _ Interface = (*Drainer)(nil)

// listChunk is the page size for listing the node's pods (kubectl drain's default).
const listChunk = 500

// reportTimeout bounds the API calls that build a TimeoutError after the drain's own deadline.
const reportTimeout = 10 * time.Second

// Drainer cordons and drains one Node.
type Drainer struct {
	client kubernetes.Interface
	node   string
	base   Options  // the constructor's options; a pool policy is laid over them
	opts   settings // what this Drain call uses
	policy PolicySource
	log    *zap.Logger
}

// Policy is the pool policy that applies to the node now: its pool and that pool's fields
// (coord.PoolPolicy.Raw), of which Drain reads drainTimeout and drain (see ApplyPolicy).
type Policy struct {
	Pool string
	Raw  map[string]json.RawMessage
}

// PolicySource reads the node's pool policy. It is called at the start of every Drain.
type PolicySource func(ctx context.Context) (Policy, error)

// Option configures a Drainer beyond its Options.
type Option func(*Drainer)

// WithPolicy makes every Drain read the node's pool policy from src first and lay its drain
// settings over the constructor's Options (Options.ApplyPolicy), so a changed policy applies
// to the next drain without a restart. An invalid policy fails that Drain with a *PolicyError
// before anything is evicted; an error from src is returned wrapped. Cordon and Uncordon do
// not read the policy.
func WithPolicy(src PolicySource) Option { return func(d *Drainer) { d.policy = src } }

// New returns a Drainer for node. It rejects a nil client or logger, an empty node name and
// invalid options.
func New(client kubernetes.Interface, node string, opts Options, log *zap.Logger, options ...Option) (*Drainer, error) {
	switch {
	case client == nil:
		return nil, errors.New("drain: nil Kubernetes client")
	case log == nil:
		return nil, errors.New("drain: nil logger")
	case node == "":
		return nil, errors.New("drain: empty node name")
	}
	s, err := opts.resolve()
	if err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	d := &Drainer{client: client, node: node, base: opts, opts: s, log: log.With(zap.String("node", node))}
	for _, o := range options {
		o(d)
	}
	return d, nil
}

// forPool returns the Drainer one Drain call uses: d itself without a policy source, else a
// copy with the pool's current drain settings laid over the constructor's Options.
func (d *Drainer) forPool(ctx context.Context) (*Drainer, error) {
	if d.policy == nil {
		return d, nil
	}
	p, err := d.policy(ctx)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("draining node %s: %w", d.node, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("draining node %s: reading its pool's drain settings: %w", d.node, err)
	}
	opts, err := d.base.ApplyPolicy(p.Raw)
	if err != nil {
		pe := &PolicyError{Node: d.node, Pool: p.Pool, Err: err}
		d.log.Warn("drain refused, nothing evicted", zap.String("pool", p.Pool), zap.Error(pe))
		return nil, pe
	}
	s, err := opts.resolve()
	if err != nil { // ApplyPolicy validated opts: not reached
		return nil, &PolicyError{Node: d.node, Pool: p.Pool, Err: err}
	}
	run := *d
	run.opts = s
	run.log.Info("drain settings of the pool", zap.String("pool", p.Pool), zap.Duration("timeout", s.timeout),
		zap.Bool("ignoreDaemonSets", s.ignoreDaemonSets), zap.Bool("deleteEmptyDirData", s.deleteEmptyDirData),
		zap.Int("gracePeriodSeconds", s.gracePeriodSeconds), zap.Bool("force", s.force),
		zap.String("podSelector", s.podSelector), zap.Int("skipWaitForDeleteTimeoutSeconds", s.skipWaitSeconds))
	return &run, nil
}

// Drain evicts every pod on the node the options allow, through the Eviction API, and waits
// until they are gone. PDBs are honoured: an eviction a budget refuses (HTTP 429) is retried
// every EvictionRetryInterval until Timeout. Pods get their own grace period unless
// GracePeriodSeconds overrides it. DaemonSet pods and mirror pods are left alone (by default).
// With WithPolicy, the options are the constructor's with the pool's drain settings read now
// laid over them.
//
// Errors: *PolicyError when the pool's drain settings are invalid and *RefusedError when the
// node runs pods the options forbid evicting (in both cases nothing was evicted);
// *TimeoutError when Timeout or ctx's deadline passed first; ctx.Err() wrapped when ctx was
// cancelled; other errors wrapped with context. Drain is idempotent: calling it again
// continues where a timed-out drain stopped.
func (d *Drainer) Drain(ctx context.Context) error {
	run, err := d.forPool(ctx)
	if err != nil {
		return err
	}
	return run.drain(ctx)
}

// drain is Drain with d.opts settled.
func (d *Drainer) drain(ctx context.Context) error {
	began := d.opts.clock.Now()
	dctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()

	// kubectl falls back to DELETE when the server has no eviction subresource; that would
	// bypass every PDB, so refuse instead.
	gv, err := kdrain.CheckEvictionSupport(d.client)
	if err != nil {
		return fmt.Errorf("draining node %s: checking for the Eviction API: %w", d.node, err)
	}
	if gv.Empty() {
		return fmt.Errorf("draining node %s: the API server offers no pods/eviction subresource, and deleting pods would bypass their PodDisruptionBudgets", d.node)
	}

	h := d.helper(dctx)
	list, errs := h.GetPodsForDeletion(d.node)
	if len(errs) > 0 {
		return d.listFailed(ctx, dctx, list, errs, began)
	}
	if w := list.Warnings(); w != "" {
		d.log.Info("drain leaves or deletes some pods as configured", zap.String("detail", w))
	}
	pods := list.Pods()
	d.log.Info("draining node", zap.Int("pods", len(pods)), zap.Duration("timeout", d.opts.timeout))
	if len(pods) == 0 {
		return nil
	}
	err = h.DeleteOrEvictPods(pods)
	if err == nil {
		d.log.Info("node drained", zap.Int("pods", len(pods)), zap.Duration("took", d.opts.clock.Since(began)))
		return nil
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("draining node %s: %w", d.node, ctx.Err())
	}
	if dctx.Err() != nil {
		return d.timedOut(ctx, pods, began)
	}
	return fmt.Errorf("draining node %s: %w", d.node, err)
}

// listFailed turns GetPodsForDeletion's errors into a RefusedError, a TimeoutError or a wrapped
// error.
func (d *Drainer) listFailed(ctx, dctx context.Context, list *kdrain.PodDeleteList, errs []error, began time.Time) error {
	agg := utilerrors.NewAggregate(errs)
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("draining node %s: %w", d.node, ctx.Err())
	case dctx.Err() != nil:
		return d.timedOut(ctx, nil, began)
	case list == nil: // the LIST itself failed
		return fmt.Errorf("draining node %s: listing its pods: %w", d.node, agg)
	}
	refused, err := d.refusal(dctx)
	if err != nil {
		return fmt.Errorf("draining node %s: %w (while classifying: %w)", d.node, agg, err)
	}
	if refused == nil { // e.g. a DaemonSet lookup failed: not a policy refusal
		return fmt.Errorf("draining node %s: %w", d.node, agg)
	}
	d.log.Warn("drain refused, nothing evicted", zap.Error(refused), zap.NamedError("kubectl", agg))
	return refused
}

// timedOut builds the TimeoutError: which of pods are still there, which PDBs select them, and
// which unmanaged pods arrived meanwhile. Its API calls get a short deadline of their own.
func (d *Drainer) timedOut(ctx context.Context, pods []corev1.Pod, began time.Time) error {
	after := d.opts.timeout
	if ctx.Err() != nil { // the caller's deadline came first
		after = d.opts.clock.Since(began)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	e := &TimeoutError{Node: d.node, After: after}
	current, err := d.listNodePods(rctx)
	if err != nil {
		d.log.Warn("listing the pods left after the drain timeout; reporting every pod it was evicting", zap.Error(err))
		for _, p := range pods {
			e.Pods = append(e.Pods, PodRef{p.Namespace, p.Name})
		}
	} else {
		evicting := make(map[types.UID]bool, len(pods))
		for _, p := range pods {
			evicting[p.UID] = true
		}
		var left []corev1.Pod
		for _, p := range current {
			switch {
			case evicting[p.UID]:
				left = append(left, p)
				e.Pods = append(e.Pods, PodRef{p.Namespace, p.Name})
			case !d.opts.force && unmanaged(p):
				e.Unmanaged = append(e.Unmanaged, PodRef{p.Namespace, p.Name})
			}
		}
		e.PDBs = d.blockingPDBs(rctx, left)
	}
	sortRefs(e.Pods)
	sortRefs(e.Unmanaged)
	d.log.Warn("drain timed out", zap.Error(e), zap.Int("pods", len(e.Pods)), zap.Strings("pdbs", e.PDBs))
	return e
}

// helper returns kubectl's drain helper for one Drain call, logging through d.log.
func (d *Drainer) helper(ctx context.Context) *kdrain.Helper {
	var mu sync.Mutex
	started := map[types.UID]bool{}
	return &kdrain.Helper{
		Ctx:                             ctx,
		Client:                          d.client,
		Force:                           d.opts.force,
		GracePeriodSeconds:              d.opts.gracePeriodSeconds,
		IgnoreAllDaemonSets:             d.opts.ignoreDaemonSets,
		Timeout:                         d.opts.timeout,
		DeleteEmptyDirData:              d.opts.deleteEmptyDirData,
		PodSelector:                     d.opts.podSelector,
		ChunkSize:                       listChunk,
		SkipWaitForDeleteTimeoutSeconds: d.opts.skipWaitSeconds,
		EvictErrorRetryDelay:            d.opts.retryInterval,
		Out:                             newLineLogger(d.log, zap.DebugLevel),
		ErrOut:                          newLineLogger(d.log, zap.InfoLevel),
		// Called again before every retry of a refused eviction: log the first at Info.
		OnPodDeletionOrEvictionStarted: func(p *corev1.Pod, _ bool) {
			mu.Lock()
			first := !started[p.UID]
			started[p.UID] = true
			mu.Unlock()
			if first {
				d.log.Info("evicting pod", podField(p))
			} else {
				d.log.Debug("retrying eviction", podField(p))
			}
		},
		OnPodDeletionOrEvictionFinished: func(p *corev1.Pod, _ bool, err error) {
			if err != nil {
				d.log.Warn("waiting for an evicted pod to go failed", podField(p), zap.Error(err))
				return
			}
			d.log.Info("pod evicted and gone", podField(p))
		},
	}
}

func podField(p *corev1.Pod) zap.Field { return zap.String("pod", p.Namespace+"/"+p.Name) }
