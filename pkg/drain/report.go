package drain

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// listNodePods lists the pods bound to the node that match PodSelector, page by page.
func (d *Drainer) listNodePods(ctx context.Context) ([]corev1.Pod, error) {
	opts := metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", d.node).String(),
		LabelSelector: d.opts.podSelector,
		Limit:         listChunk,
	}
	var pods []corev1.Pod
	for {
		page, err := d.client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing pods on node %s: %w", d.node, err)
		}
		pods = append(pods, page.Items...)
		if page.Continue == "" {
			return pods, nil
		}
		opts.Continue = page.Continue
	}
}

// refusal classifies the node's running pods against the options the way kubectl's filters
// do, for the report. It returns nil when no pod is refused by policy (kubectl's error was
// something else, such as a failed DaemonSet lookup).
func (d *Drainer) refusal(ctx context.Context) (*RefusedError, error) {
	pods, err := d.listNodePods(ctx)
	if err != nil {
		return nil, err
	}
	e := &RefusedError{Node: d.node}
	for _, p := range pods {
		if finished(p) || mirror(p) {
			continue
		}
		ref := PodRef{p.Namespace, p.Name}
		if daemonSetPod(p) {
			if !d.opts.ignoreDaemonSets {
				e.DaemonSet = append(e.DaemonSet, ref)
			}
			continue // ignored DaemonSet pods are never evicted, emptyDir or not
		}
		if !d.opts.deleteEmptyDirData && hasEmptyDir(p) {
			e.LocalStorage = append(e.LocalStorage, ref)
		}
		if !d.opts.force && metav1.GetControllerOf(&p) == nil {
			e.Unmanaged = append(e.Unmanaged, ref)
		}
	}
	if len(e.DaemonSet)+len(e.LocalStorage)+len(e.Unmanaged) == 0 {
		return nil, nil
	}
	sortRefs(e.DaemonSet)
	sortRefs(e.LocalStorage)
	sortRefs(e.Unmanaged)
	return e, nil
}

// blockingPDBs returns namespace/name of every PodDisruptionBudget whose selector matches one
// of pods, sorted. A namespace whose PDBs cannot be listed is logged and skipped: the report
// still names the pods.
func (d *Drainer) blockingPDBs(ctx context.Context, pods []corev1.Pod) []string {
	byNS := map[string][]corev1.Pod{}
	for _, p := range pods {
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}
	var out []string
	for ns, nsPods := range byNS {
		list, err := d.client.PolicyV1().PodDisruptionBudgets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			d.log.Warn("listing PodDisruptionBudgets for the drain report", zap.String("namespace", ns), zap.Error(err))
			continue
		}
		for _, pdb := range list.Items {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil {
				continue // the API server validates selectors; nothing to match
			}
			for _, p := range nsPods {
				if sel.Matches(labels.Set(p.Labels)) {
					out = append(out, ns+"/"+pdb.Name)
					break
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func finished(p corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func mirror(p corev1.Pod) bool {
	_, ok := p.Annotations[corev1.MirrorPodAnnotationKey]
	return ok
}

// daemonSetPod mirrors kubectl's test: the controller is an apps/v1 DaemonSet.
func daemonSetPod(p corev1.Pod) bool {
	ref := metav1.GetControllerOf(&p)
	return ref != nil && ref.Kind == "DaemonSet" && ref.APIVersion == "apps/v1"
}

func hasEmptyDir(p corev1.Pod) bool {
	return slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.EmptyDir != nil })
}

// unmanaged reports a running pod without a controller that is not already going away.
func unmanaged(p corev1.Pod) bool {
	return !finished(p) && !mirror(p) && p.DeletionTimestamp == nil && metav1.GetControllerOf(&p) == nil
}

func sortRefs(refs []PodRef) {
	slices.SortFunc(refs, func(a, b PodRef) int { return strings.Compare(a.String(), b.String()) })
}

// lineLogger turns kubectl's progress text into log entries, one per line. A line seen before
// (kubectl repeats "error when evicting ... will retry" on every retry) drops to Debug.
type lineLogger struct {
	log   *zap.Logger
	level zapcore.Level

	mu   sync.Mutex
	buf  []byte
	seen map[string]bool
}

func newLineLogger(log *zap.Logger, level zapcore.Level) *lineLogger {
	return &lineLogger{log: log, level: level, seen: map[string]bool{}}
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line := strings.TrimSpace(string(w.buf[:i])); line != "" {
			level := w.level
			if w.seen[line] {
				level = zapcore.DebugLevel
			}
			w.seen[line] = true
			w.log.Log(level, "kubectl drain", zap.String("detail", line))
		}
		w.buf = w.buf[i+1:]
	}
}
