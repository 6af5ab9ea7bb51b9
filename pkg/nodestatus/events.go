package nodestatus

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// EventSource is the component name on the agent's Events.
const EventSource = "layerd"

// ReportingController is the reportingComponent of the agent's Events.
const ReportingController = "layerd.dev/agent"

// Events are created directly (core/v1, synchronously) rather than through client-go's
// record.EventBroadcaster: the broadcaster queues and sends from a goroutine, so the Event of the
// last transition before a reboot (or a SIGKILL) can be lost, a failure is invisible to the caller,
// and its correlator aggregates with its own clock and rate limits. Here an Event is sent, or its
// error logged, before the setter returns, every API write is countable, and deduplication (same
// type, reason and message within the window, measured on the injected clock) is explicit. The
// window is per process: a restarted agent may repeat an Event once.

type eventKey struct{ typ, reason, message string }

// emit creates one Event unless the same one was sent within the window. w.mu is held.
func (w *Writer) emit(ctx context.Context, typ, reason, message string) error {
	now := w.clock.Now()
	key := eventKey{typ, reason, message}
	for k, at := range w.sent {
		if now.Sub(at) >= w.window {
			delete(w.sent, k)
		}
	}
	if _, dup := w.sent[key]; dup {
		w.log.Debug("event suppressed as a duplicate", zap.String("reason", reason))
		return nil
	}
	uid := types.UID(w.node) // the kubelet's convention; `kubectl describe node` finds both
	if w.last != nil && w.last.UID != "" {
		uid = w.last.UID
	}
	ts := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: eventName(w.node, now, key), Namespace: w.eventNS},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Node", APIVersion: "v1", Name: w.node, UID: uid,
		},
		Reason:              reason,
		Message:             message,
		Type:                typ,
		Source:              corev1.EventSource{Component: EventSource, Host: w.node},
		FirstTimestamp:      ts,
		LastTimestamp:       ts,
		Count:               1,
		ReportingController: ReportingController,
		ReportingInstance:   truncateBytes(w.node, 128),
	}
	if _, err := w.client.CoreV1().Events(w.eventNS).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating event %s on node %s: %w", reason, w.node, err)
	}
	if w.window > 0 {
		w.sent[key] = now
	}
	return nil
}

// eventName is unique per (time, event): node name, nanoseconds and a hash of the event.
func eventName(node string, now time.Time, k eventKey) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s\x00%s\x00%s", k.typ, k.reason, k.message)
	suffix := fmt.Sprintf(".%x.%08x", now.UnixNano(), h.Sum32())
	return truncateBytes(node, 253-len(suffix)) + suffix
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
