package nodestatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"layerd.dev/layerd/pkg/reason"
)

// DefaultEventDedupWindow is how long an Event with the same type, reason and message is not sent
// again.
const DefaultEventDedupWindow = 10 * time.Minute

// Writer is the single writer of one Node's protocol. Each setter does one JSON merge patch of
// exactly the annotations it owns (null deletes); the state setters then write the
// OSImageUpToDate condition with a strategic merge patch of nodes/status (keyed by type, so
// other conditions are untouched; skipped when unchanged) and record an Event. Setters are
// serialized; a Writer is safe for concurrent use.
type Writer struct {
	client  kubernetes.Interface
	node    string
	clock   clock.PassiveClock
	log     *zap.Logger
	eventNS string
	window  time.Duration

	mu   sync.Mutex
	last *corev1.Node // the Node as returned by our last read or write
	sent map[eventKey]time.Time
}

// Option configures a Writer.
type Option func(*Writer)

// WithEventNamespace sets the namespace of the Node's Events. The API server accepts Events about
// a cluster-scoped object only in "default" (the default, as the kubelet does) or "kube-system".
func WithEventNamespace(ns string) Option { return func(w *Writer) { w.eventNS = ns } }

// WithEventDedupWindow sets how long an identical Event is suppressed (default
// DefaultEventDedupWindow; 0 disables deduplication).
func WithEventDedupWindow(d time.Duration) Option { return func(w *Writer) { w.window = d } }

// New returns the Writer of node nodeName. It does no I/O.
func New(client kubernetes.Interface, nodeName string, clk clock.PassiveClock, log *zap.Logger, opts ...Option) (*Writer, error) {
	switch {
	case client == nil:
		return nil, errors.New("nodestatus: nil kubernetes client")
	case nodeName == "":
		return nil, errors.New("nodestatus: empty node name")
	case clk == nil:
		return nil, errors.New("nodestatus: nil clock")
	case log == nil:
		return nil, errors.New("nodestatus: nil logger")
	}
	w := &Writer{
		client:  client,
		node:    nodeName,
		clock:   clk,
		log:     log.With(zap.String("node", nodeName)),
		eventNS: metav1.NamespaceDefault,
		window:  DefaultEventDedupWindow,
		sent:    map[eventKey]time.Time{},
	}
	for _, o := range opts {
		o(w)
	}
	if w.eventNS == "" {
		return nil, errors.New("nodestatus: empty event namespace")
	}
	if w.window < 0 {
		return nil, fmt.Errorf("nodestatus: negative event dedup window %s", w.window)
	}
	return w, nil
}

// SetWorking records state Working in phase (any phase but Staged, which SetStaged owns), clears
// reason, sets message; condition False with the phase as reason; a Normal Event.
func (w *Writer) SetWorking(ctx context.Context, phase Phase, message string) error {
	if !phase.Known() {
		return fmt.Errorf("setting Working: unknown phase %q", phase)
	}
	if phase == PhaseStaged {
		return errors.New("setting Working: phase Staged is written by SetStaged")
	}
	return w.transition(ctx, transition{state: StateWorking, phase: phase, message: message})
}

// SetStaged records state Working, phase Staged and the pinned reference of the staged
// deployment.
func (w *Writer) SetStaged(ctx context.Context, stagedImage, message string) error {
	if stagedImage == "" {
		return errors.New("setting Staged: empty staged image")
	}
	return w.transition(ctx, transition{state: StateWorking, phase: PhaseStaged, message: message,
		extra: map[string]*string{AnnotationStagedImage: &stagedImage}})
}

// SetDone records state Done on currentImage (the pinned booted reference; "" when the booted
// deployment is not from a container image, which deletes current-image), and deletes phase,
// reason, staged-image and reboot-boot-id; condition True UpToDate; a Normal Event.
func (w *Writer) SetDone(ctx context.Context, currentImage string) error {
	if currentImage == "" {
		return w.SetDoneOnRef(ctx, "")
	}
	return w.transition(ctx, transition{state: StateDone, message: "Running " + currentImage, extra: map[string]*string{
		AnnotationCurrentImage: &currentImage, AnnotationStagedImage: nil, AnnotationRebootBootID: nil}})
}

// SetDoneOnRef records state Done for a host booted from a plain ostree ref (no container
// image): current-image is deleted, and the message names ref (the origin refspec and commit,
// "" when unknown). A desired-image then moves the host to a container image like any update.
func (w *Writer) SetDoneOnRef(ctx context.Context, ref string) error {
	msg := "The booted deployment is not from a container image"
	if ref != "" {
		msg = "Booted from the ostree ref " + ref + ", not from a container image"
	}
	return w.transition(ctx, transition{state: StateDone, message: msg, extra: map[string]*string{
		AnnotationCurrentImage: nil, AnnotationStagedImage: nil, AnnotationRebootBootID: nil}})
}

// SetDegraded records state Degraded with code and message and deletes phase; condition False
// with code; a Warning Event.
func (w *Writer) SetDegraded(ctx context.Context, code reason.Code, message string) error {
	if code == "" {
		return errors.New("setting Degraded: empty reason code")
	}
	return w.transition(ctx, transition{state: StateDegraded, reason: code, message: message})
}

// Warn records a Warning Event only (annotations and condition are untouched).
func (w *Writer) Warn(ctx context.Context, code reason.Code, message string) error {
	if code == "" {
		return errors.New("warning: empty reason code")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.emit(ctx, corev1.EventTypeWarning, string(code), Truncate(message, MaxMessageBytes))
}

// ClearStaged deletes staged-image (the staged deployment was cleaned up).
func (w *Writer) ClearStaged(ctx context.Context) error {
	return w.annotate(ctx, "clearing staged-image", map[string]*string{AnnotationStagedImage: nil})
}

// SetCordonedBy records that the agent cordoned the node. Write it before cordoning, and only
// when the node was schedulable, so a cordon the agent did not make is never claimed.
func (w *Writer) SetCordonedBy(ctx context.Context) error {
	v := CordonedByLayerd
	return w.annotate(ctx, "setting cordoned-by", map[string]*string{AnnotationCordonedBy: &v})
}

// ClearCordonedBy deletes cordoned-by (after the agent lifted its cordon).
func (w *Writer) ClearCordonedBy(ctx context.Context) error {
	return w.annotate(ctx, "clearing cordoned-by", map[string]*string{AnnotationCordonedBy: nil})
}

// RecordRebootBootID records the boot ID of the running boot just before finalizing.
func (w *Writer) RecordRebootBootID(ctx context.Context, bootID string) error {
	if bootID == "" {
		return errors.New("recording reboot-boot-id: empty boot ID")
	}
	return w.annotate(ctx, "recording reboot-boot-id", map[string]*string{AnnotationRebootBootID: &bootID})
}

// Resolved is what desired-image resolved to when an update began.
type Resolved struct {
	// Image is the desired-image value that was resolved.
	Image string
	// Digest is the per-arch manifest digest that gets deployed.
	Digest string
	// IndexDigest is the index digest of a multi-arch image, "" otherwise.
	IndexDigest string
}

// SetDesiredDigest records desired-digest, desired-index-digest (deleted when empty) and
// resolved-image in one patch.
func (w *Writer) SetDesiredDigest(ctx context.Context, r Resolved) error {
	if r.Image == "" || r.Digest == "" {
		return fmt.Errorf("setting desired-digest: image %q and digest %q must both be set", r.Image, r.Digest)
	}
	var idx *string
	if r.IndexDigest != "" {
		idx = &r.IndexDigest
	}
	return w.annotate(ctx, "setting desired-digest", map[string]*string{
		AnnotationDesiredDigest: &r.Digest, AnnotationDesiredIndexDigest: idx, AnnotationResolvedImage: &r.Image})
}

// ClearDesiredDigest deletes desired-digest, desired-index-digest and resolved-image (the
// desired-image was removed and the update stopped).
func (w *Writer) ClearDesiredDigest(ctx context.Context) error {
	return w.annotate(ctx, "clearing desired-digest", map[string]*string{
		AnnotationDesiredDigest: nil, AnnotationDesiredIndexDigest: nil, AnnotationResolvedImage: nil})
}

// AckRetry records that the agent acted on the admin's retry value.
func (w *Writer) AckRetry(ctx context.Context, value string) error {
	if value == "" {
		return errors.New("acknowledging retry: empty value")
	}
	return w.annotate(ctx, "acknowledging retry", map[string]*string{AnnotationObservedRetry: &value})
}

// transition is one state change: the annotations, the condition and the Event it implies.
type transition struct {
	state   State
	phase   Phase       // "" deletes the phase
	reason  reason.Code // "" deletes the reason
	message string
	extra   map[string]*string
}

func (w *Writer) transition(ctx context.Context, t transition) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	what := fmt.Sprintf("setting %s", t.state)
	if t.phase != "" {
		what += "/" + string(t.phase)
	}
	prev, err := w.current(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	old := Read(prev)
	msg := Truncate(t.message, MaxMessageBytes)
	set := map[string]*string{
		AnnotationState:   ptr(string(t.state)),
		AnnotationPhase:   ptrOrNil(string(t.phase)),
		AnnotationReason:  ptrOrNil(string(t.reason)),
		AnnotationMessage: ptrOrNil(msg),
	}
	for k, v := range t.extra {
		set[k] = v
	}
	changed := old.State != t.state || old.Phase != t.phase || old.Reason != t.reason
	if changed {
		set[AnnotationLastTransition] = ptr(w.clock.Now().UTC().Format(time.RFC3339))
	}
	// The same patch mirrors state, phase and reason as labels, so `kubectl get nodes -L` and
	// label selectors show them (annotations cannot be columns or selectors).
	labels := map[string]*string{
		LabelState:  ptr(string(t.state)),
		LabelPhase:  ptrOrNil(string(t.phase)),
		LabelReason: ptrOrNil(string(t.reason)),
	}
	node, err := w.patchWithLabels(ctx, set, labels)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}

	cond, condReason, evType, evReason := corev1.ConditionFalse, string(t.phase), corev1.EventTypeNormal, string(t.phase)
	switch t.state {
	case StateDone:
		cond, condReason, evReason = corev1.ConditionTrue, ReasonUpToDate, ReasonUpToDate
	case StateDegraded:
		condReason, evType, evReason = string(t.reason), corev1.EventTypeWarning, string(t.reason)
	}
	if err := w.writeCondition(ctx, node, cond, condReason, msg); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	w.log.Info("node status", zap.String("state", string(t.state)), zap.String("phase", string(t.phase)),
		zap.String("reason", string(t.reason)), zap.String("message", msg), zap.Bool("transition", changed))
	// The annotations and the condition are the record; a lost Event is logged, not returned, so
	// the caller does not redo a transition that already happened.
	if err := w.emit(ctx, evType, evReason, msg); err != nil {
		w.log.Warn("recording event failed", zap.String("reason", evReason), zap.Error(err))
	}
	return nil
}

// annotate does one merge patch of keys that are not a state transition.
func (w *Writer) annotate(ctx context.Context, what string, set map[string]*string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.patch(ctx, set); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	w.log.Debug("node annotations", zap.String("change", what))
	return nil
}

// current returns the Node as last seen, reading it once when nothing was seen yet.
func (w *Writer) current(ctx context.Context) (*corev1.Node, error) {
	if w.last != nil {
		return w.last, nil
	}
	n, err := w.client.CoreV1().Nodes().Get(ctx, w.node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading node %s: %w", w.node, err)
	}
	w.last = n
	return n, nil
}

func (w *Writer) patch(ctx context.Context, set map[string]*string) (*corev1.Node, error) {
	return w.patchWithLabels(ctx, set, nil)
}

// patchWithLabels does one merge patch of annotations and labels (nil values delete).
func (w *Writer) patchWithLabels(ctx context.Context, set, labels map[string]*string) (*corev1.Node, error) {
	meta := map[string]any{"annotations": set}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	body, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return nil, fmt.Errorf("encoding annotation patch: %w", err)
	}
	n, err := w.client.CoreV1().Nodes().Patch(ctx, w.node, types.MergePatchType, body, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("patching annotations of node %s: %w", w.node, err)
	}
	w.last = n
	return n, nil
}

// writeCondition sets OSImageUpToDate unless node already carries exactly it. The transition
// time moves only when the status changes.
func (w *Writer) writeCondition(ctx context.Context, node *corev1.Node, status corev1.ConditionStatus, reason, message string) error {
	now := metav1.NewTime(w.clock.Now())
	transition := now
	if c := Condition(node); c != nil {
		if c.Status == status && c.Reason == reason && c.Message == message {
			return nil
		}
		if c.Status == status {
			transition = c.LastTransitionTime
		}
	}
	cond := corev1.NodeCondition{Type: ConditionOSImageUpToDate, Status: status, Reason: reason,
		Message: message, LastHeartbeatTime: now, LastTransitionTime: transition}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return fmt.Errorf("encoding condition patch: %w", err)
	}
	n, err := w.client.CoreV1().Nodes().Patch(ctx, w.node, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patching condition %s of node %s: %w", ConditionOSImageUpToDate, w.node, err)
	}
	w.last = n
	return nil
}

func ptr(s string) *string { return &s }

func ptrOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
