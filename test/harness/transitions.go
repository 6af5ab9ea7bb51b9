package harness

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/nodestatus"
)

// Transition is a change of one Node's layerd state, phase or reason as the watch saw it.
type Transition struct {
	Node   string
	At     time.Time
	Status nodestatus.Status
	// Baseline marks what the first list found, before any change was watched.
	Baseline bool
}

// Label is the phase while Working, else the state (Done, Degraded).
func (tr Transition) Label() string {
	if tr.Status.State == nodestatus.StateWorking {
		return string(tr.Status.Phase)
	}
	return string(tr.Status.State)
}

// TransitionWatcher lists and watches every Node and records, per node, each distinct
// state/phase/reason it passes through, and every moment two nodes were disruptive (Working
// in Draining or Rebooting) together. A dropped watch is listed and watched again after a
// short pause, so no transition is lost for long.
type TransitionWatcher struct {
	kube   kubernetes.Interface
	notify func(Transition)
	stop   context.CancelFunc
	done   chan struct{}
	ready  chan struct{}

	mu       sync.Mutex
	t0       time.Time
	last     map[string]string
	seen     map[string][]Transition
	disrupt  map[string]bool
	overlap  []string
	baseline bool
}

// rewatchPause spaces a failed list or watch from the next attempt.
const rewatchPause = 200 * time.Millisecond

// WatchTransitions starts a TransitionWatcher on the world's Nodes and returns once the first
// list is recorded (as Baseline transitions). notify, when not nil, is called for every later
// transition, one at a time, in the order seen. Stop ends it.
func (w *World) WatchTransitions(ctx context.Context, notify func(Transition)) (*TransitionWatcher, error) {
	return WatchTransitions(ctx, w.Kube.Client, notify)
}

// WatchTransitions is World.WatchTransitions for any client.
func WatchTransitions(ctx context.Context, kube kubernetes.Interface, notify func(Transition)) (*TransitionWatcher, error) {
	wctx, cancel := context.WithCancel(ctx)
	tw := &TransitionWatcher{kube: kube, notify: notify, stop: cancel, done: make(chan struct{}), ready: make(chan struct{}),
		t0: time.Now(), last: map[string]string{}, seen: map[string][]Transition{}, disrupt: map[string]bool{}, baseline: true}
	go tw.run(wctx)
	select {
	case <-tw.ready:
		return tw, nil
	case <-time.After(30 * time.Second):
		tw.Stop()
		return nil, errors.New("watching the Nodes: the first list did not succeed within 30s")
	case <-ctx.Done():
		tw.Stop()
		return nil, fmt.Errorf("watching the Nodes: %w", ctx.Err())
	}
}

// Stop ends the watch and waits for it.
func (tw *TransitionWatcher) Stop() {
	tw.stop()
	<-tw.done
}

func (tw *TransitionWatcher) run(ctx context.Context) {
	defer close(tw.done)
	first := true
	for ctx.Err() == nil {
		list, err := tw.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			pause(ctx)
			continue
		}
		for i := range list.Items {
			tw.note(&list.Items[i])
		}
		if first {
			first = false
			tw.mu.Lock()
			tw.baseline = false
			tw.mu.Unlock()
			close(tw.ready)
		}
		wi, err := tw.kube.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			pause(ctx)
			continue
		}
		for ev := range wi.ResultChan() {
			if ev.Type == watch.Error {
				break
			}
			if n, ok := ev.Object.(*corev1.Node); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				tw.note(n)
			}
		}
		wi.Stop()
		pause(ctx)
	}
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(rewatchPause):
	}
}

func (tw *TransitionWatcher) note(n *corev1.Node) {
	s := nodestatus.Read(n)
	key := fmt.Sprintf("%s/%s/%s", s.State, s.Phase, s.Reason)
	tw.mu.Lock()
	if tw.last[n.Name] == key {
		tw.mu.Unlock()
		return
	}
	tr := Transition{Node: n.Name, At: time.Now(), Status: s, Baseline: tw.baseline}
	tw.last[n.Name] = key
	tw.seen[n.Name] = append(tw.seen[n.Name], tr)
	tw.disrupt[n.Name] = s.State == nodestatus.StateWorking && (s.Phase == nodestatus.PhaseDraining || s.Phase == nodestatus.PhaseRebooting)
	var together []string
	for name, d := range tw.disrupt {
		if d {
			together = append(together, name)
		}
	}
	if len(together) > 1 {
		sort.Strings(together)
		tw.overlap = append(tw.overlap, fmt.Sprintf("%s at +%.1fs", strings.Join(together, " and "), tr.At.Sub(tw.t0).Seconds()))
	}
	tw.mu.Unlock()
	if tw.notify != nil && !tr.Baseline { // only the watch goroutine calls note: in order
		tw.notify(tr)
	}
}

// Of is what the watch saw of node, the baseline first.
func (tw *TransitionWatcher) Of(node string) []Transition {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return append([]Transition(nil), tw.seen[node]...)
}

// Statuses is Of's statuses.
func (tw *TransitionWatcher) Statuses(node string) []nodestatus.Status {
	var out []nodestatus.Status
	for _, tr := range tw.Of(node) {
		out = append(out, tr.Status)
	}
	return out
}

// Overlaps are the moments two or more nodes were Draining or Rebooting together, e.g.
// "node-1 and node-2 at +12.3s" (from the watch start).
func (tw *TransitionWatcher) Overlaps() []string {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return append([]string(nil), tw.overlap...)
}
