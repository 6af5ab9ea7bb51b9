package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
)

// Run watches the Node and runs the update loop until ctx ends (nil) or the state machine
// reports a bug (an error: the restarted agent derives its state again).
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.d.Health.SetReady(false, "starting")

	nodes, err := a.watchNode(ctx)
	if err != nil {
		return err
	}
	if err := a.restoreSlot(ctx); err != nil {
		return err
	}
	defer a.stopKeeping()
	defer func() { cancel(); a.drift.Wait() }()
	a.startDrift(ctx)
	a.d.Health.SetReady(true, "")
	a.log.Info("agent started; watching the node")
	return a.loop(ctx, nodes)
}

// watchNode starts an informer on the agent's own Node (field selector on metadata.name: one
// LIST at start and after a watch expires, no periodic LISTs) and waits for its first sync.
func (a *Agent) watchNode(ctx context.Context) (cache.Store, error) {
	sel := fields.OneTermEqualSelector("metadata.name", a.cfg.NodeName).String()
	nodes := a.d.Kube.CoreV1().Nodes()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return nodes.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return nodes.Watch(ctx, o)
		},
	}
	store, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		// The fake clientset of the unit tests cannot stream lists; the real one can.
		ListerWatcher: cache.ToListWatcherWithWatchListSemantics(lw, a.d.Kube),
		ObjectType:    &corev1.Node{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { a.poke() },
			UpdateFunc: func(old, cur any) {
				o, ok1 := old.(*corev1.Node)
				n, ok2 := cur.(*corev1.Node)
				if !ok1 || !ok2 || relevantChange(o, n) {
					a.poke()
				}
			},
			DeleteFunc: func(any) { a.poke() },
		},
	})
	go ctrl.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), ctrl.HasSynced) {
		return nil, fmt.Errorf("watching node %s: %w", a.cfg.NodeName, context.Cause(ctx))
	}
	return store, nil
}

// relevantChange reports whether a Node update can change a decision: the annotations and
// labels, the cordon, readiness and the boot ID (not the kubelet's heartbeats).
func relevantChange(o, n *corev1.Node) bool {
	if o.Spec.Unschedulable != n.Spec.Unschedulable || o.Status.NodeInfo.BootID != n.Status.NodeInfo.BootID {
		return true
	}
	if !equalMaps(o.Annotations, n.Annotations) || !equalMaps(o.Labels, n.Labels) {
		return true
	}
	or, _ := readiness(o)
	nr, _ := readiness(n)
	return or != nr
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// run is the execution of one Decision's Effects in the background.
type run struct {
	cancel context.CancelFunc
	done   chan daemon.Outcome
	mu     sync.Mutex
	cur    string // the effect running now
}

func (r *run) current() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// long are the effects a Node change may interrupt (Observed.InFlight).
var long = map[string]bool{"Resolve": true, "Verify": true, "Validate": true, "Stage": true, "AttachTxn": true, "Drain": true}

// loop is the update loop proper (see the package comment).
func (a *Agent) loop(ctx context.Context, nodes cache.Store) error {
	var (
		state   daemon.State
		last    daemon.Outcome
		running *run
		fresh   *corev1.Node // the Node as read right after the effects
		timer   <-chan time.Time
		stepNow = true
	)
	beat := a.d.Clock.NewTimer(a.cfg.HeartbeatInterval)
	defer beat.Stop()
	defer func() {
		if running != nil {
			running.cancel()
			<-running.done
		}
	}()
	for {
		if stepNow {
			stepNow = false
			a.d.Health.Beat(a.d.Clock.Now())
			node := newer(cachedNode(nodes, a.cfg.NodeName), fresh)
			switch {
			case node == nil:
				a.log.Warn("own Node not found; waiting for it")
			case running != nil:
				a.stepInFlight(state, node, running)
			default:
				obs, err := a.observe(ctx, node)
				if err != nil {
					a.log.Warn("observing the node failed; retrying", zap.Error(err), zap.Duration("after", a.cfg.RetryInterval))
					timer = a.d.Clock.After(a.cfg.RetryInterval)
					break
				}
				obs.Last, last = last, daemon.Outcome{}
				d := a.d.Machine.Step(state, obs)
				if d.Err != nil {
					return fmt.Errorf("update state machine in %s: %w", state.Phase, d.Err)
				}
				a.transition(state, d, obs)
				if state.Phase != "" && state.Phase != daemon.PhaseDone && d.Next.Phase == daemon.PhaseDone {
					a.startDrift(ctx) // an update ended: /etc is the new image's
				}
				state = d.Next
				if len(d.Effects) > 0 {
					running = a.start(ctx, state, d.Effects)
				}
				if d.RetryAfter > 0 {
					timer = a.d.Clock.After(d.RetryAfter)
				}
			}
		}
		var done chan daemon.Outcome
		if running != nil {
			done = running.done
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.kick:
			stepNow = true
		case <-timer:
			timer, stepNow = nil, true
		case out := <-done:
			last, running, stepNow = out, nil, true
			fresh = a.getNode(ctx)
		case <-beat.C():
			a.d.Health.Beat(a.d.Clock.Now())
			beat.Reset(a.cfg.HeartbeatInterval)
		}
	}
}

// stepInFlight steps while effects run: only an Interrupt of a long effect can come of it.
func (a *Agent) stepInFlight(state daemon.State, node *corev1.Node, r *run) {
	name := r.current()
	if !long[name] {
		return // a short effect: the loop steps again as soon as the effects end
	}
	obs := daemon.Observed{Now: a.d.Clock.Now(), Node: nodeView(node), InFlight: name}
	d := a.d.Machine.Step(state, obs)
	for _, e := range d.Effects {
		if _, ok := e.(daemon.Interrupt); ok {
			a.log.Info("interrupting the running effect: desired-image changed",
				zap.String("effect", name), zap.String("phase", string(state.Phase)))
			r.cancel()
		}
	}
}

// observe builds the Observed snapshot from node, rpm-ostree and the slot.
func (a *Agent) observe(ctx context.Context, node *corev1.Node) (daemon.Observed, error) {
	st, err := a.d.Host.Status(ctx)
	if err != nil {
		return daemon.Observed{}, fmt.Errorf("reading rpm-ostree status: %w", err)
	}
	h := hostView(st)
	h.EtcBackups = a.etcBackups(st)
	a.d.Metrics.SetInfo(h.BootedDigest, h.StagedDigest)
	obs := daemon.Observed{Now: a.d.Clock.Now(), Node: nodeView(node), Host: h, SlotHeld: a.slotHeld()}
	obs.Host.PreviousBootError = a.previousBootError(ctx, obs)
	if st := obs.Node.Status.State; st == nodestatus.StateWorking || st == nodestatus.StateDegraded {
		// The policy decides in Staged, Rebooting and Confirming: read while an update runs or
		// may resume.
		// An unreadable layerd-config must not freeze the update (end states, Confirming):
		// the last policy read stands, and the problem is logged and shown.
		obs.Policy = a.policy(ctx, node)
	}
	return obs, nil
}

// transition logs a change of phase and keeps the phase metrics.
func (a *Agent) transition(from daemon.State, d daemon.Decision, obs daemon.Observed) {
	to := d.Next
	st := obs.Node.Status
	a.d.Metrics.SetState(stateOf(to.Phase, st.State))
	if to.Phase.Working() {
		since := obs.Now
		if string(st.Phase) == string(to.Phase) && !st.LastTransition.IsZero() {
			since = st.LastTransition // the Node's record survives a restart of the agent
		}
		a.d.Metrics.SetPhase(nodestatus.Phase(to.Phase), since)
	} else {
		a.d.Metrics.SetPhase("", obs.Now)
	}
	if from.Phase == to.Phase {
		return
	}
	if from.Phase.Working() && !st.LastTransition.IsZero() {
		a.d.Metrics.ObservePhaseDuration(nodestatus.Phase(from.Phase), obs.Now.Sub(st.LastTransition))
	}
	if err := a.d.Notifier.Status(statusLine(to)); err != nil {
		a.log.Debug("sd_notify STATUS", zap.Error(err))
	}
	a.log.Info("phase "+string(to.Phase), zap.String("phase", string(to.Phase)), zap.String("from", string(from.Phase)),
		zap.String("image", to.Target.Image), zap.String("digest", to.Target.Digest), zap.String("reason", string(to.Reason)))
}

// statusLine is the one-line STATUS= systemd shows for the agent.
func statusLine(s daemon.State) string {
	line := string(s.Phase)
	if s.Target.Image != "" {
		line += " " + s.Target.Image
	}
	if s.Reason != "" {
		line += " (" + string(s.Reason) + ")"
	}
	return line
}

func stateOf(p daemon.Phase, reported nodestatus.State) nodestatus.State {
	switch {
	case p.Working():
		return nodestatus.StateWorking
	case p == daemon.PhaseDegraded:
		return nodestatus.StateDegraded
	case p == daemon.PhaseDone || p == daemon.PhaseIdle:
		return nodestatus.StateDone
	}
	return reported
}

// getNode reads the Node directly (a GET), so the Step after the effects sees their writes
// even before the watch delivers them. A failure leaves the informer's copy in use.
func (a *Agent) getNode(ctx context.Context) *corev1.Node {
	n, err := a.d.Kube.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		if !apierrors.IsNotFound(err) && !errors.Is(err, context.Canceled) {
			a.log.Warn("reading the node after the effects", zap.Error(err))
		}
		return nil
	}
	return n
}

func cachedNode(store cache.Store, name string) *corev1.Node {
	obj, ok, err := store.GetByKey(name)
	if err != nil || !ok {
		return nil
	}
	n, _ := obj.(*corev1.Node)
	return n
}

// newer returns the more recent of two copies of the Node by resourceVersion (etcd revisions,
// compared as numbers; the informer's copy when they cannot be compared).
func newer(cached, fresh *corev1.Node) *corev1.Node {
	if cached == nil || fresh == nil {
		if cached != nil {
			return cached
		}
		return fresh
	}
	c, err1 := strconv.ParseUint(cached.ResourceVersion, 10, 64)
	f, err2 := strconv.ParseUint(fresh.ResourceVersion, 10, 64)
	if err1 == nil && err2 == nil && f > c {
		return fresh
	}
	return cached
}

// nodeView is the Node as the state machine sees it.
func nodeView(n *corev1.Node) daemon.NodeView {
	ready, since := readiness(n)
	return daemon.NodeView{
		Status: nodestatus.Read(n), Ready: ready, ReadySince: since,
		Unschedulable: n.Spec.Unschedulable, BootID: n.Status.NodeInfo.BootID,
	}
}

func readiness(n *corev1.Node) (bool, time.Time) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}
